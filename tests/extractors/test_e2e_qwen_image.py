"""End to end through the CLI on the embedded tiny Qwen-Image pipeline: true CFG runs cond and uncond as two calls."""

from support import generate_and_check

from teacli.engine.decision import Decision

# On the tiny model each step's rescaled distance is about 0.08, so 0.2 caches two steps in three.
THRESH = 0.2


def test_true_cfg_caches_in_both_branches_with_the_same_decisions(monkeypatch, tmp_path, teacli_cache):
    stats, counts = generate_and_check(
        monkeypatch,
        tmp_path,
        "tiny-qwen-image",
        "--negative-prompt",
        "blurry",
        steps=6,
        thresh=THRESH,
        branches={"cond", "uncond"},
    )
    for branch in ("cond", "uncond"):
        assert counts[branch][3] > 0, f"{branch}: nothing was cached"
    # The modulated input reads only the latents and the timestep, never the prompt: both branches agree.
    decisions = {b: [r.decision for r in stats.records if r.branch == b] for b in ("cond", "uncond")}
    assert decisions["cond"] == decisions["uncond"]
    assert Decision.CACHED in decisions["cond"]


def test_without_a_negative_prompt_only_the_cond_branch_runs(monkeypatch, tmp_path, teacli_cache):
    stats, counts = generate_and_check(
        monkeypatch, tmp_path, "tiny-qwen-image", steps=5, thresh=THRESH, branches={"cond"}
    )
    assert stats.totals.cached > 0
    assert counts["total"][0] == 5


def test_the_tiny_pipeline_is_small_and_its_prompts_survive_the_template_cut(teacli_cache):
    import torch
    from diffusers import QwenImagePipeline

    from teacli.models.embedded import embedded_model_path

    directory = embedded_model_path("tiny-qwen-image")
    assert sum(f.stat().st_size for f in directory.rglob("*.safetensors")) < 5 * 2**20
    pipe = QwenImagePipeline.from_pretrained(directory)
    assert not pipe.text_encoder.training and not pipe.transformer.training
    with torch.no_grad():
        owl, owl_mask = pipe.encode_prompt("an owl on a tree", device="cpu")
        cat, _ = pipe.encode_prompt("a cat on a tree", device="cpu")
    # The template's first 34 tokens are dropped; here 2 template words, the 5 prompt words and 7 more remain.
    assert owl.shape == (1, 2 + 5 + 7, 32) and owl_mask is None
    assert not torch.equal(owl, cat)
