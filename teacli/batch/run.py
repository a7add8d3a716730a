"""`--prompts` as a library call, its second half: `run_prompts(prepare_prompts(PromptsSpec(...)))` makes the
outputs of a prepared run on this process's share of the prompts and returns rank 0's PromptsSummary.

Each process loads the pipeline once and makes its prompts one after the other, each from a reset TeaCache;
every finished output is a whole manifest line at once, so an interrupted run is resumed by running it again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..errors import TeacliError
from ..generation import measure
from ..generation.caching import teacache_configs
from ..generation.media import save_output
from ..generation.metadata import output_metadata
from ..generation.preparation import prepare_pipeline
from ..generation.progress import Progress
from ..generation.report import estimated_speedup
from ..generation.runner import fit_size, made_frames
from ..models.loading import pick_dtype
from .distributed import DistributedError, Launch, ProcessGroup, process_group
from .manifest import ManifestWriter, merge_manifest, part_path
from .prepare import PreparedPrompts, made_for
from .prompt_runs import CacheKeeper, Plan, manifest_entry, output_name, plan_jobs, summarize


@dataclass
class RankStatus:
    """What one process did, gathered by rank 0."""

    rank: int
    device: str
    made: list[dict[str, Any]]
    skipped: int
    loaded: bool
    error: str | None


@dataclass
class PromptsSummary:
    """The whole run as rank 0 reports it (to_dict: the `--json` report)."""

    model: str
    prompts_file: str
    prompts: int
    made: int
    skipped: int
    failed: int
    world_size: int
    backend: str | None
    out_dir: str
    manifest: str
    seconds: float
    generation_seconds: float
    totals: dict[str, int]
    estimated_speedup: float | None
    ranks: list[dict[str, Any]]
    outputs: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


class PromptsFailed(TeacliError):
    """Some prompts could not be made; those made are recorded. `summary` is rank 0's report of the run, if any."""

    def __init__(self, message: str, summary: PromptsSummary | None = None) -> None:
        super().__init__(message)
        self.summary = summary


def run_prompts(prepared: PreparedPrompts, progress: Progress | None = None) -> PromptsSummary | None:
    """Make this process's prompts that the manifest does not record yet; rank 0 merges the manifest and returns
    the summary (other ranks None). PromptsFailed when a prompt or a rank failed: what was made is recorded."""
    progress = progress or Progress()
    launch = prepared.launch
    with process_group(launch, prepared.device) as group:
        mine = _agree_on_plan(prepared, group)
        status = _make_share(prepared, mine, group, progress)
        statuses = _finish(prepared, group, status)
    summary = _summary(prepared, statuses, group.backend) if launch.is_main else None
    errors = [(status.rank, status.error) for status in statuses if status.error]
    if errors:
        _raise_for_ranks(errors, launch, summary, " (the outputs made are recorded; run again to make the rest)")
    return summary


def _agree_on_plan(prepared: PreparedPrompts, group: ProcessGroup) -> Plan:
    """Each rank plans the whole file (the same files give the same plan), then all agree before any writes: a
    rank that cannot go on stops every rank here instead of leaving them waiting. This rank's share."""
    error, plan = None, None
    try:
        plan = plan_jobs(
            prepared.jobs,
            prepared.manifest,
            prepared.out_dir,
            prepared.suffix,
            lambda job: prepared.settings[job.index],
            overwrite=prepared.spec.overwrite,
            made_for=made_for,
        )
    except TeacliError as failure:
        error = str(failure)
    errors = [(rank, message) for rank, message in enumerate(group.gather(error)) if message]
    if errors or plan is None:
        _raise_for_ranks(errors, prepared.launch)
    return plan.shard(prepared.launch.rank, prepared.launch.world_size)


def _make_share(prepared: PreparedPrompts, mine: Plan, group: ProcessGroup, progress: Progress) -> RankStatus:
    launch = prepared.launch
    writer_path = part_path(prepared.manifest, launch.rank) if launch.distributed else prepared.manifest
    error = None
    if mine.todo:
        try:
            with ManifestWriter(writer_path) as writer:
                _make(prepared, mine, writer, group.heartbeat, progress)
        except TeacliError as failure:
            error = str(failure)
        except Exception as failure:  # noqa: BLE001 - reported by rank 0, so no rank waits for this one
            if not launch.distributed:
                raise
            error = f"{type(failure).__name__}: {failure}"
    made = list(prepared.made)
    return RankStatus(launch.rank, str(prepared.device), made, len(mine.skipped), bool(mine.todo), error)


def _finish(prepared: PreparedPrompts, group: ProcessGroup, status: RankStatus) -> list[RankStatus]:
    """Wait for every rank, gather what each did, and (rank 0) merge the manifest."""
    launch, manifest = prepared.launch, prepared.manifest
    try:
        group.wait_for_others()
    except DistributedError as failure:
        if launch.is_main:  # what the others finished is in their part files: keep it in the manifest
            merge_manifest(manifest, prepared.made)
        raise PromptsFailed(f"rank {launch.rank}: {failure}") from None
    statuses = group.gather(status)
    if launch.is_main and (launch.distributed or any(s.made for s in statuses)):
        merge_manifest(manifest, [entry for s in statuses for entry in s.made])
    if launch.distributed:
        group.gather(None)  # the merged manifest holds every rank's lines before any part is removed
        part_path(manifest, launch.rank).unlink(missing_ok=True)
    return statuses


def _raise_for_ranks(
    errors: list[tuple[int, str]], launch: Launch, summary: PromptsSummary | None = None, done: str = ""
) -> None:
    """Rank 0 raises the first rank's error as the one line; the other ranks raise with no message (rank 0
    says it)."""
    if not launch.is_main:
        raise PromptsFailed("")
    rank, message = errors[0]
    prefix = f"rank {rank}: " if launch.distributed else ""
    others = f" (and {len(errors) - 1} more rank(s) failed)" if len(errors) > 1 else ""
    raise PromptsFailed(f"{prefix}{message}{others}{done}", summary)


def _make(prepared: PreparedPrompts, plan: Plan, writer: ManifestWriter, heartbeat: Any, progress: Progress) -> None:
    """This rank's prompts, one after the other, on one loaded pipeline; each starts from a reset TeaCache."""
    spec, preset, launch, device = prepared.spec, prepared.preset, prepared.launch, prepared.device
    with progress.loading(f"loading {preset.name} on {device} ..."):
        pipe = prepare_pipeline(preset, device, pick_dtype(spec.dtype, device), spec.load)
    heartbeat()  # loading counts as progress for the processes waiting on this one
    keeper = CacheKeeper(pipe)
    warned: set[str] = set()

    def warn_once(note: str | None) -> None:  # a size or frame count rounded alike for every prompt: say it once
        if note is not None and note not in warned:
            warned.add(note)
            progress.warning(note)

    try:
        for number, job in enumerate(plan.todo, start=1):
            request, size_note = fit_size(pipe, prepared.requests[job.index])
            warn_once(size_note)
            chosen = prepared.policies[job.index]
            config = teacache_configs(
                preset, chosen.thresh, coefficients=spec.coefficients, plan=chosen.plan, cache=spec.cache
            )
            stats = keeper.fresh(config).stats
            label = f"prompt {job.index} ({number}/{len(plan.todo)})"
            run = _measure(
                pipe, request, lambda stats=stats: (stats.computed, len(stats.records)), heartbeat, label, progress
            )
            request, frames_note = made_frames(request, run.output)
            warn_once(frames_note)
            path = prepared.out_dir / output_name(job, prepared.suffix)
            metadata = output_metadata(
                request,
                preset,
                config=config,
                stats=stats,
                seconds=run.seconds,
                pipe=pipe,
                extra={
                    "load": spec.load.to_dict(),
                    "cache": spec.cache.given(),
                    "prompts": {"file": str(spec.prompts), "index": job.index, "rank": launch.rank},
                },
            )
            save_output(run.output, path, metadata, overwrite=job.index in plan.replace)
            entry = manifest_entry(
                job,
                path,
                prepared.manifest,
                prepared.settings[job.index],
                stats.totals.to_dict(),
                run.seconds,
                rank=launch.rank,
                device=str(device),
                estimated_speedup=estimated_speedup(stats, run.seconds),
            )
            writer.append(entry)
            prepared.made.append(entry)
            heartbeat()
    finally:
        keeper.close()


def _measure(pipe: Any, request: Any, counts: Any, heartbeat: Any, label: str, progress: Progress) -> measure.Run:
    """One measured generation (measure.measure_generation, as bench and generate PROMPT measure); every step
    tells the other processes this one is alive."""
    with progress.steps(label, request.steps) as on_step:

        def step(number: int) -> None:
            on_step(number)
            heartbeat()

        return measure.measure_generation(pipe, request, counts, on_step=step)


def _summary(prepared: PreparedPrompts, statuses: list[RankStatus], backend: str | None) -> PromptsSummary:
    """The whole run: a row per rank, and totals over the outputs made now."""
    made = [entry for status in statuses for entry in status.made]
    totals = summarize(made)
    skipped = sum(status.skipped for status in statuses)
    ranks = []
    for status in statuses:
        counts = summarize(status.made)
        ranks.append(
            {
                "rank": status.rank,
                "device": status.device,
                "made": len(status.made),
                "skipped": status.skipped,
                "model_loaded": status.loaded,
                "error": status.error,
                **{key: counts[key] for key in ("computed", "forced", "cached", "calls", "seconds")},
                "estimated_speedup": counts["estimated_speedup"],
            }
        )
    return PromptsSummary(
        model=prepared.preset.name,
        prompts_file=str(prepared.spec.prompts),
        prompts=len(prepared.jobs),
        made=len(made),
        skipped=skipped,
        failed=len(prepared.jobs) - len(made) - skipped,
        world_size=prepared.launch.world_size,
        backend=backend,
        out_dir=str(prepared.out_dir),
        manifest=str(prepared.manifest),
        seconds=time.perf_counter() - prepared.started,
        generation_seconds=totals["seconds"],
        totals={key: totals[key] for key in ("computed", "forced", "cached", "calls")},
        estimated_speedup=totals["estimated_speedup"],
        ranks=ranks,
        outputs=[str(prepared.manifest.parent / e["file"]) for e in sorted(made, key=lambda e: e["index"])],
    )
