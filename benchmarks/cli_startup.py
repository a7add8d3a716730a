"""How long the commands that run no model take, as whole processes: `teacli --help`, `--version` and
`list-models` (table and JSON) should answer in well under a second, which they can only do without importing
torch or diffusers.

Each command runs as a fresh process (HF_HUB_OFFLINE=1, output discarded), the commands interleaved round by round
so a busy machine slows them alike; the table gives the median and the fastest of the runs, and whether the
process imported torch, diffusers or transformers (one more run under `python -X importtime`).

    python benchmarks/cli_startup.py --runs 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = (["--help"], ["--version"], ["list-models"], ["list-models", "--json"])
HEAVY = ("torch", "diffusers", "transformers")


def environment() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "80"}


def seconds(arguments: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "teacli", *arguments], env=environment(), check=True, capture_output=True)
    return time.perf_counter() - start


def heavy_imports(arguments: list[str]) -> list[str]:
    """Which of torch, diffusers and transformers the command imported, from `-X importtime`'s lines on stderr."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "teacli", *arguments],
        env=environment(),
        check=True,
        capture_output=True,
        text=True,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return [name for name in HEAVY if name in imported]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="processes per command")
    options = parser.parse_args()
    for arguments in COMMANDS:  # one untimed run each: the files in the page cache, the .pyc written
        seconds(arguments)
    timings: dict[str, list[float]] = {" ".join(arguments): [] for arguments in COMMANDS}
    for _ in range(options.runs):
        for arguments in COMMANDS:
            timings[" ".join(arguments)].append(seconds(arguments))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {options.runs} runs a command")
    print(f"{'command':<28} {'median s':>9} {'min s':>7}  imported")
    for arguments in COMMANDS:
        runs = timings[" ".join(arguments)]
        heavy = ", ".join(heavy_imports(arguments)) or "none of torch, diffusers, transformers"
        name = "teacli " + " ".join(arguments)
        print(f"{name:<28} {statistics.median(runs):>9.2f} {min(runs):>7.2f}  {heavy}")


if __name__ == "__main__":
    main()
