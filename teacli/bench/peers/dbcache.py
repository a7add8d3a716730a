"""cache-dit's DBCache as a peer, when the optional `cache-dit` package is installed: its Fn/Bn fitted to the
model's blocks, separate CFG where the pipeline runs true CFG as two calls, its log lines kept off stdout."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import logging
import re
import sys
from collections.abc import Callable
from typing import Any

import torch

from ...engine.apply import denoisers
from ...engine.config import TeaCacheError
from ...generation.counting import block_lists
from .base import INSTALL_PEERS, Peer, PeerError, PeerSetting, format_setting, peer_errors
from .diffusers_peer import AttributeSnapshot

logger = logging.getLogger("teacli")


class DBCachePeer(Peer):
    method = "dbcache"
    title = "cache-dit DBCache"

    def unavailable(self, pipe: Any) -> str | None:
        try:
            spec = importlib.util.find_spec("cache_dit")
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            return f"cache-dit is not installed: {INSTALL_PEERS}"
        try:
            version = importlib.metadata.version("cache-dit")
        except importlib.metadata.PackageNotFoundError:
            version = "0"
        if _release(version) < (1, 1):
            # 1.0.0 has no public DBCacheConfig; 1.1.0 has every name and field used here (checked floor)
            return f"cache-dit {version} is older than the 1.1 API teacli uses: pip install -U 'cache-dit>=1.1,<2'"
        try:
            cache_dit = _import_cache_dit()
        except Exception as error:  # noqa: BLE001 - any import failure means it cannot run
            return f"cache-dit {version} fails to import ({type(error).__name__}: {error}); reinstall: {INSTALL_PEERS}"
        try:
            _, names = cache_dit.supported_pipelines()
        except Exception:  # noqa: BLE001
            names = []
        kind = type(pipe).__name__
        if not any(kind.startswith(name) for name in names):
            return f"cache-dit {version} has no block adapter for {kind}"
        blocks = cached_block_count(pipe)
        if blocks < 2:
            return (
                f"{self.title} needs 2+ transformer blocks per block list (one computed, one cached); "
                f"{kind} has {blocks}"
            )
        return None

    def settings(self, steps: int, wide: bool = False) -> list[PeerSetting]:
        # F (Fn_compute_blocks), B (Bn_compute_blocks), R (residual_diff_threshold) in cache-dit's notation:
        # F8B0 R0.08: DBCacheConfig's defaults (src/cache_dit/caching/cache_contexts/cache_config.py);
        # F1B0 R0.08 and F1B0 R0.2: its FLUX.1-dev rows, 1.59x and 2.90x on an L20
        # (vipshop/cache-dit docs/benchmark/NVIDIA_GPU.md). Its 8 warmup steps are for 28 steps; fewer
        # steps warm up proportionally. Bn stays 0: the counter's "computed" (last block ran) assumes it.
        # fit() brings Fn and Bn within the model's block count (F8 does not fit a model of 8 blocks or fewer).
        # Wide: F1B0 (its fastest FLUX.1-dev recipe) across R, with half the warm-up (4 steps at 28): the
        # 8 computed warm-up steps alone are 16 of 56 calls with true CFG, above the budgets worth comparing.
        warmup = max(1, min(8, round((4 if wide else 8) * steps / 28)))
        recipes = tuple((1, r) for r in (0.08, 0.12, 0.2, 0.3, 0.5, 0.8)) if wide else ((8, 0.08), (1, 0.08), (1, 0.2))
        return [
            self._setting(
                {
                    "Fn_compute_blocks": f,
                    "Bn_compute_blocks": 0,
                    "residual_diff_threshold": r,
                    "max_warmup_steps": warmup,
                },
                _dbcache_label(f, 0, r),
            )
            for f, r in recipes
        ]

    def fit(self, pipe: Any, setting: PeerSetting, request: Any = None) -> tuple[PeerSetting, str | None]:
        """Fn + Bn below the block count of each list cache-dit caches (it asserts Fn, Bn <= blocks mid-run
        otherwise); with a request, separate CFG where the pipeline runs true CFG as two transformer calls
        (cache-dit's FLUX.1 adapter assumes one call per step, so cond and uncond were compared with each
        other and nothing was ever cached)."""
        params = self._check_setting(setting)
        asked_fn, asked_bn = int(params.get("Fn_compute_blocks", 8)), int(params.get("Bn_compute_blocks", 0))
        blocks = cached_block_count(pipe)
        fn, bn = fit_compute_blocks(asked_fn, asked_bn, blocks)
        params.update(Fn_compute_blocks=fn, Bn_compute_blocks=bn)
        if request is not None and (separate := runs_true_cfg(pipe, request)) is not None:
            params["enable_separate_cfg"] = int(separate)
        label = setting.label
        if (fn, bn) != (asked_fn, asked_bn):
            label = f"{self.method}@{_dbcache_label(fn, bn, params.get('residual_diff_threshold', 0.08))}"
        fitted = PeerSetting(self.method, format_setting(params), label)
        if (fn, bn) == (asked_fn, asked_bn):
            return fitted, None
        note = (
            f"{setting.label} runs as {label}: Fn_compute_blocks + Bn_compute_blocks must stay below the {blocks} "
            f"transformer blocks {self.title} caches on {type(pipe).__name__}"
        )
        return fitted, note

    def apply(self, pipe: Any, setting: PeerSetting, steps: int) -> Callable[[], None]:
        self._check_setting(setting)
        reason = self.unavailable(pipe)
        if reason is not None:
            raise PeerError(reason)
        fitted, note = self.fit(pipe, setting)  # a no-op on a setting fit() already adapted
        if note is not None:
            logger.warning(note)
        params = fitted.params()
        if "enable_separate_cfg" in params:
            params["enable_separate_cfg"] = bool(params["enable_separate_cfg"])
        cache_dit = _import_cache_dit()

        modules = denoisers(pipe)
        snapshot = AttributeSnapshot(modules.values())
        call_before = vars(type(pipe)).get("__call__")

        def restore() -> None:
            # disable_cache leaves the transformer's original forward bound on the instance and may leave
            # the pipeline class's __call__ wrapped; put both back as they were.
            snapshot.restore()
            if vars(type(pipe)).get("__call__") is not call_before and call_before is not None:
                type(pipe).__call__ = call_before

        def undo() -> None:
            try:
                with peer_errors(f"{self.title} ({fitted.label}) undo"):
                    _import_cache_dit().disable_cache(pipe)
            finally:
                restore()

        with peer_errors(f"{self.title} ({fitted.label})"):
            config = cache_dit.DBCacheConfig(num_inference_steps=steps, **params)
            try:
                cache_dit.enable_cache(pipe, cache_config=config)
            except BaseException:
                try:
                    cache_dit.disable_cache(pipe)
                except Exception:  # noqa: BLE001 - half enabled: the snapshot below still restores
                    pass
                restore()
                raise
        return undo


def _dbcache_label(fn: int, bn: int, threshold: Any) -> str:
    return f"F{fn}B{bn}/{threshold}"


def fit_compute_blocks(fn: int, bn: int, blocks: int) -> tuple[int, int]:
    """DBCache's Fn (blocks computed in front) and Bn (at the back) brought within `blocks`: Fn >= 1 and
    Fn + Bn < blocks, so at least one block is cached. Bn keeps what it can, then Fn takes what is left."""
    if blocks < 2:
        raise PeerError(
            "cache-dit DBCache needs 2+ transformer blocks per block list (one computed, one cached); "
            f"the transformer has {blocks}"
        )
    bn = max(0, min(bn, blocks - 2))
    fn = max(1, min(fn, blocks - 1 - bn))
    return fn, bn


def cached_block_count(pipe: Any) -> int:
    """The blocks of the shortest block list cache-dit caches on this pipeline: each list gets its own
    DBCache context, and Fn and Bn apply to each. The lists come from cache-dit's own block adapter for
    the pipeline (it may join a transformer's lists into one, as for FLUX.1); where it cannot say, from
    the transformers' own lists of blocks (the shortest, the bound that always holds)."""
    lists = _cache_dit_block_lists(pipe)
    if not lists:
        try:
            modules = denoisers(pipe)
        except TeaCacheError:
            return 0
        lists = [blocks for module in modules.values() for _, blocks in block_lists(module)]
    return min((len(blocks) for blocks in lists), default=0)


def _cache_dit_block_lists(pipe: Any) -> list[torch.nn.ModuleList]:
    """The block lists cache-dit's registered adapter for `pipe` caches; [] when it has none or fails.
    skip_post_init builds the adapter without patching anything (cache-dit checks its CFG setting so)."""
    try:
        cache_dit = _import_cache_dit()
        adapter = cache_dit.BlockAdapterRegister.get_adapter(pipe, skip_post_init=True)
    except Exception:  # noqa: BLE001 - another cache-dit, or an adapter that rejects this transformer
        return []
    found: list[torch.nn.ModuleList] = []

    def collect(value: Any) -> None:
        if isinstance(value, torch.nn.ModuleList):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            for item in value:
                collect(item)

    collect(getattr(adapter, "blocks", None))
    return found


def runs_true_cfg(pipe: Any, request: Any) -> bool | None:
    """Whether `request` runs true CFG on this pipeline, the cond and uncond branches as two transformer
    calls per step (pipelines taking `true_cfg_scale`: a negative prompt and a scale above 1); None for
    pipelines without true_cfg_scale, where cache-dit's adapter default stands."""
    from ...generation.runner import call_parameters, pipeline_kwargs

    try:
        if "true_cfg_scale" not in call_parameters(pipe):
            return None
        kwargs = pipeline_kwargs(pipe, request)
    except Exception:  # noqa: BLE001 - the request itself fails on this pipeline: the run will say so
        return None
    return "negative_prompt" in kwargs and float(kwargs.get("true_cfg_scale", 1.0)) > 1.0


class _CurrentStderr:
    """A stream writing to whatever sys.stderr is at the time of the write (a test runner may swap it)."""

    def write(self, text: str) -> int:
        stream = sys.stderr
        return stream.write(text) if stream is not None else len(text)

    def flush(self) -> None:
        stream = sys.stderr
        if stream is not None:
            stream.flush()


_STDERR = _CurrentStderr()


def _import_cache_dit() -> Any:
    """cache_dit, its log lines kept off stdout: cache-dit's loggers ("CACHE_DIT", "cache_dit.*") share
    a StreamHandler bound to sys.stdout, which would mix its lines into `teacli bench --json -`. Every
    console handler of theirs is pointed at stderr instead (in place, so the loggers cache-dit creates
    later, which reuse that handler, follow) and passes only errors unless teacli's logger is at DEBUG
    (--verbose)."""
    import cache_dit

    verbose = logger.isEnabledFor(logging.DEBUG)
    for name, item in list(logging.root.manager.loggerDict.items()):
        if not isinstance(item, logging.Logger) or not (name == "CACHE_DIT" or name.split(".")[0] == "cache_dit"):
            continue
        for handler in item.handlers:
            if not isinstance(handler, logging.StreamHandler) or isinstance(handler, logging.FileHandler):
                continue
            state = vars(handler)
            if state.get("stream") is not _STDERR:
                state.setdefault("_teacli_level", handler.level)
                state.pop("flush", None)  # cache-dit binds sys.stdout.flush on the instance
                with contextlib.suppress(Exception):
                    handler.stream.flush()
                handler.stream = _STDERR
            handler.setLevel(state["_teacli_level"] if verbose else logging.ERROR)
    return cache_dit


def _release(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)(?:\.(\d+))?", version)
    return (int(match.group(1)), int(match.group(2) or 0)) if match else (0, 0)
