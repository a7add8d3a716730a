"""The generation settings, one row each: the single place a per-generation setting is declared.

Everything that lists generation settings is derived from SETTINGS: the command line's range checks, a preset's
`defaults`, the keys a JSONL prompts line may give, the manifest's record of what an output was made with,
the output metadata's fields, the pipeline's call arguments and the arguments a preset's `call_kwargs` may not
set. A number's range is in its row: every place a value comes from (the command line, a preset, a JSONL line, the
Python API) checks it with `check`. Adding a setting is adding a row here; tests/generation/test_settings.py
checks that every derived place follows. The typed Python API (GenerationRequest, GenerationSpec, PromptsSpec)
takes its setting fields from the table too, through the `setting_fields` class decorator.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from . import limits
from .limits import MAX_SEED, MAX_STEPS, Limit

if TYPE_CHECKING:  # (only the annotation)
    from .errors import TeacliError


@dataclass(frozen=True)
class Setting:
    """One per-generation setting, by its API name: a GenerationRequest field, a preset `defaults` field, a
    metadata field and a JSONL key all use this name."""

    name: str
    type: type  # int, float or str (the image is a path or a picture)
    flag: str  # the command line's option
    arguments: tuple[str, ...] = ()  # the pipeline call arguments it sets (those the pipeline takes)
    in_prompts: bool = True  # a JSONL prompts line may give it per prompt
    in_defaults: bool = True  # a preset's `defaults` may give it
    in_metadata: bool = True  # recorded in every output's metadata
    in_manifest: bool = True  # recorded in the manifest; a resumed run must match it
    refused_unless_taken: bool = False  # given for a pipeline without `arguments[0]`, it is refused before loading
    limit: Limit | None = None  # a number's range, wherever the value comes from; None for text and images
    required: bool = False  # every generation has one: a preset's `defaults` must give it
    preset_minimum: float | None = None  # a preset's default may not go below this (stricter than `limit`)
    help: str = ""  # the command line option's help
    show_default: bool | str = True  # what its help shows as the default (typer's show_default)
    default: Any = None  # its value in a request or spec nobody gives it in (None: the preset's, if any)

    def problem(self, value: Any) -> str | None:
        """None when `value` is allowed, else what the setting takes ("an integer between ...", "a string")."""
        if self.type is str:
            return None if isinstance(value, str) else "a string"
        limit = self.limit
        return None if limit is None else limit.problem(value)

    @property
    def given_type(self) -> Any:
        """What a spec field or an option holds: also None where nobody giving it means "the preset's"."""
        kind = Any if self.type is object else self.type  # an image is a path or a picture
        return kind if kind is Any or self.default is not None else kind | None

    def parse(self, value: Any) -> Any:
        """A value that passed `problem`, as the setting keeps it (an integer for a float setting becomes a float)."""
        return float(value) if self.type is float else value


PRESETS = "the preset's"  # the default shown for a setting the preset gives
# Upper bounds are far above any published setting (FLUX: 28-50 steps, 1024-2048 px; Wan: 81 frames at 16 fps)
# and low enough that the value is still meaningful to torch (a seed fits in 64 bits, steps in a tensor index).
SIZE = Limit(integer=True, low=1, high=16_384)
SCALE = Limit(integer=False, low=0, high=1_000)

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "seed",
        int,
        "--seed",
        in_defaults=False,
        in_manifest=False,
        limit=Limit(integer=True, low=0, high=MAX_SEED),
        help="Random seed for the starting noise",
        default=0,
    ),
    Setting(
        "negative_prompt",
        str,
        "--negative-prompt",
        ("negative_prompt",),
        refused_unless_taken=True,
        help="Negative prompt (true CFG: see --true-cfg)",
    ),
    Setting(
        "steps",
        int,
        "--steps",
        ("num_inference_steps",),
        limit=Limit(integer=True, low=2, high=MAX_STEPS),
        required=True,
        help="Denoising steps",
        show_default=PRESETS,
    ),
    Setting(
        "guidance",
        float,
        "--guidance",
        ("guidance_scale",),
        refused_unless_taken=True,
        limit=SCALE,
        help="Guidance scale",
        show_default=PRESETS,
    ),
    # Passed with a negative prompt only.
    Setting(
        "true_cfg",
        float,
        "--true-cfg",
        ("true_cfg_scale",),
        limit=SCALE,
        help="True-CFG scale used with --negative-prompt",
    ),
    Setting(
        "height",
        int,
        "--height",
        ("height",),
        refused_unless_taken=True,
        limit=SIZE,
        preset_minimum=8,
        help="Image height",
        show_default=PRESETS,
    ),
    Setting(
        "width",
        int,
        "--width",
        ("width",),
        refused_unless_taken=True,
        limit=SIZE,
        preset_minimum=8,
        help="Image width",
        show_default=PRESETS,
    ),
    Setting(
        "frames",
        int,
        "--frames",
        ("num_frames",),
        refused_unless_taken=True,
        limit=Limit(integer=True, low=1, high=10_000),
        help="Video frames",
        show_default=PRESETS,
    ),
    # Some video models are conditioned on the frame rate (LTX: frame_rate, Cosmos: fps).
    Setting(
        "fps",
        float,
        "--fps",
        ("frame_rate", "fps"),
        limit=Limit(integer=False, low=0.1, high=1_000),  # a GIF frame lasts at most 655 s; below 0.1 fps is no video
        preset_minimum=1,
        help="Video frame rate",
        show_default=f"{PRESETS} or 16",
    ),
    Setting(
        "image",
        object,
        "--image",
        ("image",),
        in_prompts=False,
        in_defaults=False,
        in_metadata=False,
        in_manifest=False,
        refused_unless_taken=True,
        help="Input image for editing models (FLUX.1 Kontext, Qwen-Image-Edit, ...)",
    ),  # fmt: skip
    Setting(
        "num_images",
        int,
        "--num-images",
        in_prompts=False,
        in_defaults=False,
        in_metadata=False,
        in_manifest=False,
        limit=Limit(integer=True, low=1, high=1_000),
        help="Outputs made in one batch; output i uses seed + i (files NAME-1, NAME-2, ...)",
        default=1,
    ),
)
BY_NAME = {setting.name: setting for setting in SETTINGS}

# Derived lists, each in the table's order.
PROMPT_SETTINGS = tuple(s.name for s in SETTINGS if s.in_prompts)
DEFAULT_SETTINGS = tuple(s.name for s in SETTINGS if s.in_defaults)
METADATA_SETTINGS = tuple(s.name for s in SETTINGS if s.in_metadata)
MANIFEST_SETTINGS = tuple(s.name for s in SETTINGS if s.in_manifest)
PIPELINE_CHECKED = tuple(s for s in SETTINGS if s.refused_unless_taken)
FLAGS = {s.name: s.flag for s in SETTINGS}


def setting(name: str) -> Setting:
    return BY_NAME[name]


def limit_of(name: str) -> Limit:
    """The range of `name`: a generation setting's from its row, any other value's from teacli.limits.LIMITS."""
    row = BY_NAME.get(name)
    if row is not None and row.limit is not None:
        return row.limit
    return limits.LIMITS[name]


def problem(name: str, value: Any) -> str | None:
    """None when `value` is allowed for `name` (a setting or a teacli.limits value), else what it takes."""
    row = BY_NAME.get(name)
    return row.problem(value) if row is not None else limits.LIMITS[name].problem(value)


def check(name: str, value: Any, error: type[TeacliError]) -> Any:
    """`value` unchanged, or `error("NAME must be ..., got VALUE", field=NAME)` (limits.check), for a generation
    setting (its row's range) or any value teacli.limits ranges; None passes (not given)."""
    return limits.check(name, value, error, limit_of(name))


def check_given(values: Mapping[str, Any], error: type[TeacliError]) -> None:
    """Every ranged setting among `values` (by name; None: not given) checked against its row."""
    for row in SETTINGS:
        if row.limit is not None and values.get(row.name) is not None:
            check(row.name, values[row.name], error)


Class = TypeVar("Class", bound=type)


def setting_fields(
    *, exclude: Collection[str] = (), resolved: bool = False, table: Sequence[Setting] | None = None
) -> Callable[[Class], Class]:
    """A class decorator, applied under @dataclass: one field per row of `table` (default SETTINGS) not in
    `exclude`, of the row's type (or None, where its `default` is None) and defaulting to the row's `default`, so a
    new row needs no edit in the class.

    The fields come after the class's own and are keyword-only: a class may keep own fields without defaults,
    and no caller passes a setting by position (the table's order is free to change). `resolved`: the values are
    a preset's, filled in (GenerationRequest), so a setting every generation has (`required`) has no default.
    """

    def add(cls: Class) -> Class:
        annotations = dict(cls.__dict__.get("__annotations__", {}))
        for row in SETTINGS if table is None else table:
            if row.name in exclude:
                continue
            if row.name in annotations:
                raise TypeError(f"{cls.__name__}.{row.name} is a setting: its field comes from teacli.settings")
            required = resolved and row.required
            annotations[row.name] = (Any if row.type is object else row.type) if required else row.given_type
            setattr(cls, row.name, field(kw_only=True) if required else field(default=row.default, kw_only=True))
        cls.__annotations__ = annotations
        return cls

    return add
