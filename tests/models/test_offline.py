"""A local model, the default model and offline loading make no network request.

Each test runs teacli in a fresh Python process whose sockets are blocked by a guard that records every attempt,
with the hub's offline variables removed from its environment: only teacli's own code keeps it off the network.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROMPT = "a red circle on a blue background"
# Installed before teacli is imported: every way out to the network records the attempt, then fails.
GUARD = """
import os, socket, sys, traceback
def blocked(*args, **kwargs):
    with open(os.environ["GUARD_LOG"], "a") as log:
        log.write(f"network attempt: {args[1:2]!r}\\n")
        traceback.print_stack(file=log, limit=15)
    raise OSError("network blocked by the test guard")
socket.socket.connect = socket.socket.connect_ex = blocked
socket.create_connection = socket.getaddrinfo = blocked
"""
# One process runs the CLI for each command line (separated by "--then"): imports dominate a run's time.
RUN_CLI = (
    GUARD
    + """
from teacli.cli import main
commands = [[]]
for arg in sys.argv[1:]:
    commands.append([]) if arg == "--then" else commands[-1].append(arg)
codes = []
for command in commands:
    sys.argv = ["teacli", *command]
    try:
        main()
        codes.append(0)
    except SystemExit as exit:
        codes.append(exit.code or 0)
print("exit codes:", *codes)
"""
)
# The library's offline path (what --offline calls) for each model given, printing errors as the CLI does.
RUN_OFFLINE = (
    GUARD
    + """
from teacli.signals import import_libraries

import_libraries()  # as the CLI does (torchao's import notices quieted, when it is installed)
import torch
from teacli.models.loading import ModelError, load_pipeline, resolve_preset
failed = False
for model in sys.argv[1:]:
    try:
        preset = resolve_preset(model, offline=True)
        load_pipeline(preset, torch.device("cpu"), torch.float32, offline=True)
        print(f"loaded {model}")
    except ModelError as error:
        print(f"error: {error}", file=sys.stderr)
        failed = True
sys.exit(1 if failed else 0)
"""
)
ONLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY")


@pytest.fixture
def guarded(tmp_path, teacli_cache):
    """Run code in a guarded subprocess; returns (completed process, the guard's log or '')."""
    env = {k: v for k, v in os.environ.items() if k not in ONLINE_VARIABLES}
    env |= {
        "HF_HOME": str(tmp_path / "hf-home"),  # an empty Hugging Face cache, whatever the machine has
        "HF_HUB_CACHE": str(tmp_path / "hf-home" / "hub"),
        "TEACLI_CACHE_DIR": teacli_cache,
        "GUARD_LOG": str(tmp_path / "guard.log"),
        "COLUMNS": "200",
    }

    def run(code: str, *args: str):
        result = subprocess.run(
            [sys.executable, "-c", code, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        log = tmp_path / "guard.log"
        return result, log.read_text() if log.exists() else ""

    return run


def test_the_guard_catches_a_hub_request(guarded):
    result, log = guarded(GUARD + "import huggingface_hub\nhuggingface_hub.model_info('black-forest-labs/FLUX.1-dev')")
    assert result.returncode != 0
    assert "network attempt" in log  # so an empty log below means no attempt, not a blind guard


@pytest.fixture(scope="module")
def local_pipeline(tmp_path_factory) -> Path:
    """tiny-flux saved with save_pretrained to a directory the hub knows nothing about."""
    from teacli.models.embedded.tiny_flux import build_tiny_flux

    directory = tmp_path_factory.mktemp("local") / "my-flux"
    build_tiny_flux(directory)
    return directory


def test_cli_makes_no_request_for_a_local_directory_the_default_model_or_offline(guarded, local_pipeline, tmp_path):
    local, shapes, offline = tmp_path / "local.png", tmp_path / "shapes.png", tmp_path / "offline.png"
    size = ["--height", "64", "--width", "64"]  # not flux-dev's 1024 px, borrowed for an unknown FLUX folder
    result, log = guarded(
        RUN_CLI,
        *["generate", PROMPT, "--model", str(local_pipeline), "--steps", "2", *size, "--out", str(local), "--then"],
        *["generate", PROMPT, "--steps", "2", "--out", str(shapes), "--then"],  # teacli-shapes, the default
        *["generate", PROMPT, "--offline", "--model", "nobody/no-such-model", "--out", str(offline)],
    )
    assert log == "", f"network attempted:\n{log}"
    assert result.stdout.splitlines()[-1] == "exit codes: 0 0 1", result.stderr
    assert local.stat().st_size > 0 and shapes.stat().st_size > 0 and not offline.exists()
    assert "teacli-shapes" in result.stdout and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        "error: model 'nobody/no-such-model' is not a preset (see `teacli list-models`), a preset file or a local "
        "pipeline directory, and is not in the local Hugging Face cache; run once without --offline to download it"
    ]


def put_in_hf_cache(source: Path, hub: Path, repo_id: str) -> None:
    """Lay `source` out as the Hugging Face cache does after a download: refs/main names the snapshot."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(source, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")


def test_offline_reads_the_cache_only_and_says_what_is_missing(guarded, local_pipeline, tmp_path):
    put_in_hf_cache(local_pipeline, tmp_path / "hf-home" / "hub", "someone/cached-flux")
    unknown, preset = "nobody/no-such-model", "flux-dev"  # flux-dev: a preset whose weights were never downloaded
    result, log = guarded(RUN_OFFLINE, unknown, preset, str(local_pipeline), "someone/cached-flux")
    assert log == "", f"network attempted:\n{log}"
    assert result.returncode == 1 and "Traceback" not in result.stderr
    # Besides loading progress bars and transformers' notices, each model that failed has one line.
    assert [line for line in result.stderr.splitlines() if "error" in line.lower()] == [
        f"error: model '{unknown}' is not a preset (see `teacli list-models`), a preset file or a local pipeline "
        "directory, and is not in the local Hugging Face cache; run once without --offline to download it",
        "error: black-forest-labs/FLUX.1-dev is not in the local Hugging Face cache; run once without --offline to "
        "download it",
    ]
    # A local directory needs no cache; a cached hub id loads from it without the hub client going online.
    assert result.stdout.splitlines() == [f"loaded {local_pipeline}", "loaded someone/cached-flux"]
