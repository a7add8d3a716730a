"""The generation settings, one row each: the single place a per-generation setting is declared.

Everything that lists generation settings is derived from SETTINGS: the command line's range checks, a preset's
`defaults`, the keys a JSONL prompts line may give, the manifest's record of what an output was made with,
the output metadata's fields and the pipeline's call arguments. Adding a setting is adding a row here (and,
for a number, its range in teacli.limits.LIMITS under the same name); tests/generation/test_settings.py checks
that every derived place follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import limits


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

    @property
    def limit(self) -> limits.Limit | None:
        """Its range (teacli.limits), None for text and images."""
        return limits.LIMITS.get(self.name)

    def problem(self, value: Any) -> str | None:
        """None when `value` is allowed, else what the setting takes ("an integer between ...", "a string")."""
        if self.type is str:
            return None if isinstance(value, str) else "a string"
        limit = self.limit
        return None if limit is None else limit.problem(value)

    def parse(self, value: Any) -> Any:
        """A value that passed `problem`, as the setting keeps it (an integer for a float setting becomes a float)."""
        return float(value) if self.type is float else value


SETTINGS: tuple[Setting, ...] = (
    Setting("seed", int, "--seed", in_defaults=False, in_manifest=False),
    Setting("negative_prompt", str, "--negative-prompt", ("negative_prompt",), refused_unless_taken=True),
    Setting("steps", int, "--steps", ("num_inference_steps",)),
    Setting("guidance", float, "--guidance", ("guidance_scale",), refused_unless_taken=True),
    Setting("true_cfg", float, "--true-cfg", ("true_cfg_scale",)),  # passed with a negative prompt only
    Setting("height", int, "--height", ("height",), refused_unless_taken=True),
    Setting("width", int, "--width", ("width",), refused_unless_taken=True),
    Setting("frames", int, "--frames", ("num_frames",), refused_unless_taken=True),
    # Some video models are conditioned on the frame rate (LTX: frame_rate, Cosmos: fps).
    Setting("fps", float, "--fps", ("frame_rate", "fps")),
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
    ),  # fmt: skip
    Setting(
        "num_images", int, "--num-images", in_prompts=False, in_defaults=False, in_metadata=False, in_manifest=False
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
