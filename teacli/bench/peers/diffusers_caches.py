"""diffusers' own caches as peers: FirstBlockCache, TaylorSeer, and MagCache calibrated on the model first."""

from __future__ import annotations

import contextlib
import io
import re
import weakref
from collections.abc import Callable
from typing import Any

import torch

from ...engine.apply import denoisers
from ...engine.diffusers_internals import magcache_tail_hooks, taylorseer_block_patterns, watch_magcache_calibration
from .base import PeerError, PeerSetting
from .diffusers_peer import DiffusersPeer, diffusers_config_class, diffusers_version, enable_on_denoisers


class FirstBlockCachePeer(DiffusersPeer):
    method = "fbcache"
    title = "diffusers FirstBlockCache"
    config_name = "FirstBlockCacheConfig"
    min_blocks = 2  # apply_first_block_cache takes a head and a tail block

    def settings(self, steps: int, wide: bool = False) -> list[PeerSetting]:
        if wide:  # FirstBlockCacheConfig's own default 0.05 up to 0.5, far past the aggressive recipe
            return [self._setting({"threshold": t}, str(t)) for t in (0.05, 0.08, 0.12, 0.2, 0.3, 0.5)]
        # ParaAttention's FLUX.1-dev guide (chengzeyi/ParaAttention doc/fastest_flux.md): 0.08 is "the default
        # value for FLUX models" (1.55x on an L20, 28 steps) and 0.12 its faster recipe ("a larger value to make
        # the cache take effect"); 0.2: the aggressive end, apply_first_block_cache's docstring example.
        # (FirstBlockCacheConfig's own default, 0.05, is below FLUX's recommended value.)
        return [self._setting({"threshold": t}, str(t)) for t in (0.08, 0.12, 0.2)]

    def make_config(self, module: torch.nn.Module, name: str, params: dict[str, Any], steps: int) -> Any:
        return diffusers_config_class(self.config_name)(**params)


class TaylorSeerPeer(DiffusersPeer):
    method = "taylorseer"
    title = "diffusers TaylorSeer"
    config_name = "TaylorSeerCacheConfig"
    needs_block_metadata = False  # it hooks modules by name pattern

    def settings(self, steps: int, wide: bool = False) -> list[PeerSetting]:
        # N (cache_interval) and O (max_order) in the TaylorSeer paper's notation (arXiv 2503.06923), with
        # 3 computed warmup steps throughout (the reference's first_enhance=3, diffusers' default):
        # N=6, O=1: TaylorSeer's own FLUX.1-dev setting (Shenyi-Z/TaylorSeer TaylorSeer-FLUX and
        # TaylorSeers-Diffusers/taylorseer_flux cache_functions/cache_init.py, 'Taylor' mode);
        # N=5, O=1: TaylorSeerCacheConfig's defaults and its docstring's FLUX.1-dev example (diffusers
        # hooks/taylorseer_cache.py); N=3, O=1: a conservative point of ours (the reference README lowers N
        # for quality).
        # Wide: N from 2 to 8, and N=2 after a longer warm-up (8 steps at 28): the most calls, about 36 of 56
        # with true CFG, where N=2 alone reaches about 30.
        recipes = ((3, 1, 3), (5, 1, 3), (6, 1, 3))
        if wide:
            longer = round(8 * steps / 28)
            recipes = ((2, 1, longer),) if longer > 3 else ()
            recipes += ((2, 1, 3), (3, 1, 3), (4, 1, 3), (6, 1, 3), (8, 1, 3))
        return [
            self._setting(
                {"cache_interval": n, "max_order": o, "disable_cache_before_step": w},
                f"N{n}O{o}" + (f"W{w}" if w != 3 else ""),
            )
            for n, o, w in recipes
        ]

    def unavailable(self, pipe: Any) -> str | None:
        reason = super().unavailable(pipe)
        if reason is not None:
            return reason
        patterns = taylorseer_block_patterns()
        if patterns is None:
            return None
        for name, module in denoisers(pipe).items():
            if not any(re.fullmatch(p, n) for n, _ in module.named_modules() for p in patterns):
                kind = type(module).__name__
                return f"{self.title} finds no attention module under the blocks of {name} ({kind}): nothing to predict"
        return None

    def make_config(self, module: torch.nn.Module, name: str, params: dict[str, Any], steps: int) -> Any:
        # The Taylor factors in the model's own dtype: fp32 on CPU, bf16 on a bf16 GPU model (the
        # docstring example uses fp32; the default bf16 would round an fp32 model's features).
        dtype = getattr(module, "dtype", None) or torch.float32
        return diffusers_config_class(self.config_name)(taylor_factors_dtype=dtype, **params)


class MagCachePeer(DiffusersPeer):
    """MagCache with ratios calibrated on this model: prepare() runs the request once with
    `MagCacheConfig(calibrate=True)` and keeps the per-step ratios its tail-block hook computes."""

    method = "magcache"
    title = "diffusers MagCache"
    config_name = "MagCacheConfig"
    needs_cache_context = False  # its hooks set a context of their own when the pipeline names none

    def __init__(self) -> None:
        # denoiser module -> {steps: ratios}; weak, so a bench does not keep its pipeline alive
        self._ratios: weakref.WeakKeyDictionary[torch.nn.Module, dict[int, list[float]]] = weakref.WeakKeyDictionary()

    def settings(self, steps: int, wide: bool = False) -> list[PeerSetting]:
        # threshold (E), max_skip_steps (K), retention_ratio (R) in MagCache's own notation:
        # E0.06 K3 R0.2: MagCacheConfig's defaults (diffusers hooks/mag_cache.py, the paper's default);
        # E0.24 K5 R0.1: MagCache's FLUX.1-dev recipe, 2.8x (Zehong-Ma/MagCache MagCache4FLUX/README.md and
        # magcache_flux.py); E0.12 K4 R0.2: a point between the two. Wide: past the FLUX recipe, E and K
        # grown together (K bounds the run of skipped steps, so E alone would stop saving calls).
        recipes = ((0.06, 3, 0.2), (0.12, 4, 0.2), (0.24, 5, 0.1))
        if wide:
            recipes += ((0.4, 6, 0.1), (0.6, 8, 0.1), (1.0, 10, 0.1))
        return [
            self._setting({"threshold": e, "max_skip_steps": k, "retention_ratio": r}, str(e)) for e, k, r in recipes
        ]

    def calibrated_ratios(self, pipe: Any, steps: int) -> dict[str, list[float]] | None:
        """The ratios prepare() calibrated for `steps`, per denoiser name; None before prepare()."""
        found = {name: self._ratios.get(module, {}).get(steps) for name, module in denoisers(pipe).items()}
        return None if any(ratios is None for ratios in found.values()) else found

    def prepare(self, pipe: Any, run: Callable[[], Any], steps: int) -> None:
        config_class = diffusers_config_class(self.config_name)
        modules = denoisers(pipe)
        configs = {name: config_class(calibrate=True, num_inference_steps=steps) for name in modules}
        captured: dict[str, dict[str, list[float]]] = {name: {} for name in modules}
        undo = enable_on_denoisers(modules, configs)
        try:
            for name, module in modules.items():
                _capture_calibration(module, captured[name])
            # calibrate mode print()s the ratios at the end of the run; they are read from the hook instead
            with contextlib.redirect_stdout(io.StringIO()):
                run()
        finally:
            undo()
        for name, module in modules.items():
            per_branch = list(captured[name].values())
            if not per_branch:
                raise PeerError(f"MagCache calibration saw no call of {name}'s last block; the run did not denoise")
            length = min(len(ratios) for ratios in per_branch)
            # one ratio per step (the first is 1.0); CFG branches run as separate calls are averaged
            ratios = [sum(r[i] for r in per_branch) / len(per_branch) for i in range(length)]
            self._ratios.setdefault(module, {})[steps] = ratios

    def make_config(self, module: torch.nn.Module, name: str, params: dict[str, Any], steps: int) -> Any:
        ratios = self._ratios.get(module, {}).get(steps)
        if ratios is None:
            raise PeerError(f"magcache has no ratios calibrated for {name} at {steps} steps: call prepare() first")
        # A denoiser that sees only part of the loop (Wan 2.2's experts) has as many ratios as calls it saw.
        return diffusers_config_class(self.config_name)(
            mag_ratios=list(ratios), num_inference_steps=len(ratios), **params
        )


def _capture_calibration(module: torch.nn.Module, into: dict[str, list[float]]) -> None:
    """Keep the ratios the tail-block hook computes, per cache_context branch, as it computes them: the hook
    clears its own list at the end of the loop and the pipeline resets its state after the call."""

    def seen(state: Any, context: Any) -> None:
        into[context.name if context is not None else "default"] = [float(r) for r in state.calibration_ratios]

    tails = magcache_tail_hooks(module)
    if len(tails) != 1 or not watch_magcache_calibration(tails[0], seen):
        raise PeerError(
            f"diffusers {diffusers_version()}'s MagCache hooks are not the ones teacli reads the calibration from; "
            "run --against without magcache"
        )
