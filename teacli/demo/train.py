"""Train teacli-shapes from scratch on a CPU: the VAE first, then the transformer by flow matching.

    python -m teacli.demo.train --out DIR [--variant teacli-shapes-fine]

`--variant` picks the components (teacli.demo.model.VARIANTS) and the settings each was trained
with (VARIANT_SETTINGS); the default is teacli-shapes. Options given on the command line override
the variant's settings.

Every random draw comes from `--seed` (pictures, captions, initial weights, noise), so the same
command on the same torch build and `--threads` writes the same weights. The text encoders are
trained with the transformer: without absolute positions FLUX's text tokens could not tell the
shape's colour from the background's, and at their seeded initialisation the encoders barely do.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from diffusers import FluxPipeline

from teacli.demo import model
from teacli.demo.shapes import SIZE, Caption, draw, sample_caption
from teacli.engine.diffusers_internals import latent_image_ids, pack_latents
from teacli.models.embedded.text import clip_text_encoder, clip_tokenizer, t5_text_encoder, t5_tokenizer

CAPTION_DROPOUT = 0.1  # empty captions, so true CFG (a negative prompt) has an unconditional branch


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    vae_steps: int = 3000
    vae_batch: int = 8
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    dataset: int = 24000  # pictures encoded once for the transformer's training
    steps: int = 4000
    batch: int = 64
    lr: float = 5e-4
    warmup: int = 200
    ema: float = 0.999
    threads: int = 2
    sample_latents: bool = True  # the transformer learns latents drawn from the VAE's posterior; False: its mean
    variant: str = model.DEFAULT_VARIANT  # teacli.demo.model.VARIANTS: the VAE's scale factor, the transformer's size

    @classmethod
    def for_variant(cls, name: str) -> TrainConfig:
        """The settings `name` was trained with: TrainConfig's defaults with VARIANT_SETTINGS[name] over them."""
        model.variant(name)  # an unknown name fails here
        return cls(**{**VARIANT_SETTINGS.get(name, {}), "variant": name})


# Where a variant's training differs from TrainConfig's defaults (which are teacli-shapes').
# teacli-shapes-fine: sized to train in about an hour on one thread; a transformer step costs
# about 0.9 s at batch 64 there (64 image tokens, 9 blocks), against the default's 0.5 s on two.
VARIANT_SETTINGS: dict[str, dict] = {
    # Its VAE, with 4096 latent values for a picture, leaves the posterior wide (std about 0.9 of the spread of
    # the means), which costs the shipped weights some shapes (76% read right uncached); --sample-latents false
    # trains on the means instead (not yet shipped: it needs the plans and benchmarks made again).
    "teacli-shapes-fine": {"steps": 3600, "batch": 64, "threads": 1},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m teacli.demo.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write the pipeline into (must not exist)")
    parser.add_argument("--variant", choices=list(model.VARIANTS), default=model.DEFAULT_VARIANT)
    for name, value in asdict(TrainConfig()).items():
        if name != "variant":  # None: not given, the variant's setting applies
            help = f"default: the variant's setting ({value} for {model.DEFAULT_VARIANT})"
            kind = _boolean if isinstance(value, bool) else type(value)
            parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, help=help)
    args = parser.parse_args(argv)
    out: Path = args.out.expanduser()
    if out.exists():
        print(f"error: {out} already exists; choose a new --out or remove it first", file=sys.stderr)
        return 1
    if not out.parent.is_dir():
        print(f"error: directory {out.parent} does not exist; create it or choose another --out", file=sys.stderr)
        return 1
    defaults = TrainConfig.for_variant(args.variant)
    given = {name: getattr(args, name) for name in asdict(defaults) if getattr(args, name) is not None}
    config = replace(defaults, **given)
    train(config, out, log=lambda line: print(line, flush=True))
    return 0


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def train(config: TrainConfig, out: Path, log=print) -> dict:
    """Train both stages and save the pipeline to `out` atomically; returns the training record."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(config.threads)  # CPU reductions split by thread: the count is part of the seed
    torch.use_deterministic_algorithms(True)
    try:
        return _train(config, out, log)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train(config: TrainConfig, out: Path, log) -> dict:
    spec = model.variant(config.variant)  # before any work: an unknown variant fails at once
    started = time.perf_counter()
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    pipe = FluxPipeline(
        scheduler=model.scheduler(),
        vae=model.vae(spec.name),
        text_encoder=clip_text_encoder(),
        tokenizer=clip_tokenizer(),
        text_encoder_2=t5_text_encoder(),
        tokenizer_2=t5_tokenizer(),
        transformer=model.transformer(spec.name),
    )
    if pipe.vae_scale_factor != spec.vae_scale_factor:
        raise AssertionError(f"{spec.name}: scale factor {pipe.vae_scale_factor}, not {spec.vae_scale_factor}")
    vae_loss = train_vae(pipe.vae, config, rng, log)
    vae_seconds = time.perf_counter() - started
    latents, captions = encode_dataset(pipe.vae, config, rng)
    flow_loss = train_transformer(pipe, latents, captions, config, log)
    record = {
        "config": asdict(config),
        "vae_loss": vae_loss,
        "flow_loss": flow_loss,
        "vae_seconds": round(vae_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
    }
    save_atomically(pipe, out, record)
    log(f"wrote {out} in {record['seconds'] / 60:.1f} min")
    return record


def to_tensor(images) -> torch.Tensor:
    """Pillow pictures to a (N, 3, 64, 64) tensor in [-1, 1], the VAE's range."""
    data = torch.stack([torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8) for image in images])
    return data.view(len(images), SIZE, SIZE, 3).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def draw_batch(rng: random.Random, count: int) -> tuple[list[Caption], torch.Tensor]:
    captions = [sample_caption(rng) for _ in range(count)]
    return captions, to_tensor([draw(caption, rng) for caption in captions])


def cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_vae(vae, config: TrainConfig, rng: random.Random, log) -> float:
    """L1 reconstruction with a light KL term, on freshly drawn pictures every step."""
    vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    recent: list[float] = []
    for step in range(config.vae_steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, config.vae_steps, config.vae_lr, min(100, config.warmup))
        _, images = draw_batch(rng, config.vae_batch)
        posterior = vae.encode(images).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        loss = (reconstruction - images).abs().mean() + config.kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        recent = (recent + [loss.item()])[-50:]
        if step % 100 == 0 or step == config.vae_steps - 1:
            log(f"vae {step:5d}/{config.vae_steps} loss {sum(recent) / len(recent):.4f}")
    vae.eval()
    return sum(recent) / max(1, len(recent))


@torch.no_grad()
def encode_dataset(vae, config: TrainConfig, rng: random.Random) -> tuple[torch.Tensor, list[str]]:
    """Draw and encode the transformer's pictures once; set the VAE's latent scale and shift from them.

    Returns the posterior mean and std stacked on dim 1, so each step can sample a fresh latent.
    """
    moments, captions = [], []
    for start in range(0, config.dataset, 256):
        batch_captions, images = draw_batch(rng, min(256, config.dataset - start))
        posterior = vae.encode(images).latent_dist
        moments.append(torch.stack([posterior.mean, posterior.std], dim=1))
        captions += [str(caption) for caption in batch_captions]
    moments = torch.cat(moments)
    means = moments[:, 0]
    # FluxPipeline decodes latents / scaling_factor + shift_factor: unit variance, zero mean.
    vae.register_to_config(shift_factor=means.mean().item(), scaling_factor=1.0 / means.std().item())
    return moments, captions


def train_transformer(pipe: FluxPipeline, moments: torch.Tensor, captions: list[str], config: TrainConfig, log):
    """Rectified flow: x_t = (1 - t) x_0 + t noise, predict noise - x_0, t logit-normal."""
    trained = [pipe.transformer, pipe.text_encoder, pipe.text_encoder_2]
    parameters = [p for module in trained for p in module.parameters()]
    for module in trained:
        module.train()
    ema = [p.detach().clone() for p in parameters]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(config.seed + 1)
    latent = SIZE // pipe.vae_scale_factor  # 8 for teacli-shapes, 16 for teacli-shapes-fine
    channels = pipe.transformer.config.in_channels // 4  # the VAE's latent channels, packed 2x2
    image_ids = latent_image_ids(pipe, 1, latent // 2, latent // 2, "cpu", torch.float32)
    shift, scale = pipe.vae.config.shift_factor, pipe.vae.config.scaling_factor
    recent: list[float] = []
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, config.steps, config.lr, config.warmup)
        index = torch.randint(len(captions), (config.batch,), generator=generator)
        mean, std = moments[index, 0], moments[index, 1]
        if config.sample_latents:
            x0 = (mean + std * torch.randn(mean.shape, generator=generator) - shift) * scale
        else:
            x0 = (mean - shift) * scale
        x0 = pack_latents(pipe, x0, config.batch, channels, latent, latent)
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.sigmoid(torch.randn(config.batch, generator=generator))
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * noise
        drop = torch.rand(config.batch, generator=generator) < CAPTION_DROPOUT
        prompts = ["" if dropped else captions[i] for i, dropped in zip(index.tolist(), drop.tolist())]
        prompt_embeds, pooled, text_ids = pipe.encode_prompt(
            prompt=prompts, prompt_2=None, device=torch.device("cpu"), max_sequence_length=model.MAX_SEQUENCE_LENGTH
        )
        velocity = pipe.transformer(
            hidden_states=xt,
            encoder_hidden_states=prompt_embeds,
            pooled_projections=pooled,
            timestep=t,
            img_ids=image_ids,
            txt_ids=text_ids,
            return_dict=False,
        )[0]
        loss = (velocity - (noise - x0)).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        decay = min(config.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for average, parameter in zip(ema, parameters):
                average.lerp_(parameter.detach(), 1 - decay)
        recent = (recent + [loss.item()])[-50:]
        if step % 100 == 0 or step == config.steps - 1:
            log(f"flow {step:5d}/{config.steps} loss {sum(recent) / len(recent):.4f}")
    with torch.no_grad():
        for average, parameter in zip(ema, parameters):
            parameter.copy_(average)
    for module in trained:
        module.eval()
    return sum(recent) / max(1, len(recent))


def save_atomically(pipe: FluxPipeline, out: Path, record: dict) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        pipe.save_pretrained(staging, safe_serialization=True)
        (staging / "training.json").write_text(json.dumps(record, indent=2) + "\n")
        staging.chmod(0o755)  # mkdtemp makes it private; a model directory is read by everyone
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
