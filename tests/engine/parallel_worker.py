"""One rank of the two-process runs in test_parallel_decisions.py (CPU, gloo).

    python tests/engine/parallel_worker.py RANK WORLD_SIZE INIT_METHOD OUT_DIR

Runs every scenario in order (all ranks in step, since some take collectives) and writes what each rank
saw to OUT_DIR/rank{RANK}.json; the test compares the ranks and a single-process reference that every
rank also computes itself (it needs no collective: 'auto' does not sync a transformer without context
parallelism).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import timedelta
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: toy.py

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import toy  # noqa: E402  (registers the toy extractors)

from teacli import TeaCacheConfig, apply_teacache  # noqa: E402
from teacli.engine.apply import _find_hook  # noqa: E402
from teacli.engine.decision import rel_l1  # noqa: E402

STEPS = 12
IDENTITY = [1.0, 0.0]  # poly(x) = x: the decision reads rel_l1 itself


def decisions(handle) -> list[str]:
    return [str(record.decision) for record in handle.stats.records]


def distances(handle) -> list[float | None]:
    return [record.rel_l1 for record in handle.stats.records]


# --- the hook alone, each rank fed its own half of the modulated input ---------------------------------

# Two halves that move differently: the first by 2% a step, the second by 12-15%, so each rank alone
# would decide differently from the other, and from the whole tensor.
FIRST_HALF = toy.modulated_sequence([0.02] * (STEPS - 1))
SECOND_HALF = toy.modulated_sequence([0.15, -0.12] * 5 + [0.15])
WHOLE = [torch.cat((first, second)) for first, second in zip(FIRST_HALF, SECOND_HALF)]
IMAGE = torch.arange(8.0).reshape(1, 8, 1)  # 8 tokens; each rank gets 4 of them
TEXT = torch.ones(1, 2, 1)


def run_toy(modulated: list[torch.Tensor], image: torch.Tensor, sync) -> dict:
    model = toy.ToyTransformer()
    config = TeaCacheConfig(thresh=0.2, coefficients=IDENTITY, num_inference_steps=STEPS, sync_decisions=sync)
    handle = apply_teacache(model, config)
    outputs = [model(image, TEXT, value, timestep=1000.0 - 80 * step)[0] for step, value in enumerate(modulated)]
    return dict(decisions=decisions(handle), rel_l1=distances(handle), outputs=[o.flatten().tolist() for o in outputs])


def toy_shards(rank: int, world: int) -> dict:
    half = WHOLE[0].numel() // world
    shards = [value[rank * half : (rank + 1) * half] for value in WHOLE]
    image = IMAGE[:, rank * 4 : (rank + 1) * 4]
    whole = run_toy(WHOLE, IMAGE, sync=False)
    return dict(
        synced=run_toy(shards, image, sync=True),
        alone=run_toy(shards, image, sync=False),
        whole=whole,
        whole_rel_l1=[None] + [rel_l1(cur, prev) for prev, cur in zip(WHOLE, WHOLE[1:])],
    )


# --- CFG in parallel: each rank runs one branch ------------------------------------------------------

CFG_STEPS = 10


def cfg_inputs() -> dict[str, list[dict]]:
    generator = torch.Generator().manual_seed(3)
    noise, target = torch.randn(2, 1, 16, 16, generator=generator)
    text = {branch: torch.randn(1, 8, 32, generator=generator) for branch in ("cond", "uncond")}
    pooled = {branch: torch.randn(1, 32, generator=generator) for branch in ("cond", "uncond")}
    calls = {"cond": [], "uncond": []}
    for step in range(CFG_STEPS):
        progress = step / CFG_STEPS
        for branch in calls:
            calls[branch].append(
                dict(
                    hidden_states=(1 - progress) * noise + progress * target,
                    encoder_hidden_states=text[branch],
                    pooled_projections=pooled[branch],
                    timestep=torch.tensor([1.0 - progress]),
                    img_ids=torch.arange(48.0).reshape(16, 3) / 48,
                    txt_ids=torch.zeros(8, 3),
                    guidance=torch.tensor([3.5]),
                    return_dict=False,
                )
            )
    return calls


def cfg_config(sync) -> TeaCacheConfig:
    return TeaCacheConfig(thresh=0.3, coefficients=IDENTITY, num_inference_steps=CFG_STEPS, sync_decisions=sync)


def cfg_parallel(rank: int, world: int) -> dict:
    from support import make_flux_transformer

    calls = cfg_inputs()
    # The single-process reference: cond and uncond interleaved, one state per branch.
    model = make_flux_transformer()
    handle = apply_teacache(model, cfg_config("auto"))
    reference = {"cond": [], "uncond": []}
    with torch.no_grad():
        for step in range(CFG_STEPS):
            for branch in ("cond", "uncond"):
                with model.cache_context(branch):
                    reference[branch].append(model(**calls[branch][step])[0])
    reference_records = {
        branch: [str(r.decision) for r in handle.stats.records if r.branch == branch] for branch in reference
    }

    branch = ("cond", "uncond")[rank]
    result = {"branch": branch, "reference": reference_records}
    for sync in ("auto", True):
        model = make_flux_transformer()
        handle = apply_teacache(model, cfg_config(sync))
        with torch.no_grad(), model.cache_context(branch):
            outputs = [model(**call)[0] for call in calls[branch]]
        result[str(sync)] = dict(
            decisions=decisions(handle),
            rel_l1=distances(handle),
            branches=sorted(_find_hook(model).state_manager._state_cache),
            output_diff=max((o - r).abs().max().item() for o, r in zip(outputs, reference[branch])),
        )
    return result


# --- diffusers' context parallelism (Ulysses over gloo, native attention) -----------------------------


def flux_calls() -> list[dict]:
    generator = torch.Generator().manual_seed(5)
    noise, target = torch.randn(2, 1, 16, 16, generator=generator)
    text, pooled = torch.randn(1, 8, 32, generator=generator), torch.randn(1, 32, generator=generator)
    return [
        dict(
            hidden_states=(1 - step / STEPS) * noise + step / STEPS * target,
            encoder_hidden_states=text,
            pooled_projections=pooled,
            timestep=torch.tensor([1.0 - step / STEPS]),
            img_ids=torch.arange(48.0).reshape(16, 3) / 48,
            txt_ids=torch.zeros(8, 3),
            guidance=torch.tensor([3.5]),
            return_dict=False,  # diffusers' context-parallel hooks take tensors, not output classes
        )
        for step in range(STEPS)
    ]


def make_wan_transformer():
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=16,
        ffn_dim=32,
        num_layers=2,
        rope_max_seq_len=32,
    )
    return model.eval()


def wan_calls() -> list[dict]:
    generator = torch.Generator().manual_seed(7)
    noise, target = torch.randn(2, 1, 4, 2, 4, 4, generator=generator)  # 2 frames of 4x4: 8 tokens
    text = torch.randn(1, 6, 16, generator=generator)
    return [
        dict(
            hidden_states=(1 - step / STEPS) * noise + step / STEPS * target,
            timestep=torch.tensor([1000.0 * (1 - step / STEPS)]),
            encoder_hidden_states=text,
            return_dict=False,
        )
        for step in range(STEPS)
    ]


def make_qwen_transformer():
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(0)
    model = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=(4, 6, 6),
    )
    return model.eval()


def qwen_calls() -> list[dict]:
    generator = torch.Generator().manual_seed(9)
    noise, target = torch.randn(2, 1, 16, 16, generator=generator)  # a 4x4 grid of patches
    text = torch.randn(1, 7, 32, generator=generator)  # 7 text tokens: shards of 4 and 3
    return [
        dict(
            hidden_states=(1 - step / STEPS) * noise + step / STEPS * target,
            encoder_hidden_states=text,
            encoder_hidden_states_mask=None,
            timestep=torch.tensor([1.0 - step / STEPS]),
            img_shapes=[[(1, 4, 4)]],
            return_dict=False,
        )
        for step in range(STEPS)
    ]


def make_flux():
    from support import make_flux_transformer

    return make_flux_transformer()


EVEN = {}
UNEVEN = {"ulysses_anything": True}  # diffusers cuts sequences of any length, the last shard shorter
CP_MODELS = {
    # FLUX.1's plan splits the inputs at the transformer: the modulated input is a shard on each rank.
    "flux": (make_flux, flux_calls, 0.25, EVEN),
    # Wan's plan splits the sequence at the first block: the streams are cut inside the blocks.
    "wan": (make_wan_transformer, wan_calls, 2.0, EVEN),
    # So does Qwen-Image's, both streams, here unevenly (7 text tokens: 4 and 3). Uneven image tokens would
    # need an all_gather of unequal tensors at proj_out, which gloo lacks (NCCL has it).
    "qwen": (make_qwen_transformer, qwen_calls, 0.25, UNEVEN),
}


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def context_parallel(rank: int, world: int) -> dict:
    from diffusers import ContextParallelConfig

    result = {}
    for name, (make, make_calls, thresh, options) in CP_MODELS.items():
        calls = make_calls()
        config = dict(thresh=thresh, coefficients=IDENTITY, num_inference_steps=STEPS)
        model = make()
        handle = apply_teacache(model, TeaCacheConfig(**config))
        with torch.no_grad():
            reference = [model(**call)[0] for call in calls]
        result[name] = {"reference": dict(decisions=decisions(handle), rel_l1=distances(handle))}
        # Unsynced only where the modulated input is whole on every rank (cut inside the blocks): elsewhere
        # ranks may decide differently and hang in the attention's all-to-all.
        orders = ("teacache_first", "parallel_first") + (("unsynced",) if name in ("wan", "qwen") else ())
        for order in orders:
            model = make()
            if order == "teacache_first":
                handle = apply_teacache(model, TeaCacheConfig(**config))
            model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world, **options))
            if order != "teacache_first":
                handle = apply_teacache(model, TeaCacheConfig(**config, sync_decisions=order != "unsynced"))
            warnings = Warnings()
            logging.getLogger("teacli").addHandler(warnings)
            try:
                with torch.no_grad():
                    outputs = [model(**call)[0] for call in calls]
            finally:
                logging.getLogger("teacli").removeHandler(warnings)
            result[name][order] = dict(
                warnings=warnings.messages,
                decisions=decisions(handle),
                rel_l1=distances(handle),
                hooks=list(model._diffusers_hook._hook_order),
                output_diff=max((o - r).abs().max().item() for o, r in zip(outputs, reference)),
            )
    return result


SCENARIOS = {"toy_shards": toy_shards, "cfg_parallel": cfg_parallel, "context_parallel": context_parallel}


def main(rank: int, world: int, init_method: str, out: Path) -> None:
    torch.set_num_threads(1)
    # diffusers picks the device as rank % torch.accelerator.device_count(), which is 0 without an accelerator.
    if torch.accelerator.device_count() == 0:
        torch.accelerator.device_count = lambda: 1
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world, timeout=timedelta(seconds=60))
    try:
        results = {}
        for name, scenario in SCENARIOS.items():
            results[name] = scenario(rank, world)
            dist.barrier()
        (out / f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
