"""A preset file's mapping to a Preset, validated field by field, and back (preset_to_dict).

Every error names the file and the field: `preset PATH: field 'NAME': what is wrong`.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..limits import short
from ..settings import SETTINGS, Setting, limit_of
from .preset import Component, Defaults, ExpertOverride, Preset, PresetError, Vocabulary, prompt_words

REQUIRED_STRINGS = ("name", "model", "pipeline", "transformer", "extractor", "coefficients_source")

# Fields naming code are plain names looked up in diffusers or the extractor registry, never import paths:
# a preset is data, and a dotted path would invite importing whatever module it names.
NAME_FIELDS = {
    "pipeline": "a diffusers pipeline class name such as FluxPipeline",
    "transformer": "a transformer class name such as FluxTransformer2DModel (extractors are looked up by it)",
    "extractor": "the name of its extractor module in extractors/, such as flux",
}
PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# from_pretrained arguments that would run code from a model repository; a preset may not pass them.
CODE_KWARGS = ("trust_remote_code", "custom_pipeline", "custom_revision", "code_revision")


def setting_arguments(table: tuple[Setting, ...] = SETTINGS) -> dict[str, str]:
    """The pipeline arguments the generation settings set (teacli.settings), each with where to set it instead."""
    return {
        argument: f"use defaults.{row.name} or {row.flag}" if row.in_defaults else f"use {row.flag}"
        for row in table
        for argument in row.arguments
    }


# Pipeline arguments teacli sets itself (runner.pipeline_kwargs and generate), or whose change breaks reading the
# result (output_type: latent, return_dict: false): a preset's call_kwargs may not give them. Each with where the
# setting belongs instead.
RESERVED_CALL_KWARGS = {
    "prompt": "the prompt is the command's PROMPT argument",
    **setting_arguments(),
    "generator": "--seed makes the generators",
    "latents": "--seed makes the starting noise",
    "num_images_per_prompt": "use --num-images",
    "num_videos_per_prompt": "use --num-images",
    "num_waveforms_per_prompt": "use --num-images",
    "output_type": "teacli reads the pipeline's default output: images, frames or audio",
    "return_dict": "teacli reads the pipeline's default output: images, frames or audio",
    "callback_on_step_end": "teacli's progress bar uses it",
    "callback_on_step_end_tensor_inputs": "teacli's progress bar uses the step callback",
    "callback": "teacli's progress bar uses the step callback",
    "callback_steps": "teacli's progress bar uses the step callback",
    # A schedule of their own would run another number of steps than the report and metadata say.
    "sigmas": "the scheduler makes them from defaults.steps or --steps",
    "timesteps": "the scheduler makes them from defaults.steps or --steps",
}

# The denoisers an `experts` entry may name: hook.DENOISER_COMPONENTS (tests keep the two equal).
EXPERT_NAMES = ("transformer", "transformer_2")


def _fail(path: str, field_name: str, message: str) -> PresetError:
    return PresetError(f"preset {path}: field '{field_name}': {message}")


def shown_name(value: Any) -> str:
    """A name or key from a preset as a message shows it (unquoted), never longer than short() allows."""
    text = value if isinstance(value, str) else short(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _finite(value: float) -> bool:
    """A finite number that also fits a float (an integer of 400 digits does not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _string(data: dict, path: str, name: str, required: bool = True, default: str = "", prefix: str = "") -> str:
    value = data.get(name, None)
    if value is None:
        if required:
            raise _fail(path, prefix + name, "missing")
        return default
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, prefix + name, f"expected a non-empty string, got {short(value)}")
    return value


def _number(
    value: Any,
    path: str,
    name: str,
    *,
    minimum: float | None = None,
    integer: bool = False,
    setting: str | None = None,
) -> Any:
    """A number field. `setting` names its range (a generation setting's row in teacli.settings, else
    teacli.limits): the bounds the command line checks too (an integer of 23 digits or NaN is refused there as
    here); `minimum` is a preset's own, stricter one."""
    limit = limit_of(setting) if setting is not None else None
    if limit is not None:
        integer = limit.integer
    if isinstance(value, str) and not integer:
        # YAML 1.1 reads 1e-3 (no dot) as a string; accept what is plainly a number.
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(path, name, f"expected {'an integer' if integer else 'a number'}, got {short(value)}")
    if limit is not None:
        # limits' float check cannot take an integer too large for a float: those are out of range anyway.
        wanted = limit.problem(value) if integer or _finite(value) else limit.describe()
        if wanted is not None:
            raise _fail(path, name, f"must be {wanted}, got {short(value)}")
    elif integer and not isinstance(value, int):
        raise _fail(path, name, f"expected an integer, got {short(value)}")
    elif not _finite(value):
        raise _fail(path, name, f"expected a finite number, got {short(value)}")
    if minimum is not None and value < minimum:
        raise _fail(path, name, f"must be >= {minimum}, got {short(value)}")
    return value


def _flag(data: dict, path: str, name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise _fail(path, name, f"expected true or false, got {short(value)}")
    return value


def _optional(data: dict, path: str, name: str, prefix: str = "", **checks: Any) -> Any:
    value = data.get(name)
    return None if value is None else _number(value, path, prefix + name, **checks)


def _optional_text(data: dict, path: str, name: str, prefix: str = "") -> str | None:
    """A string that may be empty (an empty negative prompt is the unconditional branch)."""
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise _fail(path, prefix + name, f"expected a string, got {short(value)}")
    return value


def parse_preset(data: Any, path: str) -> Preset:
    """Validate the mapping read from a preset file."""
    if not isinstance(data, dict):
        raise PresetError(f"preset {path}: expected a mapping of fields, got {type(data).__name__}")
    known = set(Preset.__dataclass_fields__) - {"source"}
    unknown = _unknown(data, known)
    if unknown:
        raise _fail(path, unknown, f"unknown field; known fields: {', '.join(sorted(known))}")

    strings = {name: _string(data, path, name) for name in REQUIRED_STRINGS}
    for name, expected in NAME_FIELDS.items():
        if not PLAIN_NAME.fullmatch(strings[name]):
            raise _fail(path, name, f"expected {expected}, got {short(strings[name])}: a name, never a path to code")

    coefficients = _coefficients(data.get("coefficients"), path, "coefficients")

    parsed_defaults = _defaults(data.get("defaults"), path)

    calibration = data.get("calibration")
    if calibration is not None and not isinstance(calibration, dict):
        raise _fail(path, "calibration", "expected a mapping (teacli calibrate writes it)")

    call_kwargs = _call_kwargs(data.get("call_kwargs"), path)

    return Preset(
        **strings,
        components=_components(data.get("components"), path),
        coefficients=coefficients,
        thresh=float(_number(data.get("thresh"), path, "thresh", setting="thresh")),
        defaults=parsed_defaults,
        description=_string(data, path, "description", required=False),
        ret_steps=_optional(data, path, "ret_steps", setting="ret_steps") or 0,
        cutoff_steps=_optional(data, path, "cutoff_steps", setting="cutoff_steps"),
        rel_l1_range=_range(data.get("rel_l1_range"), path, "rel_l1_range"),
        call_kwargs=call_kwargs,
        needs_image=_flag(data, path, "needs_image"),
        modulated_input=_string(data, path, "modulated_input", required=False) or None,
        experts=_experts(data.get("experts"), path),
        calibration=dict(calibration or {}),
        plans=_plans(data.get("plans"), path),
        budget=_optional(data, path, "budget", setting="steps", minimum=2),
        vocabulary=_vocabulary(data.get("vocabulary"), path),
        source=path,
    )


def _defaults(defaults: Any, path: str) -> Defaults:
    """The `defaults` mapping: the generation settings a run uses when the user gives none."""
    if not isinstance(defaults, dict):
        raise _fail(path, "defaults", "expected a mapping with at least 'steps'")
    unknown = _unknown(defaults, set(Defaults.__dataclass_fields__))
    if unknown:
        raise _fail(path, f"defaults.{unknown}", "unknown field")
    rows = [row for row in SETTINGS if row.in_defaults]
    for row in rows:
        if row.required and row.name not in defaults:
            raise _fail(path, f"defaults.{row.name}", "missing")
    return Defaults(**{row.name: _default(defaults, path, row) for row in rows})


def _default(defaults: dict, path: str, row: Setting) -> Any:
    """One setting's default: text as given; a number within the command line's range (the setting's row) and
    the row's stricter preset minimum, if any."""
    if row.type is str:
        return _optional_text(defaults, path, row.name, prefix="defaults.")
    checks = dict(setting=row.name, minimum=row.preset_minimum)
    if row.required:  # given (checked), so null is a bad value here, not "none given"
        return _number(defaults[row.name], path, f"defaults.{row.name}", **checks)
    return _optional(defaults, path, row.name, prefix="defaults.", **checks)


def _call_kwargs(value: Any, path: str) -> dict[str, Any]:
    """Extra pipeline arguments; never one teacli sets itself (RESERVED_CALL_KWARGS)."""
    call_kwargs = {} if value is None else value
    if not isinstance(call_kwargs, dict) or not all(isinstance(k, str) for k in call_kwargs):
        raise _fail(path, "call_kwargs", "expected a mapping of pipeline argument names to values")
    for key in call_kwargs:
        if key in RESERVED_CALL_KWARGS:
            raise _fail(path, f"call_kwargs.{key}", f"teacli sets this itself; remove it ({RESERVED_CALL_KWARGS[key]})")
    return dict(call_kwargs)


def _plans(value: Any, path: str) -> dict[int, dict[int, str]]:
    """plans: {steps: {computed steps: timeline}}, every timeline a valid plan of that many steps and budget."""
    from ..engine.plan import PlanError, from_timeline

    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, "plans", "expected a mapping of step counts to {computed steps: timeline}")
    plans: dict[int, dict[int, str]] = {}
    for steps, schedules in value.items():
        where = f"plans.{shown_name(steps)}"
        if limit_of("steps").problem(steps) is not None:  # (refuses booleans and other types too)
            raise _fail(path, where, "expected a step count (a whole number of steps) as the key")
        if not isinstance(schedules, dict):
            raise _fail(path, where, "expected a mapping of computed steps to timelines")
        plans[steps] = {}
        for budget, timeline in schedules.items():
            if isinstance(budget, bool) or not isinstance(budget, int):
                raise _fail(path, f"{where}.{shown_name(budget)}", "expected a number of computed steps as the key")
            try:
                plan = from_timeline(timeline)
            except PlanError as error:
                raise _fail(path, f"{where}.{budget}", f"not a plan's timeline ({error})") from None
            if plan.steps != steps or plan.budget != budget:
                raise _fail(
                    path,
                    f"{where}.{budget}",
                    f"the timeline has {plan.steps} steps with {plan.budget} computed, not {steps} with {budget}",
                )
            plans[steps][budget] = timeline
    return plans


def _unknown(data: dict, known: set[str]) -> str | None:
    """The first key of `data` not in `known`, as a message names it; None when every key is known."""
    unknown = sorted((key for key in data if key not in known), key=str)
    return shown_name(unknown[0]) if unknown else None


def _range(value: Any, path: str, name: str) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise _fail(path, name, "expected [low, high]")
    low, high = (float(_number(v, path, name, minimum=0)) for v in value)
    if low > high:
        raise _fail(path, name, f"low {low} is above high {high}")
    return low, high


def _coefficients(value: Any, path: str, name: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not 2 <= len(value) <= 7:
        raise _fail(path, name, "expected a list of 2-7 numbers, highest power first (usually 5)")
    return tuple(float(_number(c, path, name)) for c in value)


VOCABULARY_FIELDS = ("words", "about", "example")


def _vocabulary(value: Any, path: str) -> Vocabulary | None:
    """vocabulary: {words: [...], about: what they describe, example: a prompt in them}."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail(path, "vocabulary", f"expected a mapping with {', '.join(VOCABULARY_FIELDS)}")
    unknown = _unknown(value, set(VOCABULARY_FIELDS))
    if unknown:
        raise _fail(path, f"vocabulary.{unknown}", f"unknown field; known: {', '.join(VOCABULARY_FIELDS)}")
    words = value.get("words")
    if not isinstance(words, list) or not words:
        raise _fail(path, "vocabulary.words", "expected a list of the words the model knows")
    for word in words:
        if not isinstance(word, str) or prompt_words(word) != [word]:
            raise _fail(path, "vocabulary.words", f"expected single lower-case words, got {short(word)}")
    about, example = (_string(value, path, name, prefix="vocabulary.") for name in ("about", "example"))
    outside = Vocabulary(tuple(words), about, example).unknown(example)
    if outside:
        raise _fail(path, "vocabulary.example", f"uses words outside vocabulary.words: {', '.join(outside)}")
    return Vocabulary(tuple(dict.fromkeys(words)), about, example)


EXPERT_FIELDS = ("coefficients", "coefficients_source", "thresh", "ret_steps", "modulated_input", "rel_l1_range")


def _experts(value: Any, path: str) -> dict[str, ExpertOverride]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, "experts", "expected a mapping of denoiser names (transformer_2) to overrides")
    experts = {}
    for name, spec in value.items():
        where = f"experts.{shown_name(name)}"
        if name not in EXPERT_NAMES:
            raise _fail(
                path, where, f"not a denoiser TeaCache hooks; name one of {', '.join(EXPERT_NAMES)} (the pipeline's)"
            )
        if not isinstance(spec, dict):
            raise _fail(path, where, f"expected a mapping with some of: {', '.join(EXPERT_FIELDS)}")
        unknown = _unknown(spec, set(EXPERT_FIELDS))
        if unknown:
            raise _fail(path, f"{where}.{unknown}", f"unknown field; known: {', '.join(EXPERT_FIELDS)}")
        experts[name] = ExpertOverride(
            coefficients=_coefficients(spec["coefficients"], path, f"{where}.coefficients")
            if "coefficients" in spec
            else None,
            coefficients_source=_string(spec, path, "coefficients_source", required=False) or None,
            thresh=_optional(spec, path, "thresh", prefix=f"{where}.", setting="thresh"),
            ret_steps=_optional(spec, path, "ret_steps", prefix=f"{where}.", setting="ret_steps"),
            modulated_input=_string(spec, path, "modulated_input", required=False) or None,
            rel_l1_range=_range(spec.get("rel_l1_range"), path, f"{where}.rel_l1_range"),
        )
    return experts


def _components(value: Any, path: str) -> dict[str, Component]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, "components", "expected a mapping of component names to {class, model}")
    components = {}
    for name, spec in value.items():
        where = f"components.{shown_name(name)}"
        if not isinstance(name, str):
            raise _fail(path, where, "expected a component name such as text_encoder")
        if not isinstance(spec, dict):
            raise _fail(path, where, "expected a mapping with 'class' and 'model'")
        unknown = _unknown(spec, {"class", "model", "subfolder", "kwargs"})
        if unknown:
            raise _fail(path, f"{where}.{unknown}", "unknown field; known: class, model, subfolder, kwargs")
        kwargs = spec.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise _fail(path, f"{where}.kwargs", "expected a mapping of from_pretrained arguments")
        _check_safe_kwargs(kwargs, path, f"{where}.kwargs")
        fields = {key: spec.get(key) for key in ("class", "model", "subfolder")}
        for key, text in fields.items():
            if (text is None and key != "subfolder") or (text is not None and (not isinstance(text, str) or not text)):
                raise _fail(path, f"{where}.{key}", f"expected a non-empty string, got {short(text)}")
        if not PLAIN_NAME.fullmatch(fields["class"]):
            raise _fail(
                path, f"{where}.class", f"expected a transformers or diffusers class name, got {short(fields['class'])}"
            )
        components[name] = Component(fields["class"], fields["model"], fields["subfolder"], dict(kwargs))
    return components


def _check_safe_kwargs(kwargs: dict, path: str, where: str) -> None:
    """Refuse loader arguments that would run repository code or unpickle weights."""
    for key in kwargs:
        if key in CODE_KWARGS:
            raise _fail(path, f"{where}.{key}", "teacli never runs code from a model repository; remove it")
        if not isinstance(key, str):
            raise _fail(path, f"{where}.{shown_name(key)}", "expected a mapping of from_pretrained arguments")
    if "use_safetensors" in kwargs and kwargs["use_safetensors"] is not True:
        raise _fail(
            path,
            f"{where}.use_safetensors",
            "teacli loads safetensors weights only; remove it (--allow-pickle allows pickle weights you trust)",
        )


def preset_to_dict(preset: Preset) -> dict[str, Any]:
    """The preset as the mapping a preset file holds: parse_preset(preset_to_dict(p)) equals p."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    def without_none(obj: Any) -> dict[str, Any]:
        return {name: plain(getattr(obj, name)) for name in obj.__dataclass_fields__ if getattr(obj, name) is not None}

    data: dict[str, Any] = {
        "name": preset.name,
        "description": preset.description or None,
        "model": preset.model,
        "pipeline": preset.pipeline,
        "transformer": preset.transformer,
        "extractor": preset.extractor,
        "coefficients": list(preset.coefficients),
        "coefficients_source": preset.coefficients_source,
        "thresh": preset.thresh,
        "defaults": without_none(preset.defaults),
        "ret_steps": preset.ret_steps or None,
        "cutoff_steps": preset.cutoff_steps,
        "rel_l1_range": plain(preset.rel_l1_range),
        "modulated_input": preset.modulated_input,
        "needs_image": preset.needs_image or None,
        "call_kwargs": plain(preset.call_kwargs) or None,
        "components": {
            name: {
                key: value
                for key, value in {
                    "class": c.class_name,
                    "model": c.model,
                    "subfolder": c.subfolder,
                    "kwargs": plain(c.kwargs) or None,
                }.items()
                if value is not None
            }
            for name, c in preset.components.items()
        }
        or None,
        "experts": {name: without_none(override) for name, override in preset.experts.items()} or None,
        "calibration": plain(preset.calibration) or None,
        "budget": preset.budget,
        "vocabulary": without_none(preset.vocabulary) if preset.vocabulary is not None else None,
        "plans": {steps: dict(schedules) for steps, schedules in preset.plans.items()} or None,
    }
    return {key: value for key, value in data.items() if value is not None}
