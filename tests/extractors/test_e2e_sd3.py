"""End to end through the CLI on the embedded tiny StableDiffusion3Pipeline.

StableDiffusion3Pipeline batches the uncond and cond halves of classifier-free guidance into one
transformer call per step and sets no cache_context (SD3Transformer2DModel has no CacheMixin), so every
call lands in the hook's "default" branch.
"""

from support import generate_and_check

from teacli.engine.decision import Decision
from teacli.models.embedded import embedded_model_path

STEPS = 6
# On the tiny model each step's rescaled distance is about 0.18-0.19, so 0.25 caches every other
# step: one rescaled distance stays below it, two do not.
THRESH = 0.25


def test_tiny_sd3_generates_with_cfg_in_one_branch_and_caches_some_steps(monkeypatch, tmp_path, teacli_cache):
    stats, counts = generate_and_check(
        monkeypatch, tmp_path, "tiny-sd3", steps=STEPS, thresh=THRESH, branches={"default"}
    )
    calls, computed, forced, cached = counts["default"]
    assert (calls, forced) == (STEPS, 2)
    assert cached >= 1 and computed >= 1
    decisions = [record.decision for record in stats.records]
    assert decisions[1] is Decision.CACHED  # the first unforced step is always below the threshold


def test_tiny_sd3_weights_are_small(teacli_cache):
    directory = embedded_model_path("tiny-sd3")
    weights = sum(path.stat().st_size for path in directory.rglob("*.safetensors"))
    assert 0 < weights < 5 * 1024 * 1024
    assert sorted(p.parent.name for p in directory.rglob("*.safetensors")) == sorted(
        ["text_encoder", "text_encoder_2", "text_encoder_3", "transformer", "vae"]
    )
