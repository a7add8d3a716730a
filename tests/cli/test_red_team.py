"""A hostile user's table: each case runs the real CLI in a subprocess, in a folder holding the user's own files,
and must keep the promise docs/reliability.md and docs/errors.md make: one `error:` line on stderr (warnings and
log records aside), the documented exit code, no traceback, no file of the user's changed, no temporary file left,
nothing half-written.

The cases cover each class of failure issue 16 found (files teacli did not write, library exceptions, values
that pass a lower bound, damaged weights, signals, presets, peers); `python -m pytest -q tests/cli/test_red_team.py
-rA` prints the tally recorded in docs/reliability.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PROMPT = "a red circle"
FAST = ("--steps", "3")  # the default model (teacli-shapes, 64x64): a run takes a fraction of a second


# --- the user's folder ------------------------------------------------------------------------------------------

# Files the user owns in every case's folder; none may change. notes.txt and p.txt end without a newline, as a
# one-line file written by an editor often does (what a manifest cut short by an interruption also looks like).
USER_FILES = {
    "user.png": b"\x89PNG\r\n\x1a\n the user's picture",
    "notes.txt": b"my notes, one line without a newline",
    "p.txt": b"a red circle on a blue background",
    "existing.json": b'{"mine": true}\n',
    "existing.png": b"\x89PNG\r\n\x1a\n the user's plot",
    "existing.yaml": b"# the user's own preset notes\n",
    "almost.jsonl": b'{"index": "zero", "prompt": "not teacli\'s"}\n',
}


def snapshot(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in folder.rglob("*")
        if path.is_file()
    }


# --- cases --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    says: str = ""  # text the one error line contains
    code: int = 1
    setup: Callable[[Path], None] | None = None
    stdout: str = "pipe"  # "closed" or "full" for a stdout that cannot take the report
    new: frozenset[str] = frozenset()  # files the case may create (a success, or outputs written before stdout failed)
    env: dict[str, str] = field(default_factory=dict)
    refuses: str = ""  # text the error line must not contain (advice that would mislead)
    reported: bool = False  # the run finished and printed its report (on stderr with --json) before failing


def write(name: str, text: str | bytes) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        data = text.encode("utf-8") if isinstance(text, str) else text
        (folder / name).write_bytes(data)

    return make


def preset_file(name: str, **changes: str) -> Callable[[Path], None]:
    """tiny-flux's preset with some top-level lines replaced (or added), written as NAME."""

    def make(folder: Path) -> None:
        from teacli.models.catalog import builtin_presets

        lines = Path(builtin_presets()["tiny-flux"].source).read_text(encoding="utf-8").splitlines()
        lines = [line for line in lines if line.split(":")[0] not in changes]
        lines += [f"{key}: {value}" for key, value in changes.items()]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")

    return make


ALIAS_BOMB = "\n".join(
    ["name: bomb", 'a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    + ["defaults: {steps: *a8}"]
)


def fifo(name: str) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        os.mkfifo(folder / name)

    return make


def damaged_model(folder: Path) -> None:
    """A copy of tiny-flux whose transformer weights were cut short (an interrupted download)."""
    from teacli.models.embedded import embedded_model_path

    copy = folder / "model"
    shutil.copytree(embedded_model_path("tiny-flux"), copy)
    weights = copy / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def damaged_lora(folder: Path) -> None:
    (folder / "lora.safetensors").write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a": ')


def empty_folder(name: str) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        (folder / name).mkdir()

    return make


def presets_folder_with_fifo(folder: Path) -> None:
    (folder / "my-presets").mkdir()
    os.mkfifo(folder / "my-presets" / "stuck.yaml")


def huge_steps_jsonl(folder: Path) -> None:
    lines = ['{"prompt": "a red circle"}', '{"prompt": "a blue square", "steps": 99999999999999999999999}']
    (folder / "runs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


G = ("generate", PROMPT, *FAST)
CASES = [
    # 1. files teacli did not write
    Case(
        "manifest-is-a-users-one-line-file",
        ("generate", "--prompts", "p.txt", "--manifest", "notes.txt", *FAST),
        "is not a teacli manifest line",
    ),
    Case("manifest-is-the-prompts-file", ("generate", "--prompts", "p.txt", "--manifest", "p.txt", *FAST), "p.txt"),
    Case(
        "manifest-with-lines-almost-like-teaclis",
        ("generate", "--prompts", "p.txt", "--manifest", "almost.jsonl", *FAST),
        "is not a teacli manifest line",
    ),
    Case("out-is-the-users-file", (*G, "--out", "user.png"), "already exists"),
    Case("out-is-a-directory", (*G, "--out", "sub"), "is a directory", setup=empty_folder("sub")),
    Case("out-in-a-missing-directory", (*G, "--out", "missing/x.png"), "does not exist"),
    Case("out-with-an-unknown-suffix", (*G, "--out", "x.unknownext"), "cannot write one as"),
    Case("bench-json-over-a-users-file", ("bench", "--runs", "1", "--json", "existing.json"), "already exists"),
    Case("bench-plot-over-a-users-file", ("bench", "--runs", "1", "--plot", "existing.png"), "already exists"),
    Case("calibrate-out-over-a-users-file", ("calibrate", "--out", "existing.yaml"), "already exists"),
    Case("calibrate-out-not-yaml", ("calibrate", "--out", "notes.txt"), "must end in .yaml"),
    # 2. library failures reach the user as one line
    Case("json-with-stdout-closed", (*G, "--json", "--out", "a.png"), "stdout, which is closed", stdout="closed"),
    Case(
        "json-with-a-full-stdout",
        (*G, "--json", "--out", "a.png"),
        "could not write the JSON report",
        stdout="full",
        new=frozenset({"a.png"}),
        reported=True,
    ),
    Case("bench-json-dash-with-stdout-closed", ("bench", "--json", "-"), "stdout, which is closed", stdout="closed"),
    Case("prompt-not-utf8", ("generate", "a red \udcff circle", *FAST), "not valid UTF-8"),
    Case("negative-prompt-not-utf8", (*G, "--negative-prompt", "blur\udcfe"), "not valid UTF-8"),
    Case("fps-infinite", (*G, "--fps", "inf"), "--fps must be"),
    Case("fps-tiny", ("generate", PROMPT, "--model", "tiny-wan21", "--fps", "1e-9"), "--fps must be"),
    Case("frames-huge", ("generate", PROMPT, "--model", "tiny-wan21", "--frames", "999999999"), "--frames must be"),
    # 3. values that passed a lower bound and broke later
    Case("seed-above-64-bits", (*G, "--seed", "36893488147419103232"), "--seed must be an integer between 0"),
    Case("seed-plus-batch-above-64-bits", (*G, "--seed", str(2**64 - 1), "--num-images", "2"), "use a smaller --seed"),
    Case("steps-huge", ("generate", PROMPT, "--steps", "99999999999999999999999"), "--steps must be an integer"),
    Case("steps-one", ("generate", PROMPT, "--steps", "1"), "--steps must be an integer between 2"),
    Case("guidance-nan", (*G, "--guidance", "nan"), "--guidance must be a finite number"),
    Case("true-cfg-nan", (*G, "--true-cfg", "nan"), "--true-cfg must be a finite number"),
    Case("thresh-infinite", (*G, "--thresh", "inf"), "--thresh must be a finite number"),
    Case("start-nan", (*G, "--start", "nan"), "--start is a fraction"),
    Case("height-below-one-patch", (*G, "--height", "7"), "below the smallest"),
    Case("height-zero", (*G, "--height", "0"), "--height must be an integer between 1"),
    Case("width-huge", (*G, "--width", "10000000"), "--width must be an integer between 1"),
    Case("num-images-huge", (*G, "--num-images", "1000000"), "--num-images must be"),
    Case("cache-device-meta", (*G, "--cache-device", "meta"), "cannot hold residuals"),
    Case("cache-device-absent-gpu", (*G, "--cache-device", "cuda:7"), "--cache-device cuda:7"),
    Case("lora-scale-nan", (*G, "--lora-scale", "nan"), "--lora-scale must be a finite number"),
    Case("max-cached-in-row-huge", (*G, "--max-cached-in-row", "10" * 20), "--max-cached-in-row must be"),
    Case("bench-runs-zero", ("bench", "--runs", "0"), "--runs must be an integer between 1"),
    Case("bench-warmup-negative", ("bench", "--warmup", "-1"), "--warmup must be an integer between 0"),
    Case("calibrate-prompts-zero", ("calibrate", "--num-prompts", "0"), "--num-prompts must be"),
    Case(
        "jsonl-line-with-huge-steps",
        ("generate", "--prompts", "runs.jsonl", *FAST),
        "line 2: 'steps' must be",
        setup=huge_steps_jsonl,
    ),
    Case(
        "preset-defaults-huge-steps",
        ("generate", PROMPT, "--model", "big.yaml"),
        "field 'defaults.steps': must be an integer",
        setup=preset_file("big.yaml", defaults="{steps: 99999999999999999999999, height: 64, width: 64}"),
    ),
    Case(
        "preset-defaults-nan-guidance",
        ("generate", PROMPT, "--model", "nan.yaml"),
        "field 'defaults.guidance'",
        setup=preset_file("nan.yaml", defaults="{steps: 3, guidance: .nan}"),
    ),
    # 4. damaged weights are called damaged, never a reason to allow pickle
    Case(
        "model-with-truncated-weights",
        (*G, "--model", "model"),
        "is damaged",
        setup=damaged_model,
        refuses="allow-pickle",
    ),
    Case(
        "lora-file-damaged",
        (*G, "--lora", "lora.safetensors"),
        "is damaged",
        setup=damaged_lora,
        refuses="allow-pickle",
    ),
    Case(
        "lora-folder-empty",
        (*G, "--lora", "empty"),
        "holds no weights file",
        setup=empty_folder("empty"),
        refuses="allow-pickle",
    ),
    # 6. presets are bounded data
    Case(
        "preset-alias-bomb",
        ("generate", PROMPT, "--model", "bomb.yaml"),
        "too many YAML aliases",
        setup=write("bomb.yaml", ALIAS_BOMB),
    ),
    Case("preset-is-a-fifo", ("generate", PROMPT, "--model", "pipe.yaml"), "pipe.yaml", setup=fifo("pipe.yaml")),
    Case(
        "preset-call-kwargs-output-type",
        ("generate", PROMPT, "--model", "latent.yaml"),
        "call_kwargs.output_type': teacli sets this itself",
        setup=preset_file("latent.yaml", call_kwargs="{output_type: latent}"),
    ),
    Case(
        "preset-call-kwargs-generator",
        ("generate", PROMPT, "--model", "gen.yaml"),
        "call_kwargs.generator': teacli sets this itself",
        setup=preset_file("gen.yaml", call_kwargs="{generator: 5}"),
    ),
    Case(
        "preset-experts-missing-denoiser",
        ("generate", PROMPT, *FAST, "--model", "experts.yaml"),
        "experts.transformer_2",
        setup=preset_file("experts.yaml", experts="{transformer_2: {thresh: 0.2}}"),
    ),
    # second round: more of the same classes
    Case("out-as-a-read-only-format", (*G, "--out", "picture.psd"), "cannot write one as '.psd'"),
    Case(
        "manifest-is-dev-null",
        ("generate", "--prompts", "p.txt", "--manifest", "/dev/null", *FAST),
        "is not a regular file",
    ),
    Case(
        "manifest-is-an-output",
        ("generate", "--prompts", "p.txt", "--manifest", "00000-a-red-circle-on-a-blue-background-s0.png", *FAST),
        "is the output of prompt 0",
    ),
    Case(
        "manifest-users-complete-last-line",
        ("generate", "--prompts", "p.txt", "--manifest", "mine.jsonl", *FAST),
        "is not a teacli manifest line",
        setup=write("mine.jsonl", '{"index": 6, "mine": true}'),
    ),
    Case(
        "prompts-is-a-fifo",
        ("generate", "--prompts", "queue.txt", *FAST),
        "is not a regular file",
        setup=fifo("queue.txt"),
    ),
    Case(
        "image-is-a-fifo",
        ("generate", PROMPT, "--model", "tiny-flux-kontext", "--image", "in.png", *FAST),
        "is not a regular file",
        setup=fifo("in.png"),
    ),
    Case(
        "lora-pickle-without-its-suffix",
        (*G, "--lora", "style.lora"),
        "--allow-pickle only if you trust it",
        setup=write("style.lora", b"PK\x03\x04 a torch.save archive"),
    ),
    Case(
        "bench-json-and-plot-the-same-file", ("bench", "--json", "same.png", "--plot", "same.png"), "both name same.png"
    ),
    Case(
        "jsonl-lone-surrogate",
        ("generate", "--prompts", "s.jsonl", *FAST),
        "lone surrogate",
        setup=write("s.jsonl", '{"prompt": "a \\ud800 circle"}\n'),
    ),
    Case("list-models-with-stdout-closed", ("list-models",), "stdout, which is closed", stdout="closed"),
    # a FIFO in a preset folder is skipped (it would block every command), not read
    Case(
        "presets-folder-holds-a-fifo",
        ("list-models",),
        code=0,
        setup=presets_folder_with_fifo,
        env={"TEACLI_PRESETS": "my-presets"},
    ),
    # command-line slips: exit code 2
    Case("unknown-option", (*G, "--stpes", "3"), "No such option", code=2),
    Case("prompt-and-prompts", ("generate", PROMPT, "--prompts", "p.txt"), "not both", code=2),
]


def run_case(case: Case, folder: Path) -> tuple[subprocess.CompletedProcess, dict, dict]:
    folder.mkdir(parents=True)
    for name, data in USER_FILES.items():
        (folder / name).write_bytes(data)
    if case.setup is not None:
        case.setup(folder)
    before = snapshot(folder)
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="400", **case.env)
    env.pop("TEACLI_PRESETS", None)
    if "TEACLI_PRESETS" in case.env:
        env["TEACLI_PRESETS"] = str(folder / case.env["TEACLI_PRESETS"])
    command = [sys.executable, "-m", "teacli", *(arg.encode("utf-8", "surrogateescape") for arg in case.args)]
    stdout = {"pipe": subprocess.PIPE, "full": open("/dev/full", "wb")}.get(case.stdout)  # noqa: SIM115
    launch = dict(cwd=folder, env=env, stdout=stdout, stderr=subprocess.PIPE, timeout=300)
    if case.stdout == "closed":
        # The shell's `>&-`: fd 1 closed in the child.
        launch["preexec_fn"] = lambda: os.close(1)
        launch.pop("stdout")
    done = subprocess.run(command, **launch)
    if case.stdout == "full":
        stdout.close()
    return done, before, snapshot(folder)


@pytest.fixture(scope="module")
def outcomes(teacli_cache, tmp_path_factory):
    """Every case run once, two at a time (each is a process of its own)."""
    from teacli.models.embedded import embedded_model_path

    embedded_model_path("tiny-flux")  # built once before the cases copy it
    embedded_model_path("tiny-wan21")
    root = tmp_path_factory.mktemp("red-team")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {case.id: pool.submit(run_case, case, root / case.id) for case in CASES}
        return {name: future.result() for name, future in futures.items()}


def said(stderr: bytes) -> list[str]:
    """stderr's lines, less warnings and teacli's INFO log records (with their indented continuation lines)."""
    text = stderr.decode("utf-8", "replace")
    return [
        line for line in text.splitlines() if line.strip() and not line.startswith(("INFO", "WARNING", "warning:", " "))
    ]


def test_the_table_covers_each_class_of_failure():
    assert len(CASES) >= 40 and len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_input_keeps_the_promise(outcomes, case):
    done, before, after = outcomes[case.id]
    stderr = done.stderr.decode("utf-8", "replace")
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert done.returncode == case.code, stderr
    lines = said(done.stderr)
    if case.code == 0:
        assert lines == [], stderr
    else:
        if case.reported:  # the report's table came first; the error is the last line and the only one
            assert [line for line in lines if line.startswith("error:")] == lines[-1:], stderr
            lines = lines[-1:]
        assert len(lines) == 1 and lines[0].startswith("error: "), stderr
        assert case.says in lines[0], lines[0]
        assert not case.refuses or case.refuses not in lines[0], lines[0]
    changed = sorted(name for name in before if after.get(name) != before[name])
    assert changed == [], f"the user's files changed: {changed}"
    made = set(after) - set(before)
    assert not any(Path(name).name.startswith(".") for name in made), f"temporary files left: {made}"
    assert made <= case.new, f"files written by a failed run: {made - case.new}"


# --- signals: a real SIGINT, SIGTERM or SIGHUP at several moments ------------------------------------------------


@pytest.mark.parametrize(
    "signal_number, delay",
    [(signal.SIGINT, 0.3), (signal.SIGTERM, 0.3), (signal.SIGTERM, 1.5), (signal.SIGHUP, 2.5), (signal.SIGINT, 4.0)],
    ids=["sigint-importing", "sigterm-importing", "sigterm-early", "sighup-loading", "sigint-running"],
)
def test_a_stop_signal_at_any_moment_is_one_line_and_its_exit_code(teacli_cache, tmp_path, signal_number, delay):
    """Imports, loading or denoising: 128 + the signal's number, one line, the user's file and folder untouched."""
    for name, data in USER_FILES.items():
        (tmp_path / name).write_bytes(data)
    before = snapshot(tmp_path)
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="400")
    process = subprocess.Popen(
        [sys.executable, "-m", "teacli", "generate", PROMPT, "--steps", "2000", "--out", "out.png"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(delay)
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=300)
    text = stderr.decode("utf-8", "replace")
    assert process.returncode == 128 + signal_number, text
    assert "Traceback" not in text and "Exception ignored" not in text, text
    assert said(stderr) == ["error: interrupted; nothing was written"], text
    assert snapshot(tmp_path) == before  # no output, no temporary file, the user's files as they were


def run_patched(patch: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The CLI in a subprocess after `patch` (Python source) replaced a function to make a fault happen."""
    wrapper = f"import sys\n{patch}\nsys.argv = ['teacli', *sys.argv[1:]]\nfrom teacli.cli import main\nmain()\n"
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="400")
    return subprocess.run([sys.executable, "-c", wrapper, *args], cwd=cwd, env=env, capture_output=True, timeout=300)


def test_debug_shows_the_traceback_of_an_unexpected_failure_and_still_ends_with_one_line(teacli_cache, tmp_path):
    """An error teacli did not foresee: one line normally; with --debug the traceback comes first."""
    patch = (
        "import teacli.generation.runner\n"
        "def broken(*a, **k):\n"
        "    raise ZeroDivisionError('deep inside a library')\n"
        "teacli.generation.runner.generate = broken"
    )
    for extra, traceback_shown in (((), False), (("--debug",), True)):
        done = run_patched(patch, ["generate", PROMPT, *FAST, "--out", "x.png", *extra], tmp_path)
        stderr = done.stderr.decode("utf-8", "replace")
        assert done.returncode == 1, stderr
        assert ("Traceback" in stderr) is traceback_shown, stderr
        last = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert last == ["error: unexpected ZeroDivisionError: deep inside a library; run again with --debug for the "
                        "traceback and report it (teacli, diffusers and torch versions help)"], stderr  # fmt: skip
        assert not any(tmp_path.iterdir())


def test_bench_json_on_stdout_is_json_alone_with_cache_dit(teacli_cache, tmp_path):
    """cache-dit logs to stdout: with `--json -` only the JSON may reach it, and DBCache fits the model."""
    pytest.importorskip("cache_dit")
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="400")
    done = subprocess.run(
        [sys.executable, "-m", "teacli", "bench", "--against", "dbcache", "--runs", "1", "--warmup", "0",
         "--steps", "6", "--thresh", "0.3", "--json", "-"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    data = json.loads(done.stdout)
    assert any(row["method"] == "dbcache" for row in data["rows"]), data["rows"]


# --- failures teacli did not foresee: classified into one line --------------------------------------------------


@pytest.mark.parametrize(
    "error, says",
    [
        (MemoryError(), "out of memory"),
        (RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB"), "out of memory"),
        (
            RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
            "out of memory",
        ),
        (OSError(28, "No space left on device", "/data/out.png"), "no space left on the device (/data/out.png)"),
        (PermissionError(13, "Permission denied", "/data"), "Permission denied (/data); check the path"),
        (ValueError("x" * 5000), "unexpected ValueError: xxx"),
    ],
    ids=["memory", "cuda-oom", "cpu-oom", "disk-full", "permission", "long-message"],
)
def test_an_unforeseen_failure_is_described_in_one_short_line(error, says):
    from teacli.cli._app import describe_failure

    line = describe_failure(error)
    assert says in line and "\n" not in line and len(line) < 400, line


def test_a_full_disk_while_writing_is_one_line_and_leaves_nothing(teacli_cache, tmp_path):
    """The image writer fails half way (ENOSPC): no temporary file, no output, the user's file intact."""
    patch = (
        "from PIL import Image\n"
        "def save(self, fp, format=None, **params):\n"
        "    open(fp, 'wb').write(b'half a picture')\n"
        "    raise OSError(28, 'No space left on device', str(fp))\n"
        "Image.Image.save = save"
    )
    (tmp_path / "user.png").write_bytes(USER_FILES["user.png"])
    done = run_patched(patch, ["generate", PROMPT, *FAST, "--out", "out.png"], tmp_path)
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 1 and "Traceback" not in stderr, stderr
    assert said(done.stderr) == [line for line in said(done.stderr) if line.startswith("error: no space left")]
    assert len(said(done.stderr)) == 1, stderr
    assert [path.name for path in tmp_path.iterdir()] == ["user.png"]
    assert (tmp_path / "user.png").read_bytes() == USER_FILES["user.png"]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads a process's signal mask from /proc")
def test_bench_isolates_runs_beside_a_resource_tracker_that_a_hangup_cannot_kill():
    """bench --isolate's helper process must not die of the SIGHUP a closed terminal sends the whole group
    (checked in a fresh process, where the tracker is not running yet)."""
    check = (
        "import signal\n"
        "from pathlib import Path\n"
        "from multiprocessing import resource_tracker\n"
        "from teacli.bench.isolated import start_resource_tracker_deaf_to_hangup\n"
        "start_resource_tracker_deaf_to_hangup()\n"
        "status = Path(f'/proc/{resource_tracker._resource_tracker._pid}/status').read_text().splitlines()\n"
        "masks = [int(line.split()[1], 16) for line in status if line.startswith(('SigBlk', 'SigIgn'))]\n"
        "print(bool((masks[0] | masks[1]) & (1 << (signal.SIGHUP - 1))))\n"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr + done.stdout
