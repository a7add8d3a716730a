"""Model presets: one YAML file per model, validated field by field.

Built-in presets ship in the teacli.presets package. User presets live in the directories named by
TEACLI_PRESETS and in the user config directory (~/.config/teacli/presets on Linux); a user preset with
a built-in's name replaces it. Every error names the file and the field.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import TeacliError
from ..files import NotRegularFile, TooLarge, file_kind, read_regular_file
from ..limits import LIMITS, problem, short

logger = logging.getLogger("teacli")

EMBEDDED_PREFIX = "embedded:"
DEFAULT_PRESET = "teacli-shapes"  # trained and shipped with teacli, so it runs offline anywhere
PRESETS_ENV = "TEACLI_PRESETS"
PRESET_SUFFIXES = (".yaml", ".yml")


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

# Pipeline arguments teacli sets itself (runner.pipeline_kwargs and generate), or whose change breaks reading the
# result (output_type: latent, return_dict: false): a preset's call_kwargs may not give them. Each with where the
# setting belongs instead.
RESERVED_CALL_KWARGS = {
    "prompt": "the prompt is the command's PROMPT argument",
    "negative_prompt": "use defaults.negative_prompt or --negative-prompt",
    "num_inference_steps": "use defaults.steps or --steps",
    "guidance_scale": "use defaults.guidance or --guidance",
    "true_cfg_scale": "use defaults.true_cfg or --true-cfg",
    "height": "use defaults.height or --height",
    "width": "use defaults.width or --width",
    "num_frames": "use defaults.frames or --frames",
    "fps": "use defaults.fps or --fps",
    "frame_rate": "use defaults.fps or --fps",
    "generator": "--seed makes the generators",
    "latents": "--seed makes the starting noise",
    "num_images_per_prompt": "use --num-images",
    "num_videos_per_prompt": "use --num-images",
    "num_waveforms_per_prompt": "use --num-images",
    "image": "use --image",
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

# What a preset file may hold: it is a few dozen fields. Bounded so that no file (a YAML alias bomb, a FIFO,
# a huge or deeply nested document) can take more than a moment or more than a little memory to read.
MAX_PRESET_BYTES = 1_048_576  # 1 MiB
MAX_PRESET_NODES = 10_000  # values, counted once per alias that repeats them
MAX_PRESET_DEPTH = 32  # levels of nesting


class PresetError(TeacliError, ValueError):
    """A preset file is missing, malformed or has an invalid field."""


@dataclass(frozen=True)
class Defaults:
    steps: int
    guidance: float | None = None
    height: int | None = None
    width: int | None = None
    true_cfg: float | None = None  # pipelines with true CFG (FLUX, Qwen-Image) use it with a negative prompt
    frames: int | None = None  # video pipelines: num_frames
    fps: float | None = None  # video pipelines: frames per second of the written file
    # Used when the user gives none; with true_cfg it turns true CFG on by default (teacli-shapes: "").
    negative_prompt: str | None = None


@dataclass(frozen=True)
class Component:
    """A pipeline component loaded separately: `class_name.from_pretrained(model, subfolder=..., **kwargs)`."""

    class_name: str  # a transformers or diffusers class, e.g. LlamaForCausalLM
    model: str
    subfolder: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExpertOverride:
    """What a second denoiser (Wan 2.2's transformer_2) does differently; None keeps the preset's."""

    coefficients: tuple[float, ...] | None = None
    coefficients_source: str | None = None
    thresh: float | None = None
    ret_steps: int | None = None
    modulated_input: str | None = None
    rel_l1_range: tuple[float, float] | None = None  # its own calibrated range (teacli calibrate)


@dataclass(frozen=True)
class Preset:
    name: str
    model: str  # a hub id, a local path, or "embedded:NAME" for a model teacli builds offline
    pipeline: str
    transformer: str
    extractor: str
    coefficients: tuple[float, ...]
    coefficients_source: str
    thresh: float
    defaults: Defaults
    description: str = ""
    ret_steps: int = 0
    cutoff_steps: int | None = None
    rel_l1_range: tuple[float, float] | None = None
    call_kwargs: dict[str, Any] = field(default_factory=dict)  # extra pipeline arguments, e.g. max_sequence_length
    # Components the checkpoint does not ship, loaded from elsewhere (HiDream's Llama text encoder).
    components: dict[str, Component] = field(default_factory=dict)
    modulated_input: str | None = None  # an extractor's named alternative, e.g. Wan's time_projection
    experts: dict[str, ExpertOverride] = field(default_factory=dict)  # per extra denoiser, e.g. transformer_2
    needs_image: bool = False  # editing pipelines (Qwen-Image-Edit, ...) cannot run without an input image
    # What `teacli calibrate` recorded about the fit (date, versions, prompts, R^2...); data, not read by the engine.
    calibration: dict[str, Any] = field(default_factory=dict)
    # Schedules `teacli calibrate --plan` chose: steps -> computed steps -> timeline ("C.CfC..C", teacli.engine.plan).
    plans: dict[int, dict[int, str]] = field(default_factory=dict)
    budget: int | None = None  # computed steps run by default where a plan exists for the run's step count
    source: str = ""  # the file it came from

    @property
    def embedded(self) -> str | None:
        return self.model[len(EMBEDDED_PREFIX) :] if self.model.startswith(EMBEDDED_PREFIX) else None

    @property
    def is_test_model(self) -> bool:
        """Embedded tiny pipelines teacli builds offline: for tests and smoke runs, not for pictures.

        teacli-shapes is embedded too but trained, so its pictures mean something: not a test model.
        """
        from .embedded import SHIPPED_MODELS

        return self.embedded is not None and self.embedded not in SHIPPED_MODELS

    @property
    def is_user(self) -> bool:
        """Read from a file outside the built-in presets: a user preset directory or a --model file."""
        return bool(self.source) and Path(self.source).resolve().parent != _builtin_dir()

    @property
    def overrides(self) -> Preset | None:
        """The built-in preset this user preset replaces (same name), if any."""
        return builtin_presets().get(self.name) if self.is_user else None

    @property
    def coefficients_kind(self) -> str:
        """published, borrowed (from another model) or calibrated (by teacli calibrate)."""
        source = self.coefficients_source.lower()
        for kind in ("borrowed", "calibrated"):
            if source.startswith(kind):
                return kind
        return "published"


def _fail(path: str, field_name: str, message: str) -> PresetError:
    return PresetError(f"preset {path}: field '{field_name}': {message}")


def _text(value: Any) -> str:
    """A name or key from a preset as a message shows it (unquoted), never longer than short() allows."""
    text = value if isinstance(value, str) else short(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _finite(value: float) -> bool:
    """A finite number that also fits a float (an integer of 400 digits does not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _string(data: dict, path: str, name: str, required: bool = True, default: str = "") -> str:
    value = data.get(name, None)
    if value is None:
        if required:
            raise _fail(path, name, "missing")
        return default
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, name, f"expected a non-empty string, got {short(value)}")
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
    """A number field. `setting` names its range in teacli.limits: the bounds the command line checks too
    (an integer of 23 digits or NaN is refused there as here); `minimum` is a preset's own, stricter one."""
    if setting is not None:
        integer = LIMITS[setting].integer
    if isinstance(value, str) and not integer:
        # YAML 1.1 reads 1e-3 (no dot) as a string; accept what is plainly a number.
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(path, name, f"expected {'an integer' if integer else 'a number'}, got {short(value)}")
    if setting is not None:
        # limits' float check cannot take an integer too large for a float: those are out of range anyway.
        wanted = problem(setting, value) if integer or _finite(value) else LIMITS[setting].describe()
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

    defaults = data.get("defaults")
    if not isinstance(defaults, dict):
        raise _fail(path, "defaults", "expected a mapping with at least 'steps'")
    unknown = _unknown(defaults, set(Defaults.__dataclass_fields__))
    if unknown:
        raise _fail(path, f"defaults.{unknown}", "unknown field")
    if "steps" not in defaults:
        raise _fail(path, "defaults.steps", "missing")
    # The command line's bounds (teacli.limits), and a preset's own stricter minimum where it had one.
    parsed_defaults = Defaults(
        steps=_number(defaults["steps"], path, "defaults.steps", setting="steps"),
        guidance=_optional(defaults, path, "guidance", prefix="defaults.", setting="guidance"),
        height=_optional(defaults, path, "height", prefix="defaults.", setting="height", minimum=8),
        width=_optional(defaults, path, "width", prefix="defaults.", setting="width", minimum=8),
        true_cfg=_optional(defaults, path, "true_cfg", prefix="defaults.", setting="true_cfg"),
        frames=_optional(defaults, path, "frames", prefix="defaults.", setting="frames"),
        fps=_optional(defaults, path, "fps", prefix="defaults.", setting="fps", minimum=1),
        negative_prompt=_optional_text(defaults, path, "negative_prompt", prefix="defaults."),
    )

    calibration = data.get("calibration")
    if calibration is not None and not isinstance(calibration, dict):
        raise _fail(path, "calibration", "expected a mapping (teacli calibrate writes it)")

    call_kwargs = data.get("call_kwargs")
    call_kwargs = {} if call_kwargs is None else call_kwargs
    if not isinstance(call_kwargs, dict) or not all(isinstance(k, str) for k in call_kwargs):
        raise _fail(path, "call_kwargs", "expected a mapping of pipeline argument names to values")
    for key in call_kwargs:
        if key in RESERVED_CALL_KWARGS:
            raise _fail(path, f"call_kwargs.{key}", f"teacli sets this itself; remove it ({RESERVED_CALL_KWARGS[key]})")

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
        call_kwargs=dict(call_kwargs),
        needs_image=_flag(data, path, "needs_image"),
        modulated_input=_string(data, path, "modulated_input", required=False) or None,
        experts=_experts(data.get("experts"), path),
        calibration=dict(calibration or {}),
        plans=_plans(data.get("plans"), path),
        budget=_optional(data, path, "budget", setting="steps", minimum=2),
        source=path,
    )


def _plans(value: Any, path: str) -> dict[int, dict[int, str]]:
    """plans: {steps: {computed steps: timeline}}, every timeline a valid plan of that many steps and budget."""
    from ..engine.plan import PlanError, from_timeline

    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, "plans", "expected a mapping of step counts to {computed steps: timeline}")
    plans: dict[int, dict[int, str]] = {}
    for steps, schedules in value.items():
        where = f"plans.{_text(steps)}"
        if isinstance(steps, bool) or not isinstance(steps, int) or not 2 <= steps <= LIMITS["steps"].high:
            raise _fail(path, where, "expected a step count (a whole number of steps) as the key")
        if not isinstance(schedules, dict):
            raise _fail(path, where, "expected a mapping of computed steps to timelines")
        plans[steps] = {}
        for budget, timeline in schedules.items():
            if isinstance(budget, bool) or not isinstance(budget, int):
                raise _fail(path, f"{where}.{_text(budget)}", "expected a number of computed steps as the key")
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
    return _text(unknown[0]) if unknown else None


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


EXPERT_FIELDS = ("coefficients", "coefficients_source", "thresh", "ret_steps", "modulated_input", "rel_l1_range")


def _experts(value: Any, path: str) -> dict[str, ExpertOverride]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, "experts", "expected a mapping of denoiser names (transformer_2) to overrides")
    experts = {}
    for name, spec in value.items():
        where = f"experts.{_text(name)}"
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
        where = f"components.{_text(name)}"
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
            raise _fail(path, f"{where}.{_text(key)}", "expected a mapping of from_pretrained arguments")
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
        "plans": {steps: dict(schedules) for steps, schedules in preset.plans.items()} or None,
    }
    return {key: value for key, value in data.items() if value is not None}


class _PresetLoader(yaml.SafeLoader):
    """yaml.safe_load's loader (the same tags, the same values), bounded: it stops composing past
    MAX_PRESET_NODES values or MAX_PRESET_DEPTH levels, and refuses a document whose aliases repeat values
    past those bounds (a "billion laughs" file: a few lines whose aliases stand for billions of values)."""

    def __init__(self, text: str, path: str) -> None:
        super().__init__(text)
        self.path = path
        self.composed = 0
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.composed += 1
        if self.composed > MAX_PRESET_NODES:
            raise _too_many(self.path)
        if self.depth >= MAX_PRESET_DEPTH:
            raise _too_deep(self.path)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        self.check_expansion(node)
        return self.construct_document(node)

    def check_expansion(self, root: yaml.Node) -> None:
        """Count the values as if every alias were replaced by a copy of what it names, without copying:
        each node's count and depth once (aliases share nodes), stopping as soon as a bound is passed."""
        sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, levels) it stands for
        open_nodes: set[int] = set()  # on the path from the root: meeting one again is an alias of itself
        stack: list[tuple[yaml.Node, bool]] = [(root, False)]
        while stack:
            node, children_done = stack.pop()
            key = id(node)
            children = _child_nodes(node)
            if children_done:
                open_nodes.discard(key)
                size = 1 + sum(sizes[id(child)][0] for child in children)
                depth = 1 + max((sizes[id(child)][1] for child in children), default=0)
                if size > MAX_PRESET_NODES:
                    raise _too_many(self.path)
                if depth > MAX_PRESET_DEPTH:
                    raise _too_deep(self.path)
                sizes[key] = (size, depth)
            elif key not in sizes:
                if key in open_nodes:
                    raise PresetError(
                        f"preset {self.path}: a YAML alias refers to a value that contains it (an endless value); "
                        "a preset is a few dozen fields: write them out"
                    )
                open_nodes.add(key)
                stack.append((node, True))
                stack.extend((child, False) for child in children if id(child) not in sizes)


def _too_many(path: str) -> PresetError:
    return PresetError(
        f"preset {path}: too many YAML aliases/nodes: it holds over {MAX_PRESET_NODES} values once its aliases "
        "are expanded; a preset is a few dozen fields: write them out"
    )


def _too_deep(path: str) -> PresetError:
    return PresetError(
        f"preset {path}: nested more than {MAX_PRESET_DEPTH} levels deep (counting what its aliases stand for); "
        "a preset is a few dozen fields: write them out"
    )


def _child_nodes(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def _read_preset_bytes(path: Path) -> bytes:
    """The file's bytes: a regular file of at most MAX_PRESET_BYTES (files.read_regular_file)."""
    try:
        return read_regular_file(path, MAX_PRESET_BYTES)
    except NotRegularFile as error:
        raise PresetError(f"preset {path}: cannot be read ({error.kind}, not a regular file)") from None
    except TooLarge:
        raise PresetError(
            f"preset {path}: is larger than {MAX_PRESET_BYTES} bytes; a preset is a few dozen fields "
            "(is it the right file?)"
        ) from None
    except OSError as error:
        raise PresetError(f"preset {path}: cannot be read ({error.strerror or error})") from None


def load_preset_file(path: str | Path) -> Preset:
    path = Path(path)
    try:
        text = _read_preset_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise PresetError(f"preset {path}: is not UTF-8 text; save it as UTF-8") from None
    loader = _PresetLoader(text, str(path))
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or error
        if isinstance(error, yaml.constructor.ConstructorError):
            problem = f"{problem} (presets are plain YAML: tags such as !!python/object are not allowed)"
        raise PresetError(f"preset {path}: not valid YAML{where}: {problem}") from None
    finally:
        loader.dispose()
    return parse_preset(data, str(path))


@cache
def _builtin_dir() -> Path:
    return Path(str(resources.files("teacli.presets"))).resolve()


@cache
def builtin_presets() -> dict[str, Preset]:
    presets: dict[str, Preset] = {}
    for entry in sorted(resources.files("teacli.presets").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(PRESET_SUFFIXES):
            preset = load_preset_file(Path(str(entry)))
            if preset.name in presets:
                other = presets[preset.name].source
                raise PresetError(f"preset {entry}: field 'name': '{_text(preset.name)}' is also used by {other}")
            presets[preset.name] = preset
    return presets


def user_config_presets_dir() -> Path:
    """The presets folder in the user's config directory (~/.config/teacli/presets on Linux); may not exist."""
    import platformdirs

    return Path(platformdirs.user_config_dir("teacli", appauthor=False)) / "presets"


def user_preset_dirs() -> list[Path]:
    """The directories searched for user presets, first wins: TEACLI_PRESETS in order, then the config one.

    A directory TEACLI_PRESETS names must exist (a typo there would otherwise hide the user's presets);
    the config directory is searched only when it exists.
    """
    dirs: list[Path] = []
    for entry in os.environ.get(PRESETS_ENV, "").split(os.pathsep):
        if not entry.strip():
            continue
        directory = Path(entry).expanduser()
        if not directory.is_dir():
            raise PresetError(
                f"{PRESETS_ENV} names {entry}, which is not a directory; create it or fix {PRESETS_ENV} "
                f"(directories separated by '{os.pathsep}')"
            )
        dirs.append(directory)
    config_dir = user_config_presets_dir()
    if config_dir.is_dir():
        dirs.append(config_dir)
    unique: dict[Path, Path] = {}
    for directory in dirs:
        unique.setdefault(directory.resolve(), directory)
    return list(unique.values())


# Non-regular files (FIFOs, directories, ...) named like presets that were skipped and said so, once each.
_skipped: set[str] = set()


def _is_special(path: Path) -> bool:
    """A FIFO, directory, socket or device: never opened (a FIFO would block every command). A path that cannot
    be stat'ed (a dangling link) is not special: load_preset_file says why it cannot be read."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    if stat.S_ISREG(mode):
        return False
    if str(path) not in _skipped:
        _skipped.add(str(path))
        logger.warning("skipping %s: %s, not a regular file, cannot be a preset", path, file_kind(mode))
    return True


def _presets_in(directory: Path) -> dict[str, Preset]:
    presets: dict[str, Preset] = {}
    try:
        names = [p for p in directory.iterdir() if p.name.endswith(PRESET_SUFFIXES) and not p.name.startswith(".")]
    except OSError as error:
        raise PresetError(
            f"preset directory {directory} cannot be read ({error.strerror or error}); fix its permissions or "
            f"remove it from {PRESETS_ENV}"
        ) from None
    files = [p for p in names if not _is_special(p)]
    for path in sorted(files, key=lambda p: p.name):
        preset = load_preset_file(path)
        if preset.name in presets:
            raise PresetError(
                f"preset {path}: field 'name': '{_text(preset.name)}' is also used by {presets[preset.name].source} "
                "in the same directory; rename one or move it elsewhere"
            )
        presets[preset.name] = preset
    return presets


def user_presets() -> dict[str, Preset]:
    """Every *.yaml / *.yml in the user preset directories, by name; the first directory with a name wins.

    Read afresh on every call (the directories and TEACLI_PRESETS may change); a broken file is an error,
    not skipped: ignoring a file the user wrote would silently run the built-in preset instead.
    """
    presets: dict[str, Preset] = {}
    for directory in user_preset_dirs():
        for name, preset in _presets_in(directory).items():
            presets.setdefault(name, preset)
    return presets


def all_presets() -> dict[str, Preset]:
    """Built-in presets with user presets replacing those of the same name, then new user presets."""
    return {**builtin_presets(), **user_presets()}


def find_preset(name_or_model: str) -> Preset | None:
    """A preset (user or built-in) by its name, or by the hub id / path in its `model` field."""
    presets = all_presets()
    if name_or_model in presets:
        return presets[name_or_model]
    matches = [p for p in presets.values() if p.model == name_or_model]
    # Several presets may share weights (tiny-flux and tiny-flux-kontext): the plain generation one wins,
    # then a user preset (a calibrated one) over a built-in.
    return min(matches, key=lambda p: (p.needs_image, not p.is_user, p.name), default=None)


def presets_for_transformer(class_name: str) -> list[Preset]:
    return [p for p in builtin_presets().values() if p.transformer == class_name]
