"""What an output was made with, stored beside it: enough to make it again and to know what TeaCache did.

PNG images carry it in text chunks (media.save_output); other files get a sidecar `<file>.json`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata as distributions
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..settings import METADATA_SETTINGS

if TYPE_CHECKING:
    from PIL.PngImagePlugin import PngInfo

    from ..engine.config import TeaCacheConfig
    from ..engine.stats import TeaCacheStats, Totals
    from ..models.catalog import Preset
    from .runner import GenerationRequest

# Every standard field, in the order written; `extra` adds others after them.
FIELDS = (
    "prompt",
    *METADATA_SETTINGS,  # the generation settings (teacli.settings), in the table's order
    "call_kwargs",
    "model",
    "model_id",
    "pipeline",
    "transformer",
    "policy",
    "policy_source",
    "budget",
    "plan",
    "thresh",
    "coefficients",
    "coefficients_source",
    "experts",
    "computed",
    "cached",
    "forced",
    "calls",
    "seconds",
    "teacli_version",
    "diffusers_version",
    "torch_version",
    "created",
)
# The PNG chunk holding the whole record as JSON; the fields above also get a chunk each, for readers.
PNG_KEY = "teacli"


def output_metadata(
    request: GenerationRequest | None = None,
    preset: Preset | None = None,
    *,
    config: TeaCacheConfig | Mapping[str, TeaCacheConfig] | None = None,
    stats: TeaCacheStats | Totals | None = None,
    seconds: float | None = None,
    pipe: Any = None,
    index: int = 0,
    extra: Mapping[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The metadata of one output, a JSON-able dict with every key of FIELDS (None where unknown).

    request: what was generated; output `index` of a --num-images batch has the seed request.seed + index.
    preset: the model's name, id and classes (the loaded `pipe`'s classes win, being what actually ran).
    config: the TeaCache config used (one per denoiser as a dict: the first is reported, the others under
        "experts"); without one, the preset's threshold and coefficients.
    stats: the TeaCache records (or their Totals): computed, cached, forced and calls.
    fields: any key of FIELDS given directly, replacing what was derived (e.g. coefficients_source).
    extra: further keys (lora, start, end, ...), added after the standard ones; they may not reuse one.
    """
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise TypeError(f"output_metadata() got unknown fields {unknown}; put them in extra")
    data: dict[str, Any] = dict.fromkeys(FIELDS)
    if request is not None:
        data.update(request_fields(request, index))
    if preset is not None:
        data.update(
            model=preset.name,
            model_id=preset.model,
            pipeline=preset.pipeline,
            transformer=preset.transformer,
            thresh=preset.thresh,
            coefficients=list(preset.coefficients),
            coefficients_source=preset.coefficients_source,
        )
    if pipe is not None:
        data["pipeline"] = type(pipe).__name__
        transformer = getattr(pipe, "transformer", None)
        if transformer is not None:
            data["transformer"] = type(transformer).__name__
    if config is not None:
        data.update(_config_fields(config))
    if stats is not None:
        totals = getattr(stats, "totals", stats)
        data.update(totals.to_dict())
    data.update(
        seconds=seconds,
        teacli_version=_version("teacli"),
        diffusers_version=_version("diffusers"),
        torch_version=_version("torch"),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    data.update(fields)
    if extra:
        clashes = sorted(set(extra) & set(FIELDS))
        if clashes:
            raise ValueError(f"extra metadata may not replace standard fields {clashes}; pass them as fields")
        data.update(extra)
    return jsonable(data)


def request_fields(request: GenerationRequest, index: int = 0) -> dict[str, Any]:
    """What was asked for output `index` (its own seed): the prompt, every setting of METADATA_SETTINGS, extras."""
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    fields = {name: getattr(request, name) for name in METADATA_SETTINGS}
    fields.update(
        prompt=request.prompt,
        seed=request.seed + index,  # what a single run needs to make this output again
        call_kwargs=dict(request.extra) or None,
    )
    return fields


def _config_fields(config: Any) -> dict[str, Any]:
    from .policy import policy_of

    def rule(one: Any) -> dict[str, Any]:
        return dict(thresh=one.thresh, coefficients=list(one.coefficients), coefficients_source=one.coefficients_source)

    def policy(one: Any) -> dict[str, Any]:
        plan = one.plan
        if plan is None:
            return dict(policy=policy_of(None), policy_source=one.coefficients_source, budget=None, plan=None)
        return dict(policy=policy_of(plan), policy_source=plan.source, budget=plan.budget, plan=plan.timeline())

    def describe(one: Any) -> dict[str, Any]:
        """A plan's fields, or the rule's threshold and coefficients (the other side None, so nothing misleads)."""
        if one.plan is None:
            return rule(one)
        return {"policy": policy_of(one.plan), "budget": one.plan.budget, "plan": one.plan.timeline()}

    if not isinstance(config, Mapping):
        main, experts = config, {}
    else:
        names = list(config)
        main = config["transformer"] if "transformer" in config else config[names[0]]
        experts = {name: describe(one) for name, one in config.items() if one is not main}
    fields = {**policy(main), **(rule(main) if main.plan is None else dict.fromkeys(rule(main)))}
    return {**fields, **({"experts": experts or None} if isinstance(config, Mapping) else {})}


def _version(distribution: str) -> str | None:
    if distribution == "teacli":
        from .. import __version__

        return __version__
    try:
        return distributions.version(distribution)
    except distributions.PackageNotFoundError:
        return None


def jsonable(value: Any) -> Any:
    """Plain JSON types: tuples as lists, paths and unknown objects as text, non-finite floats as None
    (strict JSON has no NaN or Infinity)."""
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(item) for item in value]
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy and torch scalars
        return jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    return str(value)


def to_json(metadata: Mapping[str, Any]) -> str:
    return json.dumps(metadata, indent=2, allow_nan=False)


def parameters_line(metadata: Mapping[str, Any]) -> str:
    """The "parameters" text of A1111-style images, which many image viewers and ComfyUI readers show:
    the prompt, a "Negative prompt:" line, then "Key: value" pairs."""
    lines = [str(metadata.get("prompt") or "")]
    if metadata.get("negative_prompt"):
        lines.append(f"Negative prompt: {metadata['negative_prompt']}")
    width, height = metadata.get("width"), metadata.get("height")
    size = f"{width}x{height}" if width and height else None
    pairs = {
        "Steps": metadata.get("steps"),
        "CFG scale": metadata.get("guidance"),
        "True CFG scale": metadata.get("true_cfg"),
        "Seed": metadata.get("seed"),
        "Size": size,
        "Model": metadata.get("model"),
        "TeaCache policy": metadata.get("policy"),
        "TeaCache budget": metadata.get("budget"),
        "TeaCache thresh": metadata.get("thresh"),
        "TeaCache coefficients": metadata.get("coefficients_source"),
        "TeaCache computed": metadata.get("computed"),
        "TeaCache cached": metadata.get("cached"),
        "Version": f"teacli {metadata['teacli_version']}" if metadata.get("teacli_version") else None,
    }
    lines.append(", ".join(f"{key}: {_quoted(value)}" for key, value in pairs.items() if value is not None))
    return "\n".join(lines)


def _quoted(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return json.dumps(text) if any(mark in text for mark in ',:"\n') else text


def png_text(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The PNG text chunks: the whole record as JSON under "teacli", each known field as its own chunk
    (lists and mappings as JSON), and the "parameters" summary."""
    chunks = {PNG_KEY: to_json(metadata)}
    for key in FIELDS:
        value = metadata.get(key)
        if value is not None:
            chunks[key] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    chunks["parameters"] = parameters_line(metadata)
    return chunks


def png_info(metadata: Mapping[str, Any]) -> PngInfo:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, text in png_text(metadata).items():
        # tEXt holds Latin-1 only; iTXt holds UTF-8, so any prompt survives.
        info.add_itxt(key, text) if key == PNG_KEY else info.add_text(key, text)
    return info
