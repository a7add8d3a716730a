"""Ctrl-C and an existing file, through the real CLI in a subprocess: a real SIGINT, exit code 130, one line,
and never a partial output, a temporary file left behind, or a user's file lost."""

import os
import subprocess
import sys

PROMPT = "a red circle on a blue background"

# Runs the CLI after patching one place to send this very process a real SIGINT: in the denoising
# loop (after step 2 of 8) or in the middle of writing the image to its temporary file.
WRAPPER = r"""
import os, signal, sys, time
from teacli.signals import import_libraries

import_libraries()  # as the CLI does before anything imports diffusers (torchao's import notices quieted)
mode = sys.argv[1]
if mode == "step":
    import teacli.generation.runner

    real_generate = teacli.generation.runner.generate

    def generate(pipe, request, on_step=None):
        def step(index):
            print(f"step {index}", flush=True)
            if index == 2:
                os.kill(os.getpid(), signal.SIGINT)
            if on_step is not None:
                on_step(index)

        return real_generate(pipe, request, on_step=step)

    teacli.generation.runner.generate = generate
elif mode == "write":
    from PIL import Image

    def save(self, fp, format=None, **params):
        with open(fp, "wb") as sink:
            sink.write(b"\x89PNG\r\n\x1a\n" + bytes(1000))
            sink.flush()
            print(f"partial {os.path.basename(fp)} {os.path.getsize(fp)}", flush=True)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(60)
        print("not interrupted", flush=True)

    Image.Image.save = save
sys.argv = ["teacli", *sys.argv[2:]]
from teacli.cli import main

main()
"""


def run_cli(mode, *args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="400", PYTHONUNBUFFERED="1")
    # TEACLI_CACHE_DIR comes from the teacli_cache fixture: tiny-flux is built there once.
    assert env.get("TEACLI_CACHE_DIR")
    return subprocess.run(
        [sys.executable, "-c", WRAPPER, mode, "generate", PROMPT, "--model", "tiny-flux", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def stderr_lines(done):
    """What the CLI said on stderr, less teacli's own log records (the "TeaCache enabled on ..." notice)."""
    return [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("INFO ")]


def assert_one_line_error(done, *phrases):
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = stderr_lines(done)
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and all(phrase in lines[0] for phrase in phrases), lines[0]


def test_sigint_while_denoising_exits_130_and_writes_nothing(teacli_cache, tmp_path):
    done = run_cli("step", "--steps", "8", "--out", "out.png", cwd=tmp_path)
    assert done.returncode == 130, done.stderr
    # Interrupted where it was sent: the denoising loop never got past step 2 of 8.
    assert done.stdout.splitlines() == ["step 0", "step 1", "step 2"], done.stdout
    assert_one_line_error(done, "interrupted", "nothing was written")
    assert list(tmp_path.iterdir()) == []  # no output, no .out.png.* temporary file


def test_sigint_while_writing_keeps_the_users_file_and_leaves_no_temporary(teacli_cache, tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"the user's picture")
    done = run_cli("write", "--steps", "5", "--out", "out.png", "--overwrite", cwd=tmp_path)
    assert done.returncode == 130, done.stderr + done.stdout
    partial = [line.split() for line in done.stdout.splitlines() if line.startswith("partial ")]
    # The signal came while a temporary file beside the output held part of the new image.
    assert len(partial) == 1 and partial[0][1].startswith(".out.png.") and int(partial[0][2]) == 1008, done.stdout
    assert "not interrupted" not in done.stdout
    assert_one_line_error(done, "interrupted", "nothing was written")
    assert [path.name for path in tmp_path.iterdir()] == ["out.png"]  # the temporary file is gone
    assert target.read_bytes() == b"the user's picture"


def test_an_existing_output_without_overwrite_is_a_one_line_error(teacli_cache, tmp_path):
    """(An existing sidecar: tests/generation/test_metadata.py, in process.)"""
    existing = tmp_path / "out.png"
    existing.write_bytes(b"the user's file")
    done = run_cli("none", "--steps", "5", "--out", "out.png", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert_one_line_error(done, "out.png already exists", "--overwrite")
    assert [path.name for path in tmp_path.iterdir()] == ["out.png"]
    assert existing.read_bytes() == b"the user's file"
