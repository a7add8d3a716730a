"""Every place that lists generation settings follows the one table (teacli.settings.SETTINGS)."""

from __future__ import annotations

import dataclasses
import inspect

from teacli import limits
from teacli.batch.prepare import PromptsSpec
from teacli.batch.prompt_runs import PROMPT_OPTIONS
from teacli.batch.prompt_runs import SETTINGS as MANIFEST_FIELDS
from teacli.generation.generate import GenerationSpec
from teacli.generation.metadata import FIELDS
from teacli.generation.runner import PASSED_BY_RULE, PASSED_IF_TAKEN, GenerationRequest
from teacli.models.catalog import Defaults
from teacli.settings import (
    DEFAULT_SETTINGS,
    MANIFEST_SETTINGS,
    METADATA_SETTINGS,
    PIPELINE_CHECKED,
    PROMPT_SETTINGS,
    SETTINGS,
)

NAMES = [setting.name for setting in SETTINGS]


def field_names(cls) -> list[str]:
    return [field.name for field in dataclasses.fields(cls)]


def test_every_setting_is_a_request_field_and_a_spec_field():
    assert set(NAMES) <= set(field_names(GenerationRequest))
    assert set(NAMES) <= set(field_names(GenerationSpec))
    assert set(PROMPT_SETTINGS) | {"image"} <= set(field_names(PromptsSpec))


def test_preset_defaults_are_the_settings_a_preset_may_give():
    assert field_names(Defaults) == [name for name in NAMES if name in DEFAULT_SETTINGS] or set(
        field_names(Defaults)
    ) == set(DEFAULT_SETTINGS)


def test_prompts_lines_manifest_and_metadata_follow_the_table():
    assert PROMPT_OPTIONS == (*PROMPT_SETTINGS, "thresh")
    assert MANIFEST_FIELDS == ("model", *MANIFEST_SETTINGS, "thresh")
    assert FIELDS[0] == "prompt" and FIELDS[1 : 1 + len(METADATA_SETTINGS)] == METADATA_SETTINGS


def test_every_number_has_a_range_and_every_setting_a_flag():
    for setting in SETTINGS:
        assert setting.flag == "--" + setting.name.replace("_", "-") or setting.name in ("num_images",)
        if setting.type in (int, float):
            assert setting.name in limits.LIMITS, setting.name
            assert limits.LIMITS[setting.name].integer == (setting.type is int), setting.name


def test_pipeline_arguments_come_from_the_table():
    assert {s.name for s in PASSED_IF_TAKEN} | set(PASSED_BY_RULE) == set(NAMES)
    assert all(setting.arguments for setting in PIPELINE_CHECKED)
    from teacli.generation.runner import pipeline_kwargs

    class Pipe:
        device = "cpu"

        def __call__(self, prompt, num_inference_steps, generator, guidance_scale=None, num_frames=None, fps=None):
            pass

    request = GenerationRequest("p", steps=4, guidance=2.0, frames=9, fps=8.0, height=64)
    kwargs = pipeline_kwargs(Pipe(), request)
    assert {k: kwargs[k] for k in ("guidance_scale", "num_frames", "fps")} == {
        "guidance_scale": 2.0,
        "num_frames": 9,
        "fps": 8.0,
    }
    assert "height" not in kwargs  # a setting the pipeline does not take is not passed
    assert set(inspect.signature(Pipe.__call__).parameters) >= set(kwargs)
