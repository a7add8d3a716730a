"""Every place that lists generation settings follows the one table (teacli.settings.SETTINGS)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from teacli import limits, settings
from teacli.batch.prepare import PromptsSpec
from teacli.batch.prompt_runs import PROMPT_OPTIONS, check_option
from teacli.batch.prompt_runs import SETTINGS as MANIFEST_FIELDS
from teacli.batch.prompts import PromptsError
from teacli.generation import runner
from teacli.generation.generate import GenerationSpec, prepare_generation
from teacli.generation.metadata import FIELDS
from teacli.generation.runner import PASSED_BY_RULE, PASSED_IF_TAKEN, GenerationError, GenerationRequest
from teacli.limits import Limit
from teacli.models import preset_fields
from teacli.models.catalog import Defaults, PresetError, builtin_presets, preset_to_dict
from teacli.models.preset import defaults_class
from teacli.settings import (
    DEFAULT_SETTINGS,
    MANIFEST_SETTINGS,
    METADATA_SETTINGS,
    PIPELINE_CHECKED,
    PROMPT_SETTINGS,
    SETTINGS,
    Setting,
    setting_fields,
)

NAMES = [setting.name for setting in SETTINGS]


def field_names(cls) -> list[str]:
    return [field.name for field in dataclasses.fields(cls)]


def test_every_setting_is_a_request_field_and_a_spec_field():
    assert set(NAMES) <= set(field_names(GenerationRequest))
    assert set(NAMES) <= set(field_names(GenerationSpec))
    assert set(PROMPT_SETTINGS) | {"image"} <= set(field_names(PromptsSpec))


def test_the_python_api_takes_its_setting_fields_from_the_table():
    # The settings are the classes' last fields, in the table's order, keyword-only, defaulting to their rows'.
    for cls, names in (
        (GenerationRequest, NAMES),
        (GenerationSpec, NAMES),
        (PromptsSpec, [name for name in NAMES if name != "num_images"]),  # one output per prompt
    ):
        added = dataclasses.fields(cls)[-len(names) :]
        assert [field.name for field in added] == names, cls.__name__
        for field in added:
            row = settings.setting(field.name)
            assert field.kw_only, (cls.__name__, field.name)
            if cls is GenerationRequest and row.required:  # a request is resolved: it always has steps
                assert (field.default, field.type) == (dataclasses.MISSING, row.type)
            else:
                assert field.default == row.default, (cls.__name__, field.name)
    assert (GenerationSpec("p").seed, GenerationSpec("p").num_images, GenerationSpec("p").steps) == (0, 1, None)
    with pytest.raises(TypeError):  # a setting is never passed by position
        GenerationRequest("p", 4)
    with pytest.raises(TypeError, match="is a setting"):  # nor declared by a class itself

        @setting_fields()
        class Twice:
            steps: int


def test_preset_defaults_are_the_settings_a_preset_may_give():
    assert set(field_names(Defaults)) == set(DEFAULT_SETTINGS)
    required = [s.name for s in SETTINGS if s.in_defaults and s.required]
    assert required == ["steps"] and field_names(Defaults)[: len(required)] == required  # required ones first
    for field in dataclasses.fields(Defaults):
        row = settings.setting(field.name)
        assert field.type == (row.type if row.required else row.type | None), field.name
        assert field.default is (dataclasses.MISSING if row.required else None), field.name


def test_prompts_lines_manifest_and_metadata_follow_the_table():
    assert PROMPT_OPTIONS == (*PROMPT_SETTINGS, "thresh")
    assert MANIFEST_FIELDS == ("model", *MANIFEST_SETTINGS, "thresh")
    assert FIELDS[0] == "prompt" and FIELDS[1 : 1 + len(METADATA_SETTINGS)] == METADATA_SETTINGS


def test_every_number_has_a_range_and_every_setting_a_flag():
    for setting in SETTINGS:
        assert setting.flag == "--" + setting.name.replace("_", "-") or setting.name in ("num_images",)
        if setting.type in (int, float):
            assert setting.limit is not None, setting.name
            assert setting.limit.integer == (setting.type is int), setting.name
            assert settings.limit_of(setting.name) is setting.limit
        else:
            assert setting.limit is None, setting.name
        assert setting.name not in limits.LIMITS, f"{setting.name}: its range is in its row, in one place"


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


# A setting that does not exist, added to the table: each derived place that reads the table picks it up.
SHIFT = Setting("shift", float, "--shift", ("shift",), limit=Limit(integer=False, low=0, high=10), preset_minimum=1)
TABLE = (*SETTINGS, SHIFT)


@pytest.fixture
def with_shift(monkeypatch):
    builtin_presets()  # read (and cached) with the real table: presets read under the patch must not outlive it
    monkeypatch.setattr(settings, "SETTINGS", TABLE)
    monkeypatch.setitem(settings.BY_NAME, "shift", SHIFT)
    monkeypatch.setattr(preset_fields, "SETTINGS", TABLE)
    monkeypatch.setattr(preset_fields, "Defaults", defaults_class(TABLE))


def test_a_new_row_is_a_preset_default_with_its_type_and_checks(with_shift):
    shifted = dataclasses.fields(defaults_class(TABLE))[-1]
    assert (shifted.name, shifted.type, shifted.default) == ("shift", float | None, None)
    data = preset_to_dict(builtin_presets()["tiny-flux"])
    preset = preset_fields.parse_preset(data | {"defaults": {**data["defaults"], "shift": 3}}, "p.yaml")
    assert preset.defaults.shift == 3 and preset_fields.parse_preset(data, "p.yaml").defaults.shift is None
    with pytest.raises(PresetError, match=r"field 'defaults.shift': must be a finite number between 0 and 10, got 11"):
        preset_fields.parse_preset(data | {"defaults": {**data["defaults"], "shift": 11}}, "p.yaml")
    with pytest.raises(PresetError, match=r"field 'defaults.shift': must be >= 1, got 0.5"):  # the preset minimum
        preset_fields.parse_preset(data | {"defaults": {**data["defaults"], "shift": 0.5}}, "p.yaml")


def with_row(cls, row):
    """`cls` as it is made once `row` is in the table (the same decorator, on a subclass: the row's field is added
    after the others)."""
    return dataclasses.dataclass(frozen=True)(setting_fields(table=(row,))(type(cls.__name__, (cls,), {})))


def test_a_new_row_is_a_field_of_the_python_api_and_reaches_the_pipeline(with_shift, monkeypatch):
    for cls in (GenerationRequest, GenerationSpec, PromptsSpec):
        added = dataclasses.fields(with_row(cls, SHIFT))[-1]
        assert (added.name, added.type, added.default, added.kw_only) == ("shift", float | None, None, True)
    request_class = with_row(GenerationRequest, SHIFT)
    data = preset_to_dict(builtin_presets()["tiny-flux"])
    preset = preset_fields.parse_preset(data | {"defaults": {**data["defaults"], "shift": 3}}, "p.yaml")
    assert request_class.from_preset(preset, "p").shift == 3  # the preset's default
    assert request_class.from_preset(preset, "p", shift=2.5).shift == 2.5  # the caller's, over it

    monkeypatch.setattr(runner, "PASSED_IF_TAKEN", runner.passed_if_taken(TABLE))

    class Pipe:
        device = "cpu"

        def __call__(self, prompt, num_inference_steps, generator, shift=None):
            pass

    assert runner.pipeline_kwargs(Pipe(), request_class(prompt="p", steps=4, shift=2.5))["shift"] == 2.5
    assert "shift" not in runner.pipeline_kwargs(Pipe(), request_class(prompt="p", steps=4))  # not given


def test_a_new_row_is_range_checked_everywhere_and_reserved_in_call_kwargs(with_shift):
    with pytest.raises(GenerationError) as refused:
        settings.check_given({"shift": float("nan")}, GenerationError)
    assert str(refused.value) == "shift must be a finite number between 0 and 10, got nan"
    assert refused.value.field == "shift"
    assert settings.check("shift", 2.5, GenerationError) == 2.5 and settings.problem("shift", 11) is not None
    with pytest.raises(PromptsError, match="line 3: 'shift' must be a finite number between 0 and 10, got 11"):
        check_option("shift", 11, "line 3")
    assert check_option("shift", 2, "line 3") == 2.0  # a float setting keeps a float
    assert preset_fields.setting_arguments(TABLE)["shift"] == "use defaults.shift or --shift"


def test_every_setting_argument_is_reserved_from_call_kwargs():
    for row in SETTINGS:
        for argument in row.arguments:
            where = f"defaults.{row.name} or {row.flag}" if row.in_defaults else row.flag
            assert preset_fields.RESERVED_CALL_KWARGS[argument] == f"use {where}"


def test_the_python_api_checks_ranges_with_the_table():
    with pytest.raises(GenerationError) as refused:
        prepare_generation(GenerationSpec("a red circle", steps=10**30))
    assert refused.value.field == "steps" and str(refused.value).startswith("steps must be an integer between 2 and")
