"""Many prompts in one run: the prompts file, one stable output name per prompt, and a JSONL manifest that
makes the run resumable and lets several processes (torchrun, accelerate launch) share the work.

A prompts file is plain text (one prompt a line) or JSONL (one object a line with "prompt" and optional
per-prompt options, PROMPT_OPTIONS). Prompt i (counted from 0 over the prompts, not the lines) gets the seed
base_seed + i unless its line gives one, and the file name `{i:05d}-{slug}-s{seed}{suffix}`: the same in every
run and on every rank, and never shared by two prompts.

The manifest has one JSON line per output. A single process appends to it as it goes; under torch.distributed
rank r appends to its own part file (manifest.rank{r}.jsonl) and rank 0 merges the parts at the end. Lines are
written whole (flushed and synced one at a time), so an interrupted run leaves only complete lines, and a
later line for the same index replaces an earlier one.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import limits
from ..generation.output import OutputError
from ..settings import BY_NAME, MANIFEST_SETTINGS, PROMPT_SETTINGS, limit_of
from .manifest import (  # noqa: F401 - the manifest's names, where callers have always found them
    ManifestError,
    ManifestWriter,
    entry_path,
    manifest_line,
    merge_manifest,
    parse_manifest_line,
    part_path,
    part_paths,
    read_manifest,
    recorded_entries,
    tail_kind,
)
from .prompts import PromptsError, prompts_text, read_prompts

SLUG_LENGTH = 40
# Per-prompt options a JSONL line may give (the generation settings teacli.settings lets a prompts line give,
# and TeaCache's threshold), each checked as the command line checks it.
PROMPT_OPTIONS = (*PROMPT_SETTINGS, "thresh")
# What an output was made with, recorded in the manifest and compared on resume.
SETTINGS = ("model", *MANIFEST_SETTINGS, "thresh")


@dataclass(frozen=True)
class PromptJob:
    """One prompt of a prompts file: its index among the prompts, its seed, and the options its line gave."""

    index: int
    prompt: str
    seed: int
    options: dict[str, Any] = field(default_factory=dict)  # per-prompt options (JSONL), never "prompt"/"seed"
    line: int | None = None  # line number in the prompts file, for messages

    def where(self, source: str | Path | None = None) -> str:
        place = f"line {self.line}" if self.line is not None else f"prompt {self.index}"
        return f"{source} {place}" if source is not None else place


# --- the prompts file ---------------------------------------------------------------------------------------


def read_prompt_jobs(path: str | Path, base_seed: int = 0) -> list[PromptJob]:
    """The prompts of a text or JSONL file, each with its index, seed and options; PromptsError names the line
    of any bad one. JSONL: a name ending .jsonl, or every line that is not blank or a '#' comment starts '{'."""
    path = Path(path)
    prompts = read_prompts(path)  # reading errors, UTF-8 and emptiness are checked there, with the same messages
    if path.suffix.lower() != ".jsonl" and not all(line.startswith("{") for line in prompts):
        if base_seed + len(prompts) - 1 > limits.MAX_SEED:
            raise PromptsError(
                f"--seed {base_seed} + {len(prompts) - 1} (one seed per prompt) is above {limits.MAX_SEED}; "
                "use a smaller --seed"
            )
        return [PromptJob(index, prompt, base_seed + index) for index, prompt in enumerate(prompts)]
    jobs = []
    for number, raw in enumerate(prompts_text(path).splitlines(), start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        jobs.append(parse_jsonl_line(text, index=len(jobs), line=number, base_seed=base_seed, source=path))
    return jobs


def parse_jsonl_line(text: str, *, index: int, line: int, base_seed: int = 0, source: Any = "--prompts") -> PromptJob:
    """One JSONL line as a PromptJob: "prompt" (required) and the PROMPT_OPTIONS, each checked."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise PromptsError(f"{source} line {line} is not valid JSON ({error.msg} at column {error.colno})") from None
    except RecursionError:
        raise PromptsError(f"{source} line {line} nests too deeply to be a prompt's line") from None
    if not isinstance(data, dict):
        raise PromptsError(f'{source} line {line} is not a JSON object; write {{"prompt": "a red fox", "seed": 1}}')
    unknown = [key for key in data if key != "prompt" and key not in PROMPT_OPTIONS]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, ("prompt", *PROMPT_OPTIONS), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise PromptsError(
            f"{source} line {line}: unknown key '{key}'; {hint}a line takes prompt, {', '.join(PROMPT_OPTIONS)}"
        )
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptsError(f'{source} line {line} needs "prompt": a non-empty string')
    check_unicode(prompt, f"{source} line {line}: 'prompt'")
    options = {}
    for key in PROMPT_OPTIONS:
        if data.get(key) is not None:  # null means "not given": the command line's value applies
            options[key] = check_option(key, data[key], f"{source} line {line}")
    seed = options.pop("seed", base_seed + index)
    if seed > limits.MAX_SEED:
        raise PromptsError(
            f"{source} line {line}: the seed {base_seed} + {index} is above {limits.MAX_SEED}; use a smaller --seed"
        )
    return PromptJob(index, prompt.strip(), seed, options, line)


def check_unicode(text: str, where: str) -> None:
    """JSON's \\ud800 escapes make strings no tokenizer can encode: refuse them with the line."""
    position = limits.unencodable(text)
    if position is not None:
        raise PromptsError(
            f"{where} holds a lone surrogate (U+{ord(text[position]):04X}), which is not text; fix the line"
        )


def bad_value(where: str, key: str, value: Any, wanted: str) -> PromptsError:
    return PromptsError(f"{where}: '{key}' must be {wanted}, got {limits.short(value)}")


def check_option(key: str, value: Any, where: str) -> Any:
    """One per-prompt option's value, or PromptsError saying what the key takes: the same ranges as the command
    line and presets (a setting's row in teacli.settings, else teacli.limits)."""
    if key in BY_NAME and BY_NAME[key].type is str:
        if not isinstance(value, str):
            raise bad_value(where, key, value, "a string")
        check_unicode(value, f"{where}: '{key}'")
        return value
    limit = limit_of(key)
    wanted = limit.problem(value)
    if wanted is not None:
        raise bad_value(where, key, value, wanted)
    return value if limit.integer else float(value)


# --- names ----------------------------------------------------------------------------------------------------


def slugify(text: str, length: int = SLUG_LENGTH) -> str:
    """Lower-case ASCII letters and digits joined by '-', at most `length` characters ("prompt" when none)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:length].rstrip("-") or "prompt"


def output_name(job: PromptJob, suffix: str) -> str:
    """The file name of a prompt's output: the index keeps duplicate prompts apart, the seed tells runs apart."""
    return f"{job.index:05d}-{slugify(job.prompt)}-s{job.seed}{suffix}"


# --- what is left to make -------------------------------------------------------------------------------------


@dataclass
class Plan:
    """Which prompts are made and which are skipped, decided before any model is loaded."""

    todo: list[PromptJob] = field(default_factory=list)
    skipped: list[tuple[PromptJob, dict[str, Any]]] = field(default_factory=list)  # with their manifest entries
    replace: set[int] = field(default_factory=set)  # indices whose existing file is replaced (leftover or --overwrite)

    def shard(self, rank: int, world_size: int) -> Plan:
        """This rank's share: prompt i goes to rank i % world_size."""
        return Plan(
            todo=[job for job in self.todo if job.index % world_size == rank],
            skipped=[(job, entry) for job, entry in self.skipped if job.index % world_size == rank],
            replace={index for index in self.replace if index % world_size == rank},
        )


def plan_jobs(
    jobs: Sequence[PromptJob],
    manifest: Path,
    out_dir: Path,
    suffix: str,
    settings_of: Callable[[PromptJob], Mapping[str, Any]],
    overwrite: bool = False,
    made_for: Callable[[Path, PromptJob, Mapping[str, Any]], bool] | None = None,
) -> Plan:
    """Skip the prompts the manifest (and its part files) records with the same index, prompt, seed and settings
    whose file still exists; make the rest. A recorded prompt that differs is a ManifestError: the manifest
    belongs to another prompts file or other settings. An existing file in the way of a prompt to make is an
    OutputError, unless `made_for(path, job, settings)` says it is an earlier, unrecorded output of that very prompt
    and settings (a run stopped between writing it and recording it) or `overwrite`; those are replaced. With
    overwrite nothing is skipped. The manifest is never one of the outputs."""
    recorded = recorded_entries(manifest)
    manifest_file = manifest.resolve()
    plan = Plan()
    for job in jobs:
        path = out_dir / output_name(job, suffix)
        if path.resolve() == manifest_file:
            raise OutputError(f"--manifest {manifest} is the output of prompt {job.index} too; pick another --manifest")
        entry = recorded.get(job.index)
        if entry is not None and not overwrite:
            check_entry(entry, job, settings_of(job), manifest)
            if entry_path(entry, manifest).is_file():
                plan.skipped.append((job, entry))
                continue
        if path.exists() or path.is_symlink():
            if not (overwrite or (made_for is not None and made_for(path, job, settings_of(job)))):
                raise OutputError(
                    f"{path} already exists and the manifest does not list it; pass --overwrite to replace it "
                    "or choose another --out-dir"
                )
            plan.replace.add(job.index)
        plan.todo.append(job)
    return plan


MANIFEST_ADVICE = "pick another --manifest or --out-dir, or pass --overwrite to make every prompt again"


def check_entry(entry: Mapping[str, Any], job: PromptJob, settings: Mapping[str, Any], manifest: Path) -> None:
    """A recorded entry for this index must be this prompt with this seed and settings."""
    if entry.get("prompt") != job.prompt:
        raise ManifestError(
            f"manifest {manifest} records prompt {job.index} as {json.dumps(entry.get('prompt'))[:60]}, "
            f"not {json.dumps(job.prompt)[:60]}: it belongs to another prompts file; {MANIFEST_ADVICE}"
        )
    if entry.get("seed") != job.seed:
        raise ManifestError(
            f"manifest {manifest} made prompt {job.index} with seed {entry.get('seed')}, not {job.seed}; "
            f"{MANIFEST_ADVICE}"
        )
    recorded = entry.get("settings") or {}
    for key, value in settings.items():
        if recorded.get(key) != value:
            raise ManifestError(
                f"manifest {manifest} made prompt {job.index} with {key} {json.dumps(recorded.get(key))}, "
                f"not {json.dumps(value)}; {MANIFEST_ADVICE}"
            )


# --- making them ----------------------------------------------------------------------------------------------


class CacheKeeper:
    """One TeaCache application reused across prompts: reset before each, so every prompt starts from an empty
    state and its own counts; applied anew only when a prompt's config differs (a per-prompt thresh)."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.handle: Any = None
        self.config: Any = None

    def fresh(self, config: Any) -> Any:
        from ..engine.apply import apply_teacache

        if self.handle is not None and self.config == config:
            self.handle.reset()
        else:
            self.close()
            self.handle = apply_teacache(self.pipe, config)
            self.config = config
        return self.handle

    def close(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


def manifest_entry(
    job: PromptJob,
    file: Path,
    manifest: Path,
    settings: Mapping[str, Any],
    totals: Mapping[str, int],
    seconds: float,
    *,
    rank: int = 0,
    device: str | None = None,
    estimated_speedup: float | None = None,
) -> dict[str, Any]:
    """One manifest line: what was asked (index, prompt, seed, the line's options, the settings), where it went
    (file, relative to the manifest's folder) and what TeaCache did (counts, seconds)."""
    try:
        name = file.resolve().relative_to(manifest.parent.resolve()).as_posix()
    except ValueError:
        name = str(file.resolve())
    return {
        "index": job.index,
        "prompt": job.prompt,
        "seed": job.seed,
        "options": dict(job.options),
        "settings": dict(settings),
        "file": name,
        "computed": totals["computed"],
        "cached": totals["cached"],
        "forced": totals["forced"],
        "calls": totals["calls"],
        "seconds": round(seconds, 4),
        "estimated_speedup": None if estimated_speedup is None else round(estimated_speedup, 4),
        "rank": rank,
        "device": device,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def job_settings(request: Any, model: str, policy: Any) -> dict[str, Any]:
    """The SETTINGS of one prompt's GenerationRequest and its teacli.generation.policy.Policy, as the manifest records
    them: TeaCache's rule by its threshold (as ever), a schedule by its policy and budget instead."""
    if policy.plan is None:
        values = {"model": model, "thresh": float(policy.thresh)}
    else:
        values = {"model": model, "thresh": None, "policy": policy.name, "budget": policy.budget}
    values.update({key: getattr(request, key) for key in SETTINGS if key not in values})
    return json.loads(json.dumps(values))  # as read back from JSON, so resume compares like with like


def summarize(entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Totals over manifest entries: counts, generation seconds and the speedup estimate over all of them."""
    entries = list(entries)
    totals = {key: sum(entry[key] for entry in entries) for key in ("computed", "forced", "cached", "calls")}
    seconds = sum(entry["seconds"] for entry in entries)
    estimated = [entry for entry in entries if entry.get("estimated_speedup")]
    speedup = None
    if estimated and seconds > 0:
        uncached = sum(entry["seconds"] * entry["estimated_speedup"] for entry in estimated)
        speedup = uncached / sum(entry["seconds"] for entry in estimated)
    return {"outputs": len(entries), **totals, "seconds": seconds, "estimated_speedup": speedup}
