"""What a model preset is: the Preset dataclass and its parts, as read from one YAML file (preset_fields).

A preset is data: which weights, which pipeline and transformer classes, which extractor, the TeaCache
coefficients and threshold, and the generation defaults.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, make_dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import TeacliError
from ..settings import SETTINGS, Setting

EMBEDDED_PREFIX = "embedded:"


class PresetError(TeacliError, ValueError):
    """A preset file is missing, malformed or has an invalid field."""


def defaults_class(table: Sequence[Setting] = SETTINGS) -> type:
    """The frozen dataclass of a preset's `defaults`: a field per setting of `table` a preset may give, of the
    setting's type; the required ones (steps) first, the others None when the preset gives none."""
    rows = [row for row in table if row.in_defaults]
    required = [(row.name, row.type) for row in rows if row.required]
    optional = [(row.name, row.type | None, field(default=None)) for row in rows if not row.required]
    made = make_dataclass("Defaults", [*required, *optional], frozen=True)
    made.__module__ = __name__  # pickled with the preset (bench --isolate): found here by its name
    made.__doc__ = "The generation settings a preset gives (teacli.settings): steps, guidance, height, width, ..."
    return made


# What a preset's `defaults` holds: the table's settings a preset may give (in_defaults), steps required. Video
# pipelines use frames and fps; true_cfg goes with a negative prompt, and a default negative prompt ("" for
# teacli-shapes) turns true CFG on by default.
Defaults = defaults_class()


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
class Vocabulary:
    """The words a model was trained on, for a model trained on a small language (teacli-shapes): a prompt's other
    words are ignored, and the user is told so (generation.checks.vocabulary_warning)."""

    words: tuple[str, ...]  # lower case, one word each
    about: str  # what they describe, e.g. "shapes, colours, sizes and positions"
    example: str  # a prompt in those words

    def unknown(self, prompt: str) -> list[str]:
        """The words of `prompt` outside the vocabulary, each once, in the order they come."""
        known = set(self.words)
        return list(dict.fromkeys(word for word in prompt_words(prompt) if word not in known))


def prompt_words(text: str) -> list[str]:
    """The words of a prompt as a word-level tokenizer sees them: lower case, letters only (numbers and
    punctuation are not words)."""
    return re.findall(r"[^\W\d_]+", text.lower())


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
    vocabulary: Vocabulary | None = None  # a model that knows only some words: which (None: any text)
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
        return bool(self.source) and Path(self.source).resolve().parent != builtin_dir()

    @property
    def coefficients_kind(self) -> str:
        """published, borrowed (from another model) or calibrated (by teacli calibrate)."""
        source = self.coefficients_source.lower()
        for kind in ("borrowed", "calibrated"):
            if source.startswith(kind):
                return kind
        return "published"


@cache
def builtin_dir() -> Path:
    """The folder of the built-in presets (the teacli.presets package)."""
    return Path(str(resources.files("teacli.presets"))).resolve()
