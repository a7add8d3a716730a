"""`--prompts` as a library call, its first half: a PromptsSpec checked and decided (teacli.batch.run makes it).

One output per prompt of a prompts file, recorded in a manifest so a second run makes only what is missing. Under
torchrun or accelerate launch each process makes the prompts i with i % world_size == rank and rank 0 merges the
manifest and returns the one summary (the others return None). `prepare_prompts` checks everything before any
process waits for another or loads the model; `run_prompts` makes the outputs.
"""

from __future__ import annotations

import time
from dataclasses import KW_ONLY, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..generation.checks import (
    check_rule_options,
    check_settings,
    chosen_warning,
    schedule_warning,
    vocabulary_warning,
)
from ..generation.media import MediaKind, default_suffix, read_metadata
from ..generation.output import OutputError, check_writable
from ..generation.policy import Policy, choose_policy
from ..generation.preparation import CacheOptions, LoadOptions
from ..generation.progress import Progress
from ..generation.runner import GenerationError, GenerationRequest
from ..generation.session import check_fps, check_pipeline_takes, input_image, pipeline_media, resolve
from ..models.catalog import Preset
from ..models.memory import check_on_device
from ..settings import PIPELINE_CHECKED, SETTINGS, check_given, setting_fields
from .distributed import Launch, launch_from_env, pick_backend, rank_device, timeout_from_env
from .prompt_runs import PromptJob, job_settings, read_prompt_jobs
from .prompts import PromptsError


@dataclass(frozen=True)
@setting_fields(exclude=("num_images",))  # one output per prompt
class PromptsSpec:
    """A prompts file and how to make its outputs; None keeps the preset's value, a JSONL line's options win.
    Every generation setting of teacli.settings but num_images is a keyword-only field too (steps, seed, ...,
    image); prompt i gets seed + i unless its line gives one."""

    prompts: Path
    model: str | Preset | None = None
    out_dir: Path | None = None  # None: the current folder
    manifest: Path | None = None  # None: OUT_DIR/manifest.jsonl
    _: KW_ONLY  # the rest by name (a setting's place among the fields follows the table's order)
    thresh: float | None = None
    budget: str | int | None = None
    policy: str = "auto"
    coefficients: tuple[float, ...] | None = None
    cache: CacheOptions = field(default_factory=CacheOptions)
    load: LoadOptions = field(default_factory=LoadOptions)
    overwrite: bool = False
    device: str = "auto"
    dtype: str = "auto"
    strict: bool = False


@dataclass
class PreparedPrompts:
    """A prompts run decided: every prompt's request, policy and manifest settings, and where things go."""

    spec: PromptsSpec
    preset: Preset
    launch: Launch
    jobs: list[PromptJob]
    requests: dict[int, GenerationRequest]
    policies: dict[int, Policy]
    settings: dict[int, dict[str, Any]]
    out_dir: Path
    manifest: Path
    kind: MediaKind
    device: Any  # this rank's torch.device
    started: float = field(default_factory=time.perf_counter)
    made: list[dict[str, Any]] = field(default_factory=list)  # this process's manifest entries so far

    @property
    def suffix(self) -> str:
        return default_suffix(self.kind)

    def on_disk(self) -> str:
        """What an interrupted run leaves: this process's outputs so far, each recorded in the manifest."""
        where = self.manifest if not self.launch.distributed else f"{self.manifest} and its part files"
        return (
            f"{len(self.made)} output(s) of this process are recorded in {where}; "
            "run the same command again to make the rest"
        )


def prepare_prompts(
    spec: PromptsSpec, launch: Launch | None = None, progress: Progress | None = None
) -> PreparedPrompts:
    """Everything checked and decided before any process waits for another or loads the model; warnings go to
    `progress` (refused when strict). `launch`: this process's place in a torchrun launch (default: from the
    environment)."""
    launch = launch or launch_from_env()
    progress = progress or Progress()
    check_given({setting.name: getattr(spec, setting.name, None) for setting in SETTINGS}, GenerationError)
    preset = resolve(spec.model, offline=spec.load.offline)
    jobs = read_prompt_jobs(spec.prompts, spec.seed)
    check_pipeline_takes(preset, **{s.name: getattr(spec, s.name) for s in PIPELINE_CHECKED})
    _check_prompt_options(preset, jobs, spec.prompts)
    kind = pipeline_media(preset)
    check_fps(preset, kind, spec.fps)
    with_fps = next((job for job in jobs if "fps" in job.options), None)
    if kind is not MediaKind.video and with_fps is not None:
        raise PromptsError(
            f"{spec.prompts} line {with_fps.line}: {preset.name} makes {kind.value}s, not videos; drop 'fps'"
        )
    source_image = input_image(preset, spec.image)
    requests, policies, settings = {}, {}, {}
    for job in jobs:
        requests[job.index], policies[job.index] = _job_request(spec, preset, kind, job, source_image)
        settings[job.index] = job_settings(requests[job.index], preset.name, policies[job.index])
    warned = [schedule_warning(steps) for steps in sorted({r.steps for r in requests.values()})]
    warned += list(dict.fromkeys(chosen_warning(policy, preset) for policy in policies.values()))
    check_settings(warned, spec.strict, progress)
    check_settings([vocabulary_warning(preset, [job.prompt for job in jobs])], False, progress)
    out_dir, manifest = _places(spec)
    device = rank_device(launch, spec.device)
    check_on_device(spec.load.offload, spec.load.quantize, device)  # before any output or manifest is made
    if launch.distributed:  # the launch settings teacli reads, checked before any process waits for another
        pick_backend(launch, device)
        timeout_from_env()
    return PreparedPrompts(spec, preset, launch, jobs, requests, policies, settings, out_dir, manifest, kind, device)


def _job_request(
    spec: PromptsSpec, preset: Preset, kind: MediaKind, job: PromptJob, image: Any
) -> tuple[GenerationRequest, Policy]:
    """One prompt's request (the command's settings, its line's options over them) and its policy."""
    options = dict(job.options)
    thresh = options.pop("thresh", spec.thresh)
    values = {s.name: getattr(spec, s.name) for s in SETTINGS if s.in_prompts and s.name != "seed"}
    values.update(options)
    request = GenerationRequest.from_preset(preset, job.prompt, seed=job.seed, image=image, **values)
    if kind is not MediaKind.video:  # a preset's frames or fps mean nothing to an image or sound model
        request = replace(request, frames=None, fps=None)
    asked: dict[str, Any] = {"policy": spec.policy, "thresh": thresh, "budget": spec.budget}
    if "thresh" in job.options:  # a line's thresh asks for TeaCache's rule, whatever the command's policy
        asked.update(policy="teacache", budget=None)
    policy = choose_policy(preset, request.steps, **asked)
    check_rule_options(policy, spec.cache)
    return request, policy


def _check_prompt_options(preset: Preset, jobs: list[PromptJob], prompts: Path) -> None:
    """A JSONL line's options must suit the pipeline too; the error names the line and the key."""
    for job in jobs:
        for setting in PIPELINE_CHECKED:
            if setting.name not in job.options or not setting.in_prompts:
                continue
            try:
                check_pipeline_takes(preset, **{setting.name: job.options[setting.name]})
            except GenerationError:
                raise PromptsError(
                    f"{prompts} line {job.line}: {preset.name} ({preset.pipeline}) takes no {setting.arguments[0]}; "
                    f"drop '{setting.name}'"
                ) from None


def _places(spec: PromptsSpec) -> tuple[Path, Path]:
    """The output folder (made if missing) and the manifest, both checked."""
    out_dir = spec.out_dir if spec.out_dir is not None else Path.cwd()
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out-dir {out_dir} is a file; give a folder (it is made if missing)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or error
        raise OutputError(f"--out-dir {out_dir} cannot be made ({reason}); choose another folder") from None
    manifest = spec.manifest if spec.manifest is not None else out_dir / "manifest.jsonl"
    check_writable(manifest, overwrite=True, kind="manifest")
    if manifest.exists() and manifest.resolve() == Path(spec.prompts).resolve():
        raise OutputError(f"--manifest {manifest} is the prompts file itself; pick another --manifest")
    return out_dir, manifest


# What an output's metadata must match for a run to take it as its own unrecorded output (sizes are recorded as
# made, which the pipeline may have rounded, so they are not compared).
MADE_WITH = ("model", "steps", "guidance", "true_cfg", "negative_prompt", "thresh", "budget")


def made_for(path: Path, job: PromptJob, settings: Any) -> bool:
    """Whether the file in the way is an earlier, unrecorded output of this prompt (a run stopped between
    writing it and recording it): its metadata names this prompt, seed and settings. Anything else is the
    user's file, replaced only with overwrite."""
    try:
        metadata = read_metadata(path)
    except (OutputError, OSError, ValueError):
        return False
    if metadata.get("prompt") != job.prompt or metadata.get("seed") != job.seed:
        return False
    return all(metadata.get(key) == settings.get(key) for key in MADE_WITH)
