"""Every extractor's caching-off proof under offloading and quantization: sequential and group offloading (a block's
own tensors live elsewhere between its calls) and int8 weights from quanto and torchao (Linear layers replaced or
their weights made tensor subclasses). The proofs run through the tests/memory_variants.py plugin, in one pytest
subprocess for all variants (each proof call builds its own deep copy per variant, so the variants do not share a
model; one process instead of five saves four startups and collections, most of the time on two cores).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from memory_variants import REPORT_ENV, VARIANT_ENV, VARIANTS, transformed
from support import assert_caching_off_matches_unhooked, flux_inputs, make_flux_transformer

import teacli.engine.hook as engine_hook

ROOT = Path(__file__).resolve().parents[2]
FAMILY_FILES = sorted(Path(__file__).parent.glob("test_extractor_*.py"))
TIMEOUT_S = 600

# Families that cannot pass a variant for a reason outside teacli, as (variant, test file): the error every one of
# that file's proof tests must still fail with, so the table stays true (an entry that starts passing fails here).
EXPECTED_FAILURES = {
    # accelerate's cpu_offload puts an io_same_device hook on the transformer; its send_to_device rebuilds a mapping
    # output as type(output)(dict), and diffusers' BaseOutput unpacks a lone dict only into its first field, so
    # LTX-2's two-field AudioVisualModelOutput (return_dict=True) breaks in the unhooked forward, without TeaCache.
    # Pipelines call with return_dict=False; test_ltx2_under_sequential_offload_with_tuple_outputs covers those.
    ("sequential-offload", "test_extractor_ltx2.py"): (
        "AudioVisualModelOutput.__init__() missing 1 required positional argument: 'audio_sample'"
    ),
}


def run_plugin(report: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", **{VARIANT_ENV: ",".join(VARIANTS), REPORT_ENV: str(report)})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "tests"), env.get("PYTHONPATH")]))
    # Tiny models gain nothing from threads; on two shared cores OpenMP's spinning threads made this 15x slower.
    env.setdefault("OMP_NUM_THREADS", "1")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "memory_variants"]
    command += [str(path.relative_to(ROOT)) for path in FAMILY_FILES]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def tests(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Each proof test's outcome: its own, and one per variant (the plugin's report)."""
    report = tmp_path_factory.mktemp("memory-variants") / "report.json"
    done = run_plugin(report)
    assert report.is_file(), f"the plugin wrote no report:\n{(done.stdout + done.stderr)[-3000:]}"
    found = json.loads(report.read_text())
    assert found["variants"] == list(VARIANTS)
    return found["tests"]


def file_of(nodeid: str) -> str:
    return Path(nodeid.split("::")[0]).name


def failures(tests: dict[str, dict], variant: str) -> dict[str, str]:
    """The tests whose proof failed under `variant`, or never ran under it (a skip, an error before it), by message."""
    outcomes = {nodeid: entry["variants"].get(variant) for nodeid, entry in tests.items()}
    return {
        nodeid: (outcome or {}).get("message", "the proof never ran under this variant")
        for nodeid, outcome in outcomes.items()
        if outcome is None or outcome["outcome"] != "passed"
    }


def test_every_family_is_checked_and_fails_only_through_its_proofs(tests):
    assert {file_of(nodeid) for nodeid in tests} == {path.name for path in FAMILY_FILES}, "a family ran no proof"
    other = {
        nodeid: entry.get("message")
        for nodeid, entry in tests.items()
        if entry["outcome"] != "passed" and all(v["outcome"] == "passed" for v in entry["variants"].values())
    }
    assert not other, f"tests failed or were skipped outside the rerun proofs: {other}"


def expected(variant: str, nodeid: str, message: str) -> bool:
    reason = EXPECTED_FAILURES.get((variant, file_of(nodeid)))
    return reason is not None and reason in message


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_caching_off_equals_the_unhooked_forward_under(tests, variant):
    failed = failures(tests, variant)
    unexpected = [
        f"{nodeid}: {message}" for nodeid, message in failed.items() if not expected(variant, nodeid, message)
    ]
    assert not unexpected, f"{variant}:\n" + "\n".join(unexpected)
    for name in (name for expected_variant, name in EXPECTED_FAILURES if expected_variant == variant):
        # Every failure left is an expected one: each of this file's proof tests must be among them.
        ran = {nodeid for nodeid in tests if file_of(nodeid) == name}
        assert ran and ran <= set(failed), f"{name} no longer fails under {variant} as EXPECTED_FAILURES says"


@pytest.mark.parametrize("ltx23", [False, True], ids=["ltx2.0", "ltx2.3"])
def test_ltx2_under_sequential_offload_with_tuple_outputs(ltx23):
    """The LTX-2 extractor under sequential offload, past the return_dict=True limitation in EXPECTED_FAILURES:
    it reads the first block's two tables outside that block's forward, on the meta device there."""
    from test_extractor_ltx2 import image_to_video, inputs, make_model

    model = transformed(make_model(ltx23), "sequential-offload")
    assert model.transformer_blocks[0].audio_scale_shift_table.device == torch.device("meta")
    calls = [
        ("cond_uncond", inputs(1, 1000.0, ltx23=ltx23, return_dict=False)),
        ("uncond_stg", inputs(2, 800.0, batch=1, ltx23=ltx23, spatio_temporal_guidance_blocks=[1], return_dict=False)),
        ("cond_uncond", image_to_video(inputs(3, 500.0, ltx23=ltx23, return_dict=False))),
    ]
    assert_caching_off_matches_unhooked(model, calls)


def test_group_offload_block_fails_a_module_run_while_its_group_is_offloaded(monkeypatch):
    """The residency check has teeth: without the engine's first-block onload, Flux's extractor runs block 0's
    norm1 while that block is offloaded (on a GPU its weights would be on the CPU), and the variant names it."""
    model = transformed(make_flux_transformer(), "group-offload-block")
    with torch.no_grad():
        model(**flux_inputs(1, 0.9))  # the plain forward keeps every module inside its group's window
    monkeypatch.setattr(engine_hook, "first_blocks_onloaded", lambda module: contextlib.nullcontext())
    with pytest.raises(RuntimeError, match=r"^transformer_blocks\.0\.norm1\.linear ran while its offloaded group"):
        assert_caching_off_matches_unhooked(model, [(None, flux_inputs(2, 0.5))])
