"""What `generate` is asked, checked before anything loads, then gathered into a spec: one prompt
(GenerationSpec) or a prompts file (batch.PromptsSpec). Nothing here imports torch or diffusers at import time,
so a bad combination is refused in a fraction of a second."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from ..errors import TeacliError
from ..models.memory import check_offload, check_quantize
from ..settings import check_given
from .policy import check_policy, check_thresh, parse_coefficients


class GenerateOptionsError(TeacliError, ValueError):
    """Options that do not go together (a prompt and a prompts file, --out with --prompts); `field` names them."""


class PromptMissingError(GenerateOptionsError):
    """Neither a prompt nor a prompts file, or both: the command cannot run as typed (exit code 2)."""

    exit_code = 2


# Options that make sense for one prompt only, and those that make sense for a prompts file only.
ONE_PROMPT_ONLY = ("compare_baseline", "save_baseline", "strip")


def check_generate_options(values: Mapping[str, Any]) -> None:
    """Every option of `generate` by its field name (None or False: not given), checked together."""
    prompt, prompts = values.get("prompt"), values.get("prompts")
    if (prompt is None) == (prompts is None):
        if prompts is not None:
            raise PromptMissingError("give a PROMPT or prompts FILE, not both", field="prompts")
        raise PromptMissingError(
            "give a PROMPT, or prompts FILE (one prompt a line, or JSONL) for many", field="prompts"
        )
    if prompts is None and (values.get("out_dir") is not None or values.get("manifest") is not None):
        raise GenerateOptionsError(
            "out_dir and manifest go with prompts; for one prompt use out",
            field=("out_dir", "manifest", "prompts", "out"),
        )
    if prompts is not None:
        if values.get("out") is not None:
            raise GenerateOptionsError(
                "out names one file; with prompts the outputs go to out_dir, one per prompt",
                field=("out", "prompts", "out_dir"),
            )
        if values.get("num_images", 1) != 1:
            raise GenerateOptionsError(
                "num_images goes with one PROMPT; with prompts, repeat a line (each gets its own seed)",
                field=("num_images", "prompts"),
            )
        if any(values.get(name) for name in ONE_PROMPT_ONLY):
            raise GenerateOptionsError(
                "compare_baseline, save_baseline and strip go with one PROMPT; drop them with prompts (teacli bench "
                "compares)",
                field=("compare_baseline", "save_baseline", "strip", "prompts"),
            )
    check_offload(values.get("offload"))
    check_quantize(values.get("quantize"))
    if values.get("thresh") is not None:
        check_thresh(values["thresh"])
    check_policy(values.get("policy", "auto"), values.get("budget"))
    parse_coefficients(values.get("coefficients"))
    check_given({**values, "seed": None}, GenerateOptionsError)  # each ranged setting by its row, the seed apart


def spec_from_options(spec_class: type, values: Mapping[str, Any]) -> Any:
    """A GenerationSpec or PromptsSpec from the options as typed: the coefficients as text, the loading and the
    cache options one by one (allow_pickle, offline, lora, ..., offload, quantize; start, end, ret_steps, ...)."""
    from .preparation import CacheOptions, LoadOptions, load_options

    gathered = {
        **values,
        "coefficients": parse_coefficients(values.get("coefficients")),
        "load": load_options(**{name: values[name] for name in fields_of(LoadOptions) if name in values}),
        "cache": CacheOptions(**{name: values[name] for name in fields_of(CacheOptions) if name in values}),
    }
    return spec_class(**{name: gathered[name] for name in fields_of(spec_class) if name in gathered})


def fields_of(dataclass_type: type) -> list[str]:
    return [field.name for field in fields(dataclass_type)]
