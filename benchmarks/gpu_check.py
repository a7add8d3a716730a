"""The device check: one command that proves teacli on one CUDA GPU and measures it at FLUX.1-dev's size.

1. every extractor's fidelity proofs (tests/extractors, tiny models) on CUDA in bf16 and fp16 (gpu_fidelity.py);
2. a FLUX.1-dev-shaped transformer with random weights, bf16, 1024x1024, 28 steps: vanilla, teacache at 0, 0.25,
   0.4 and 0.6, eager and with regional torch.compile, with the blocks offloaded to the CPU, and on torchao int8
   weights as `--quantize torchao-int8` loads them (gpu_flux.py);
3. one JSON and one markdown table (GPU, torch, diffusers named) for docs/benchmarks.md.

    python benchmarks/gpu_check.py --out gpu-check          # one CUDA GPU: meant for under 8 min (not yet run)
    python benchmarks/gpu_check.py --smoke --out /tmp/smoke # the same code paths on the CPU in under a minute

Exit status: 0 when every proof passed and every row ran, 1 when something failed (the JSON says what), 2 when
there is no CUDA device and --smoke was not given.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

ALL_EXTRACTOR_TESTS = "tests/extractors/test_extractor_*.py"
SMOKE_EXTRACTOR_TESTS = "tests/extractors/test_extractor_flux.py"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the script runs")
    parser.add_argument("--out", type=Path, default=Path("gpu-check"), help="folder for gpu_check.json and .md")
    parser.add_argument("--skip-fidelity", action="store_true", help="skip part 1")
    parser.add_argument("--skip-flux", action="store_true", help="skip part 2")
    parser.add_argument(
        "--fidelity-tests", nargs="*", help="test files or node ids for part 1 (default: all extractors)"
    )
    parser.add_argument("--threshs", type=float, nargs="*", default=[0.25, 0.4, 0.6])
    parser.add_argument(
        "--offload-threshs", type=float, nargs="*", default=[0.4], help="teacache rows with offload (none: skip)"
    )
    parser.add_argument("--no-offload", action="store_true", help="no offloaded rows")
    parser.add_argument(
        "--int8-threshs", type=float, nargs="*", default=[0.4], help="teacache rows on torchao int8 weights"
    )
    parser.add_argument("--no-int8", action="store_true", help="no int8 rows (they need torchao)")
    parser.add_argument("--compile", default=None, help="torch.compile backend, or 'off' (default: inductor on CUDA)")
    parser.add_argument("--warmup-steps", type=int, default=2)
    options = parser.parse_args(argv)
    if options.compile is None:
        # Inductor on the CPU needs a C++ toolchain and minutes; the eager backend still traces every block.
        options.compile = "eager" if options.smoke else "inductor"
    if options.no_offload:
        options.offload_threshs = None
    if options.no_int8:
        options.int8_threshs = None
    return options


def environment(device) -> dict[str, Any]:
    import diffusers
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(gpu=properties.name, gpu_memory_gib=round(properties.total_memory / 2**30, 1))
    else:
        info.update(gpu=None, cpu=platform.processor() or platform.machine())
    return info


def fidelity_part(options: argparse.Namespace, device: str) -> list[dict[str, Any]]:
    from gpu_fidelity import ROOT, run_fidelity

    pattern = SMOKE_EXTRACTOR_TESTS if options.smoke else ALL_EXTRACTOR_TESTS
    paths = options.fidelity_tests or sorted(str(path.relative_to(ROOT)) for path in ROOT.glob(pattern))
    # The smoke run casts to bf16 on the CPU so the casting path is exercised; fp16 matmuls need CUDA there.
    dtypes = ["bfloat16"] if options.smoke else ["bfloat16", "float16"]
    return [run_fidelity(device, dtype, paths, options.out) for dtype in dtypes]


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    where = env.get("gpu") or f"CPU ({env.get('cpu')}, smoke run)"
    lines = [
        f"### Device check on {where}",
        "",
        f"torch {env['torch']} (CUDA {env['cuda']}), diffusers {env['diffusers']}, Python {env['python']}; "
        f"{report['date']}; {report['seconds']:.0f} s in all.",
        "",
    ]
    if report.get("fidelity"):
        lines += [
            "| fidelity proofs | dtype | passed | failed | skipped | seconds |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for run in report["fidelity"]:
            failed = ", ".join(name.split("::")[-1] for name in run["failed"]) or "0"
            lines.append(
                f"| tests/extractors on {run['device']} | {run['dtype']} | {run['passed']} | {failed} | "
                f"{run['skipped']} | {run['seconds']:.0f} |"
            )
        lines.append("")
    if report.get("flux_error"):
        lines += [f"FLUX.1-dev-shaped check failed before its first row: {report['flux_error']}", ""]
    flux = report.get("flux")
    if flux:
        lines += [
            f"FLUX.1-dev-shaped transformer, random weights ({_count(flux['parameters'])} parameters), "
            f"{flux['dtype']}, {flux['width']}x{flux['height']}, {flux['steps']} steps. Speedup against the vanilla "
            "row of the same compile, offload and int8 setting; ideal = calls / computed calls; efficiency = speedup / "
            "ideal; change = mean |latents - vanilla's| / mean |vanilla's| (random weights: a plumbing check, not "
            "a quality figure).",
            "",
            "| row | computed/total | seconds | speedup | ideal | efficiency | peak GiB | change |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += [_flux_line(row) for row in flux["rows"]]
        lines.append("")
    return "\n".join(lines)


def _count(parameters: int) -> str:
    return f"{parameters / 1e9:.2f} B" if parameters >= 1e8 else f"{parameters / 1e6:.2f} M"


def _flux_line(row: dict[str, Any]) -> str:
    if row["error"]:
        return f"| {row['name']} | failed: {row['error'].replace('|', '/')} | | | | | | |"

    def number(value, digits: int = 2) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    peak = None if row["peak_memory_bytes"] is None else row["peak_memory_bytes"] / 2**30
    return (
        f"| {row['name']} | {row['computed']}/{row['total']} | {row['seconds']:.2f} | {number(row['speedup'])} | "
        f"{number(row['ideal_speedup'])} | {number(row['efficiency'])} | {number(peak, 1)} | "
        f"{number(row['change_vs_vanilla'], 4)} |"
    )


def succeeded(report: dict[str, Any]) -> bool:
    fidelity_ok = all(run["ok"] for run in report.get("fidelity") or [])
    rows = (report.get("flux") or {}).get("rows") or []
    return fidelity_ok and not any(row["error"] for row in rows) and "flux_error" not in report


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    import torch

    if not options.smoke and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device here; run it on a GPU machine, or with --smoke for the CPU check",
            file=sys.stderr,
        )
        return 2
    from gpu_flux import FULL, SMOKE, flux_check

    device = torch.device("cpu") if options.smoke else torch.device("cuda", torch.cuda.current_device())
    options.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "smoke": options.smoke,
        "date": time.strftime("%Y-%m-%d"),
        "environment": environment(device),
    }
    if not options.skip_fidelity:
        report["fidelity"] = fidelity_part(options, device.type)
        _say(f"fidelity: {[(r['dtype'], r['passed'], len(r['failed'])) for r in report['fidelity']]}")
    if not options.skip_flux:
        shape, dtype = (SMOKE, torch.float32) if options.smoke else (FULL, torch.bfloat16)
        try:
            report["flux"] = flux_check(shape, device, dtype, options)
        except Exception as error:  # building the model or the inputs failed: say so, keep part 1's results
            report["flux_error"] = f"{type(error).__name__}: {error}"[:500]
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["ok"] = succeeded(report)
    (options.out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    (options.out / "gpu_check.md").write_text(markdown(report) + "\n")
    _say((options.out / "gpu_check.md").read_text())
    return 0 if report["ok"] else 1


def _say(text: str) -> None:
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
