"""teacli generate --prompts FILE: one output per prompt, resumable, split between the processes of torchrun or
accelerate launch; rank 0 merges the manifest and prints the one report."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from ._app import (
    EXIT_USER_ERROR,
    CLIError,
    ReportConsole,
    interrupt_exit_code,
    print_error,
    print_json,
    print_warning,
    stderr,
    user_error_types,
)
from ._options import Device, DType

# A JSONL key -> the option whose pipeline argument it sets (see _session.OPTION_ARGUMENTS).
PROMPT_KEY_OPTIONS = {
    "guidance": "--guidance",
    "height": "--height",
    "width": "--width",
    "negative_prompt": "--negative-prompt",
    "frames": "--frames",
}


def generate_prompts(
    prompts: Path,
    preset: Any,
    *,
    out_dir: Path | None,
    manifest: Path | None,
    thresh: float | None,
    budget: str | None,
    policy: str,
    coefficients: tuple[float, ...] | None,
    loading: Any,
    caching: Any,
    steps: int | None,
    seed: int,
    guidance: float | None,
    height: int | None,
    width: int | None,
    image: Path | None,
    negative_prompt: str | None,
    true_cfg: float | None,
    frames: int | None,
    fps: float | None,
    overwrite: bool,
    device: Device,
    dtype: DType,
    json_report: bool,
    strict: bool,
) -> None:
    """One output per prompt of `prompts`, recorded in the manifest; under torchrun or accelerate launch each
    process makes the prompts i with i % world_size == rank and rank 0 merges the manifest and reports."""
    import logging
    import time
    import warnings

    from ..batch.distributed import DistributedError, launch_from_env

    started = time.perf_counter()
    try:
        launch = launch_from_env()
    except DistributedError as error:
        raise CLIError(str(error)) from None
    if not launch.is_main:
        # Only rank 0 reports; the others say nothing but their own errors.
        logging.getLogger("teacli").setLevel(logging.ERROR)
        warnings.simplefilter("ignore")
    try:
        work = _prepare_prompts(
            prompts, preset, launch, out_dir=out_dir, manifest=manifest, thresh=thresh, budget=budget, policy=policy,
            caching=caching, steps=steps, seed=seed,
            guidance=guidance, height=height, width=width, image=image, negative_prompt=negative_prompt,
            true_cfg=true_cfg, frames=frames, fps=fps, overwrite=overwrite, device=device, strict=strict,
        )  # fmt: skip
    except (CLIError, *user_error_types()):
        if launch.is_main:
            raise
        raise typer.Exit(EXIT_USER_ERROR) from None  # every rank sees the same arguments and files: rank 0 says it
    work.update(coefficients=coefficients, loading=loading, caching=caching, dtype=dtype, started=started)
    _run_prompts(work, json_report)


def _prepare_prompts(prompts: Path, preset: Any, launch: Any, **given: Any) -> dict[str, Any]:
    """Everything checked and decided before any process waits for another or loads the model."""
    from ..batch.distributed import DistributedError, pick_backend, rank_device, timeout_from_env
    from ..batch.prompt_runs import job_settings, read_prompt_jobs
    from ..generation.media import MediaKind, default_suffix
    from ..generation.output import OutputError, check_writable
    from ..generation.runner import GenerationRequest
    from ._checks import check_rule_options, check_settings, chosen_warning, run_policy, schedule_warning
    from ._session import check_pipeline_takes, input_image, pipeline_media

    jobs = read_prompt_jobs(prompts, given["seed"])
    check_pipeline_takes(
        preset,
        guidance=given["guidance"],
        height=given["height"],
        width=given["width"],
        negative_prompt=given["negative_prompt"],
        image=given["image"],
        frames=given["frames"],
    )
    _check_prompt_options(preset, jobs, prompts)
    kind = pipeline_media(preset)
    if kind is not MediaKind.video:
        if given["fps"] is not None:
            raise CLIError(f"{preset.name} makes {kind.value}s, not videos; drop --fps")
        with_fps = next((job for job in jobs if "fps" in job.options), None)
        if with_fps is not None:
            raise CLIError(f"{prompts} line {with_fps.line}: {preset.name} makes {kind.value}s, not videos; drop 'fps'")
    source_image = input_image(preset, given["image"])

    requests, policies, settings = {}, {}, {}
    for job in jobs:
        options = dict(job.options)
        job_thresh = options.pop("thresh", given["thresh"])
        values = {key: given[key] for key in ("steps", "guidance", "height", "width", "negative_prompt", "true_cfg")}
        values.update(frames=given["frames"], fps=given["fps"])
        values.update(options)
        request = GenerationRequest.from_preset(preset, job.prompt, seed=job.seed, image=source_image, **values)
        if kind is not MediaKind.video:  # a preset's frames or fps mean nothing to an image or sound model
            request = replace(request, frames=None, fps=None)
        requests[job.index] = request
        asked = {"policy": given["policy"], "thresh": job_thresh, "budget": given["budget"]}
        if "thresh" in job.options:  # a line's thresh asks for TeaCache's rule, whatever the command's policy
            asked.update(policy="teacache", budget=None)
        policies[job.index] = run_policy(preset, request.steps, **asked)
        check_rule_options(policies[job.index], given["caching"])
        settings[job.index] = job_settings(request, preset.name, policies[job.index])
    warned = [schedule_warning(steps) for steps in sorted({r.steps for r in requests.values()})]
    warned += list(dict.fromkeys(chosen_warning(policy, preset) for policy in policies.values()))
    if launch.is_main:
        check_settings(warned, given["strict"])
    elif given["strict"] and any(warned):
        raise typer.Exit(EXIT_USER_ERROR)  # rank 0 says why

    out_dir = given["out_dir"] if given["out_dir"] is not None else Path.cwd()
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out-dir {out_dir} is a file; give a folder (it is made if missing)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or error
        raise CLIError(f"--out-dir {out_dir} cannot be made ({reason}); choose another folder") from None
    manifest = given["manifest"] if given["manifest"] is not None else out_dir / "manifest.jsonl"
    try:
        check_writable(manifest, overwrite=True, kind="manifest")
    except OutputError as error:
        raise CLIError(str(error)) from None
    if manifest.exists() and manifest.resolve() == Path(prompts).resolve():
        raise CLIError(f"--manifest {manifest} is the prompts file itself; pick another --manifest")
    device = rank_device(launch, given["device"].value)
    if launch.distributed:
        try:  # the launch settings teacli reads, checked before any process waits for another
            pick_backend(launch, device)
            timeout_from_env()
        except DistributedError as error:
            raise CLIError(str(error)) from None
    return dict(
        prompts=prompts,
        preset=preset,
        launch=launch,
        jobs=jobs,
        requests=requests,
        policies=policies,
        settings=settings,
        out_dir=out_dir,
        manifest=manifest,
        suffix=default_suffix(kind),
        kind=kind,
        device=device,
        overwrite=given["overwrite"],
    )


def _check_prompt_options(preset: Any, jobs: list[Any], prompts: Path) -> None:
    """A JSONL line's options must suit the pipeline too; the error names the line and the key."""
    from ._session import OPTION_ARGUMENTS, check_pipeline_takes

    for job in jobs:
        for key, option in PROMPT_KEY_OPTIONS.items():
            if key not in job.options:
                continue
            try:
                check_pipeline_takes(preset, **{option.lstrip("-").replace("-", "_"): job.options[key]})
            except CLIError:
                argument = OPTION_ARGUMENTS[option]
                raise CLIError(
                    f"{prompts} line {job.line}: {preset.name} ({preset.pipeline}) takes no {argument}; drop '{key}'"
                ) from None


# What an output's metadata must match for a run to take it as its own unrecorded output (sizes are recorded as
# made, which the pipeline may have rounded, so they are not compared).
MADE_WITH = ("model", "steps", "guidance", "true_cfg", "negative_prompt", "thresh", "budget")


def _made_for(path: Path, job: Any, settings: Any) -> bool:
    """Whether the file in the way is an earlier, unrecorded output of this prompt (a run stopped between
    writing it and recording it): its metadata names this prompt, seed and settings. Anything else is the
    user's file, replaced only with --overwrite."""
    from ..generation.media import read_metadata
    from ..generation.output import OutputError

    try:
        metadata = read_metadata(path)
    except (OutputError, OSError, ValueError):
        return False
    if metadata.get("prompt") != job.prompt or metadata.get("seed") != job.seed:
        return False
    return all(metadata.get(key) == settings.get(key) for key in MADE_WITH)


def _run_prompts(work: dict[str, Any], json_report: bool) -> None:
    from ..batch.distributed import DistributedError, process_group
    from ..batch.prompt_runs import ManifestWriter, merge_manifest, part_path, plan_jobs

    launch, manifest = work["launch"], work["manifest"]
    made: list[dict[str, Any]] = []
    try:
        with process_group(launch, work["device"]) as group:
            # Each rank plans the whole file (the same files give the same plan), then all agree before any
            # writes: a rank that cannot go on stops every rank here instead of leaving them waiting.
            error = None
            try:
                plan = plan_jobs(
                    work["jobs"],
                    manifest,
                    work["out_dir"],
                    work["suffix"],
                    lambda job: work["settings"][job.index],
                    overwrite=work["overwrite"],
                    made_for=_made_for,
                )
            except (CLIError, *user_error_types()) as failure:
                error = str(failure)
            errors = [(rank, message) for rank, message in enumerate(group.gather(error)) if message]
            if errors:
                _raise_for_ranks(errors, launch)
            mine = plan.shard(launch.rank, launch.world_size)
            writer_path = part_path(manifest, launch.rank) if launch.distributed else manifest
            error, loaded = None, False
            if mine.todo:
                loaded = True
                try:
                    with ManifestWriter(writer_path) as writer:
                        _make(work, mine, writer, made, group.heartbeat)
                except (CLIError, *user_error_types()) as failure:
                    error = str(failure)
                except Exception as failure:  # noqa: BLE001 - reported by rank 0, so no rank waits for this one
                    if not launch.distributed:
                        raise
                    error = f"{type(failure).__name__}: {failure}"
            try:
                group.wait_for_others()
            except DistributedError as failure:
                if launch.is_main:  # what the others finished is in their part files: keep it in the manifest
                    merge_manifest(manifest, made)
                raise CLIError(f"rank {launch.rank}: {failure}") from None
            status = {
                "rank": launch.rank,
                "device": str(work["device"]),
                "made": made,
                "skipped": len(mine.skipped),
                "loaded": loaded,
                "error": error,
            }
            statuses = group.gather(status)
            if launch.is_main and (launch.distributed or any(s["made"] for s in statuses)):
                merge_manifest(manifest, [entry for s in statuses for entry in s["made"]])
            if launch.distributed:
                group.gather(None)  # the merged manifest holds every rank's lines before any part is removed
                part_path(manifest, launch.rank).unlink(missing_ok=True)
    except KeyboardInterrupt as interrupt:
        if launch.is_main:
            where = manifest if not launch.distributed else f"{manifest} and its part files"
            print_error(
                f"interrupted; {len(made)} output(s) of this process are recorded in {where}; "
                "run the same command again to make the rest"
            )
        raise typer.Exit(interrupt_exit_code(interrupt)) from None
    if launch.is_main:
        _report(work, statuses, group.backend, json_report)
    errors = [(s["rank"], s["error"]) for s in statuses if s["error"]]
    if errors:
        _raise_for_ranks(errors, launch, done=" (the outputs made are recorded; run again to make the rest)")


def _raise_for_ranks(errors: list[tuple[int, str]], launch: Any, done: str = "") -> None:
    """Rank 0 prints the first rank's error as the one line; every rank exits with the user-error code."""
    if not launch.is_main:
        raise typer.Exit(EXIT_USER_ERROR)
    rank, message = errors[0]
    prefix = f"rank {rank}: " if launch.distributed else ""
    others = f" (and {len(errors) - 1} more rank(s) failed)" if len(errors) > 1 else ""
    raise CLIError(f"{prefix}{message}{others}{done}")


def _make(work: dict[str, Any], plan: Any, writer: Any, made: list[dict[str, Any]], heartbeat: Any) -> None:
    """This rank's prompts, one after the other, on one loaded pipeline; each starts from a reset TeaCache."""
    from ..batch.prompt_runs import CacheKeeper, manifest_entry, output_name
    from ..generation.media import save_output
    from ..generation.metadata import output_metadata
    from ..generation.preparation import prepare_pipeline
    from ..generation.report import estimated_speedup
    from ..generation.runner import fit_size, made_frames
    from ..models.loading import pick_dtype
    from ._session import Session

    preset, launch, device = work["preset"], work["launch"], work["device"]
    dtype = pick_dtype(work["dtype"].value, device)
    if launch.is_main:
        with stderr.status(f"loading {preset.name} on {device} ..."):
            pipe = prepare_pipeline(preset, device, dtype, work["loading"])
    else:
        pipe = prepare_pipeline(preset, device, dtype, work["loading"])
    heartbeat()  # loading counts as progress for the processes waiting on this one
    session = Session(preset, pipe, work["coefficients"], work["caching"])
    keeper = CacheKeeper(pipe)
    warned: set[str] = set()

    def warn_once(note: str | None) -> None:  # a size or frame count rounded alike for every prompt: say it once
        if note is not None and note not in warned and launch.is_main:
            warned.add(note)
            print_warning(note)

    try:
        for number, job in enumerate(plan.todo, start=1):
            request, size_note = fit_size(pipe, work["requests"][job.index])
            warn_once(size_note)
            chosen = work["policies"][job.index]
            config = session.config(chosen.thresh, plan=chosen.plan)
            stats = keeper.fresh(config).stats

            def counts(stats: Any = stats) -> tuple[int, int]:
                return stats.computed, len(stats.records)

            label = f"prompt {job.index} ({number}/{len(plan.todo)})" if launch.is_main else None
            run = _measure(pipe, request, counts, heartbeat, label)
            request, frames_note = made_frames(request, run.output)
            warn_once(frames_note)
            path = work["out_dir"] / output_name(job, work["suffix"])
            metadata = output_metadata(
                request,
                preset,
                config=config,
                stats=stats,
                seconds=run.seconds,
                pipe=pipe,
                extra={
                    "load": work["loading"].to_dict(),
                    "cache": work["caching"].given(),
                    "prompts": {"file": str(work["prompts"]), "index": job.index, "rank": launch.rank},
                },
            )
            save_output(run.output, path, metadata, overwrite=job.index in plan.replace)
            entry = manifest_entry(
                job,
                path,
                work["manifest"],
                work["settings"][job.index],
                stats.totals.to_dict(),
                run.seconds,
                rank=launch.rank,
                device=str(device),
                estimated_speedup=estimated_speedup(stats, run.seconds),
            )
            writer.append(entry)
            made.append(entry)
            heartbeat()
    finally:
        keeper.close()


def _measure(pipe: Any, request: Any, counts: Any, heartbeat: Any, label: str | None) -> Any:
    """One measured generation (measure.measure_generation, as bench and generate PROMPT measure); every step
    tells the other processes this one is alive. A progress bar with a label (rank 0)."""
    from ..generation.measure import measure_generation
    from ._session import step_progress

    if label is None:
        return measure_generation(pipe, request, counts, on_step=lambda _step: heartbeat())
    with step_progress(label, request.steps) as progress:
        task = progress.add_task(label, total=request.steps)

        def on_step(step: int) -> None:
            progress.update(task, completed=step + 1)
            heartbeat()

        return measure_generation(pipe, request, counts, on_step=on_step)


def _report(work: dict[str, Any], statuses: list[dict[str, Any]], backend: str | None, json_report: bool) -> None:
    """One table for the whole run (a row per rank), and with --json the same as JSON on stdout."""
    import time

    from rich.table import Table

    from ..batch.prompt_runs import summarize

    made = [entry for status in statuses for entry in status["made"]]
    totals = summarize(made)
    skipped = sum(status["skipped"] for status in statuses)
    launch = work["launch"]
    wall = time.perf_counter() - work["started"]
    ranks = []
    for status in statuses:
        counts = summarize(status["made"])
        ranks.append(
            {
                "rank": status["rank"],
                "device": status["device"],
                "made": len(status["made"]),
                "skipped": status["skipped"],
                "model_loaded": status["loaded"],
                "error": status["error"],
                **{key: counts[key] for key in ("computed", "forced", "cached", "calls", "seconds")},
                "estimated_speedup": counts["estimated_speedup"],
            }
        )
    summary = {
        "model": work["preset"].name,
        "prompts_file": str(work["prompts"]),
        "prompts": len(work["jobs"]),
        "made": len(made),
        "skipped": skipped,
        "failed": len(work["jobs"]) - len(made) - skipped,
        "world_size": launch.world_size,
        "backend": backend,
        "out_dir": str(work["out_dir"]),
        "manifest": str(work["manifest"]),
        "seconds": wall,
        "generation_seconds": totals["seconds"],
        "totals": {key: totals[key] for key in ("computed", "forced", "cached", "calls")},
        "estimated_speedup": totals["estimated_speedup"],
        "ranks": ranks,
        "outputs": [str(work["manifest"].parent / entry["file"]) for entry in sorted(made, key=lambda e: e["index"])],
    }
    console = ReportConsole(stderr=json_report)
    table = Table(
        title=f"{work['preset'].name}: {len(work['jobs'])} prompts from {work['prompts']}",
        caption="computed / forced (first and last steps, cache window) / cached transformer calls of the outputs "
        "made now; speedup: estimate from per-call times",
    )
    for column in ("rank", "device", "made", "skipped", "computed", "forced", "cached", "calls", "seconds", "speedup"):
        table.add_column(column, justify="left" if column in ("rank", "device") else "right")

    def speedup(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"

    for row in ranks:
        table.add_row(
            str(row["rank"]), row["device"], str(row["made"]), str(row["skipped"]), str(row["computed"]),
            str(row["forced"]), str(row["cached"]), str(row["calls"]), f"{row['seconds']:.2f}",
            speedup(row["estimated_speedup"]),
        )  # fmt: skip
    if len(ranks) > 1:
        table.add_row(
            "total", "", str(len(made)), str(skipped), *(str(totals[k]) for k in ("computed", "forced", "cached")),
            str(totals["calls"]), f"{totals['seconds']:.2f}", speedup(totals["estimated_speedup"]), style="bold",
        )  # fmt: skip
    console.print(table)
    console.print(
        f"made {len(made)}, skipped {skipped} already in the manifest, of {len(work['jobs'])} prompts in "
        f"{wall:.1f} s ({launch.world_size} process{'es' if launch.world_size > 1 else ''})",
        highlight=False,
    )
    console.print(f"outputs in {work['out_dir']}; manifest {work['manifest']}", highlight=False)
    if json_report:
        print_json(summary)
