"""The other caches `teacli bench` runs beside TeaCache, on the same pipeline and seed.

- fbcache: diffusers' FirstBlockCacheConfig (ParaAttention's First Block Cache).
- magcache: diffusers' MagCacheConfig, its magnitude ratios calibrated first on this very model and
  request with its own `calibrate=True` mode.
- taylorseer: diffusers' TaylorSeerCacheConfig.
- dbcache: cache-dit's DBCache, when the optional `cache-dit` package is installed.

Each peer offers two or three settings, conservative to aggressive, so it draws a curve; with `wide=True`
(`teacli bench --sweep`) five to six, spanning few to many computed calls, so curves can be compared at equal
computed calls (`--at-calls`). `fit()` adapts
a setting to the pipeline and request it will run on (DBCache: Fn/Bn within the model's block count,
separate CFG where the pipeline runs true CFG as two calls), saying so in one line. `apply()` enables
one setting and returns an undo that leaves the pipeline exactly as it was; the diffusers peers go
through each denoiser's `enable_cache` / `disable_cache` (CacheMixin), transformer_2 included. Whatever
else a peer raises while it is applied or run becomes a one-line `PeerError` (see `peer_errors`).

`count_transformer_calls` counts the transformer calls of any of them, and of TeaCache, the same way.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import inspect
import io
import logging
import re
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ..engine.hook import TeaCacheError, denoisers, synchronize
from ..errors import TeacliError
from ..limits import clip

INSTALL_PEERS = "pip install 'teacli[peers]'"
REASON_CHARS = 200  # a peer's own error message is cut to this in teacli's one-line PeerError

logger = logging.getLogger("teacli")


class PeerError(TeacliError, ValueError):
    """A peer cache cannot run as asked; the message says why and what to do."""


class UnknownPeerError(PeerError):
    """--against names a cache teacli does not know."""


@dataclass(frozen=True)
class PeerSetting:
    method: str  # "fbcache" | "magcache" | "taylorseer" | "dbcache"
    setting: str  # "name=value,name=value": what the peer's config gets
    label: str  # unique row label, e.g. "fbcache@0.05"

    def params(self) -> dict[str, int | float | str]:
        """The setting as keyword values: "threshold=0.05,max_skip_steps=3" -> {"threshold": 0.05, ...}."""
        return parse_setting(self.setting)


def parse_setting(text: str) -> dict[str, int | float | str]:
    params: dict[str, int | float | str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise PeerError(f"setting {text!r}: expected name=value pairs separated by commas, got {part!r}")
        params[name.strip()] = _number(value.strip())
    return params


def short_reason(error: BaseException) -> str:
    """An exception as one short line: its type and the start of its message."""
    text = str(error).strip()
    return clip(f"{type(error).__name__}: {text}" if text else type(error).__name__, REASON_CHARS)


@contextlib.contextmanager
def peer_errors(what: str) -> Iterator[None]:
    """Whatever a peer raises inside (its library's assertions, a failing hook) becomes one PeerError line
    naming `what` (the peer or its setting) and the short reason; PeerError passes as it is, and so do
    KeyboardInterrupt and the like (not Exceptions). The traceback is logged at debug level (--verbose)."""
    try:
        yield
    except PeerError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure of the peer's own code ends as one line
        logger.debug("%s failed", what, exc_info=True)
        raise PeerError(f"{what} failed in its own code: {short_reason(error)}") from error


def _number(value: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _format_setting(params: dict[str, Any]) -> str:
    return ",".join(f"{name}={value}" for name, value in params.items())


class Peer:
    """One other cache: whether it applies, its settings, one-time preparation, apply and undo."""

    method: str = ""
    title: str = ""  # who makes it, for messages

    def unavailable(self, pipe: Any) -> str | None:
        """None when it can run on this pipeline; else one line saying why not and what to do."""
        raise NotImplementedError

    def settings(self, steps: int, wide: bool = False) -> list[PeerSetting]:
        """The settings the bench runs, conservative to aggressive: the published recipes, or with `wide` a
        sweep of 5-6 points from many computed calls to few (at 28 steps with true CFG, about 55 down to 10
        of 56 on teacli-shapes), to draw a curve."""
        raise NotImplementedError

    def fit(self, pipe: Any, setting: PeerSetting, request: Any = None) -> tuple[PeerSetting, str | None]:
        """`setting` as it can run on this pipeline (and `request`, a GenerationRequest, when given), and one
        line saying what changed (None when nothing did). Raises PeerError when it cannot run at all."""
        self._check_setting(setting)
        return setting, None

    def prepare(self, pipe: Any, run: Callable[[], Any], steps: int) -> None:
        """One-time work before anything is measured; `run()` generates the bench's own request once."""

    def apply(self, pipe: Any, setting: PeerSetting, steps: int) -> Callable[[], None]:
        """Enable the cache at `setting`; the returned undo leaves the pipeline exactly as before."""
        raise NotImplementedError

    def _setting(self, params: dict[str, Any], label: str) -> PeerSetting:
        return PeerSetting(self.method, _format_setting(params), f"{self.method}@{label}")

    def _check_setting(self, setting: PeerSetting) -> dict[str, Any]:
        if setting.method != self.method:
            raise PeerError(f"{setting.label} is a {setting.method} setting, not {self.method}")
        return setting.params()


# ---------------------------------------------------------------------------------------------------------
# diffusers' caches


def _diffusers_config_class(name: str) -> type | None:
    import diffusers.hooks

    return getattr(diffusers.hooks, name, None)


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__


def _uses_cache_context(pipe: Any) -> bool:
    """Whether the pipeline names its transformer calls with `cache_context` (FBCache and TaylorSeer need it)."""
    try:
        source = inspect.getsource(type(pipe).__call__)
    except (OSError, TypeError):
        return True  # no source to read: let enable_cache and the run say
    return "cache_context" in source


def _block_lists(transformer: torch.nn.Module) -> list[tuple[str, torch.nn.ModuleList]]:
    """The transformer's lists of blocks, in registration order: the direct-child ModuleLists diffusers'
    caches hook (their names are diffusers' block identifiers), else every direct-child ModuleList holding
    a Linear."""
    from diffusers.utils.torch_utils import unwrap_module

    module = unwrap_module(transformer)
    children = [(n, c) for n, c in module.named_children() if isinstance(c, torch.nn.ModuleList) and len(c)]
    try:
        from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS as names
    except ImportError:  # moved in another diffusers: fall back on the generic rule
        names = ()
    known = [(n, c) for n, c in children if n in names]
    if known:
        return known
    return [(n, c) for n, c in children if any(isinstance(m, torch.nn.Linear) for m in c.modules())]


class _DiffusersPeer(Peer):
    config_name = ""
    needs_cache_context = True  # its hooks read the state of the current cache_context
    needs_block_metadata = True  # its hooks look blocks up in diffusers' TransformerBlockRegistry
    min_blocks = 1

    def unavailable(self, pipe: Any) -> str | None:
        if _diffusers_config_class(self.config_name) is None:
            return (
                f"{self.config_name} is not in diffusers {_diffusers_version()}: upgrade diffusers to run {self.method}"
            )
        try:
            modules = denoisers(pipe)
        except TeaCacheError as error:
            return str(error)
        from diffusers.models.cache_utils import CacheMixin

        for name, module in modules.items():
            kind = type(module).__name__
            if not isinstance(module, CacheMixin):
                return f"{name} ({kind}) is not a diffusers CacheMixin model (no enable_cache): {self.title} cannot run"
            blocks = [block for _, blocks in _block_lists(module) for block in blocks]
            if len(blocks) < self.min_blocks:
                return f"{self.title} needs {self.min_blocks}+ transformer blocks; {name} ({kind}) has {len(blocks)}"
            if self.needs_block_metadata and (missing := _unregistered_block(blocks)):
                version = _diffusers_version()
                return f"diffusers {version} has no block metadata for {missing} ({kind}): {self.title} cannot run"
        if self.needs_cache_context and not _uses_cache_context(pipe):
            kind = type(pipe).__name__
            return f"{kind} does not name its transformer calls with cache_context, which {self.title} needs"
        return None

    def make_config(self, module: torch.nn.Module, name: str, params: dict[str, Any], steps: int) -> Any:
        raise NotImplementedError

    def apply(self, pipe: Any, setting: PeerSetting, steps: int) -> Callable[[], None]:
        params = self._check_setting(setting)
        modules = denoisers(pipe)
        configs = {name: self.make_config(module, name, params, steps) for name, module in modules.items()}
        return _enable(modules, configs)


def _unregistered_block(blocks: list[torch.nn.Module]) -> str | None:
    """The first block class diffusers' TransformerBlockRegistry lacks (FBCache and MagCache need its metadata)."""
    from diffusers.utils.torch_utils import unwrap_module

    try:
        from diffusers.hooks._helpers import TransformerBlockRegistry
    except ImportError:
        return None  # cannot tell here; enable_cache will say
    for block in blocks:
        kind = type(unwrap_module(block))
        try:
            TransformerBlockRegistry.get(kind)
        except ValueError:
            return kind.__name__
    return None


def _enable(modules: dict[str, torch.nn.Module], configs: dict[str, Any]) -> Callable[[], None]:
    """enable_cache on every denoiser; the undo disables them and restores what enable/disable leave behind."""
    snapshot = _AttributeSnapshot(modules.values())
    enabled: list[torch.nn.Module] = []

    def undo() -> None:
        for module in reversed(enabled):
            if module.is_cache_enabled:
                module.disable_cache()
        enabled.clear()
        snapshot.restore()

    try:
        for name, module in modules.items():
            if module.is_cache_enabled:
                raise PeerError(
                    f"{name} already has a diffusers cache ({type(module._cache_config).__name__}); "
                    "disable it first, caches do not stack"
                )
            module.enable_cache(configs[name])
            enabled.append(module)
    except BaseException:
        undo()
        raise
    return undo


class _AttributeSnapshot:
    """What enable_cache/disable_cache leave on modules: after disable_cache, every hooked block keeps its
    original bound `forward` as an instance attribute and an empty `_diffusers_hook` registry, and the
    transformer an instance `_cache_config = None`. restore() puts back exactly the attributes there were,
    and the registration order of each module's children: cache-dit's undo re-registers FLUX's block lists
    in another order (single_transformer_blocks before transformer_blocks), and diffusers' FirstBlockCache
    and teacli's call counter take the registration order as the order the blocks run in."""

    KEYS = ("forward", "_diffusers_hook", "_cache_config")

    def __init__(self, roots: Iterable[torch.nn.Module]) -> None:
        self.roots = list(roots)
        self.before: list[tuple[torch.nn.Module, dict[str, Any]]] = [
            (module, {key: vars(module)[key] for key in self.KEYS if key in vars(module)})
            for root in self.roots
            for module in root.modules()
        ]
        self.children: list[tuple[torch.nn.Module, list[str]]] = [
            (module, list(vars(module)["_modules"])) for root in self.roots for module in root.modules()
        ]

    def restore(self) -> None:
        for module, order in self.children:
            children = vars(module)["_modules"]
            if list(children) != order and set(children) == set(order):
                reordered = {name: children[name] for name in order}
                children.clear()
                children.update(reordered)
        for module, before in self.before:
            attrs = vars(module)
            registry = attrs.get("_diffusers_hook")
            if registry is not None and registry is not before.get("_diffusers_hook") and registry._hook_order:
                continue  # someone else hooked it meanwhile: leave their hooks alone
            hooked = registry is not None and bool(registry._hook_order)
            for key in self.KEYS:
                if key == "forward" and hooked:
                    continue  # a remaining hook owns forward
                if key in before:
                    attrs[key] = before[key]
                else:
                    attrs.pop(key, None)
        for root in self.roots:
            registry = vars(root).get("_diffusers_hook")
            if registry is not None:
                registry.invalidate_child_registries_cache()


class FirstBlockCachePeer(_DiffusersPeer):
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
        return _diffusers_config_class(self.config_name)(**params)


class TaylorSeerPeer(_DiffusersPeer):
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
        try:
            from diffusers.hooks.taylorseer_cache import _TRANSFORMER_BLOCK_IDENTIFIERS as patterns
        except ImportError:
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
        return _diffusers_config_class(self.config_name)(taylor_factors_dtype=dtype, **params)


class MagCachePeer(_DiffusersPeer):
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
        config_class = _diffusers_config_class(self.config_name)
        modules = denoisers(pipe)
        configs = {name: config_class(calibrate=True, num_inference_steps=steps) for name in modules}
        captured: dict[str, dict[str, list[float]]] = {name: {} for name in modules}
        undo = _enable(modules, configs)
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
        return _diffusers_config_class(self.config_name)(
            mag_ratios=list(ratios), num_inference_steps=len(ratios), **params
        )


def _capture_calibration(module: torch.nn.Module, into: dict[str, list[float]]) -> None:
    """Keep the ratios the tail-block hook computes, per cache_context branch, as it computes them: the hook
    clears its own list at the end of the loop and the pipeline resets its state after the call."""
    from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK

    tails = [
        hook
        for sub in module.modules()
        if (registry := vars(sub).get("_diffusers_hook")) is not None
        and (hook := registry.get_hook(_MAG_CACHE_BLOCK_HOOK)) is not None
        and getattr(hook, "is_tail", False)
    ]
    if len(tails) != 1 or not hasattr(tails[0], "_perform_calibration_step"):
        raise PeerError(
            f"diffusers {_diffusers_version()}'s MagCache hooks are not the ones teacli reads the calibration from; "
            "run --against without magcache"
        )
    hook = tails[0]
    compute = hook._perform_calibration_step

    def perform_calibration_step(state: Any, residual: torch.Tensor) -> None:
        compute(state, residual)
        context = hook.state_manager._context
        into[context.name if context is not None else "default"] = [float(r) for r in state.calibration_ratios]

    hook._perform_calibration_step = perform_calibration_step


# ---------------------------------------------------------------------------------------------------------
# cache-dit


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
        fitted = PeerSetting(self.method, _format_setting(params), label)
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
        snapshot = _AttributeSnapshot(modules.values())
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
        lists = [blocks for module in modules.values() for _, blocks in _block_lists(module)]
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
    from ..generation.runner import call_parameters, pipeline_kwargs

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


# ---------------------------------------------------------------------------------------------------------
# registry and --against


PEERS: dict[str, Peer] = {
    peer.method: peer for peer in (FirstBlockCachePeer(), MagCachePeer(), TaylorSeerPeer(), DBCachePeer())
}


def parse_against(text: str | None) -> list[str]:
    """--against as peer names in PEERS order: None or "all" -> all of them, "" or "none" -> none."""
    if text is None or text.strip().lower() == "all":
        return list(PEERS)
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if names == ["none"]:
        return []
    unknown = [name for name in names if name not in PEERS]
    if unknown:
        listed = ", ".join(repr(name) for name in unknown)
        raise UnknownPeerError(f"unknown cache {listed} in --against; known: {', '.join(PEERS)} (or all, none)")
    return [name for name in PEERS if name in names]


# ---------------------------------------------------------------------------------------------------------
# counting transformer calls


@dataclass(frozen=True)
class TransformerCall:
    module: str  # which denoiser: "transformer", "transformer_2"
    ran: frozenset[str]  # the probe modules that ran during the call
    seconds: float


@dataclass
class CallCounter:
    """Transformer calls seen inside count_transformer_calls; see there for what "computed" means."""

    calls: list[TransformerCall] = field(default_factory=list)
    probes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # denoiser -> probe module names

    @property
    def total(self) -> int:
        return len(self.calls)

    @property
    def computed(self) -> int:
        full: dict[str, frozenset[str]] = {}
        for call in self.calls:
            full[call.module] = full.get(call.module, frozenset()) | call.ran
        unwatched = {name for name, probes in self.probes.items() if not probes}
        return sum(1 for call in self.calls if call.module in unwatched or (call.ran and call.ran == full[call.module]))

    @property
    def cached(self) -> int:
        return self.total - self.computed

    @property
    def seconds(self) -> float:
        return sum(call.seconds for call in self.calls)

    @property
    def per_call_seconds(self) -> float:
        return self.seconds / self.total if self.total else 0.0


def _probe_modules(transformer: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The leaf nn.Linear modules of the transformer's last block (any parameterised leaf when it has no Linear)."""
    lists = _block_lists(transformer)
    if not lists:
        raise PeerError(f"{type(transformer).__name__} has no list of transformer blocks to count computed calls on")
    list_name, blocks = lists[-1]
    block = blocks[len(blocks) - 1]
    prefix = f"{list_name}.{len(blocks) - 1}"
    leaves = [(n, m) for n, m in block.named_modules() if not any(True for _ in m.children())]
    linears = {f"{prefix}.{n}": m for n, m in leaves if isinstance(m, torch.nn.Linear)}
    if linears:
        return linears
    weighted = {f"{prefix}.{n}" if n else prefix: m for n, m in leaves if any(True for _ in m.parameters(False))}
    if not weighted:
        raise PeerError(f"the last block of {type(transformer).__name__} ({prefix}) has no parameters to count runs on")
    return weighted


def _first_tensor_device(args: tuple, kwargs: dict, module: torch.nn.Module) -> torch.device:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@contextlib.contextmanager
def count_transformer_calls(pipe: Any) -> Iterator[CallCounter]:
    """Count the calls of every denoiser (transformer, transformer_2) while the block runs, however cached.

    total: forward calls of the denoisers (the outermost call, one per CFG branch run as its own call).
    computed: calls on which the transformer's block stack actually ran, measured the same way for every
        cache: the probes are the leaf nn.Linear modules of the LAST block of the transformer's last list
        of blocks (the direct-child ModuleLists diffusers' caches hook, in registration order, which is
        the order diffusers' own caches take as the execution order); a call is computed when every probe
        that runs at all in this counting window ran during it. Every cache skips or predicts the tail:
        TeaCache skips all blocks; FirstBlockCache and DBCache (with Bn_compute_blocks=0) run the first
        block(s) and skip the rest; MagCache skips all blocks; TaylorSeer predicts the attention modules
        (so the attention's projections do not run) or, in lite mode, whole blocks. Comparing with the
        union of probes seen, rather than every Linear the block owns, ignores a Linear the block never
        calls.
    seconds: wall time summed inside the denoiser calls, the device synchronised before and after each
        call on CUDA/MPS (two syncs per call: count in the measured runs only if that cost is acceptable).
    per_call_seconds: seconds / total.

    Caveats: a window needs one fully computed call per denoiser (every cache computes the first step);
    a "cached" FBCache/DBCache call still ran its first block(s), and a "cached" TaylorSeer call (default
    mode) still ran the feed-forward and norms, so those calls are not free; DBCache with
    Bn_compute_blocks > 0 runs the last block on every call and would count every call computed; the probe
    hooks are Python callbacks inside the blocks, so under torch.compile they break the graph.
    """
    counter = CallCounter()
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for name, module in denoisers(pipe).items():
            try:
                probes = _probe_modules(module)
            except PeerError:  # no block list to watch: every call counts as computed (timing still works)
                probes = {}
            counter.probes[name] = tuple(probes)
            handles += _count(module, name, probes, counter)
        yield counter
    finally:
        for handle in handles:
            handle.remove()


def _count(
    module: torch.nn.Module, name: str, probes: dict[str, torch.nn.Module], counter: CallCounter
) -> list[torch.utils.hooks.RemovableHandle]:
    current: dict[str, Any] = {"depth": 0, "ran": set(), "started": 0.0, "device": None}

    def before(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        current["depth"] += 1
        if current["depth"] > 1:
            return
        device = _first_tensor_device(args, kwargs, module)
        synchronize(device)
        current.update(ran=set(), device=device, started=time.perf_counter())

    def after(_module: torch.nn.Module, _args: tuple, _output: Any) -> None:
        current["depth"] -= 1
        if current["depth"] > 0:
            return
        synchronize(current["device"])
        seconds = time.perf_counter() - current["started"]
        counter.calls.append(TransformerCall(name, frozenset(current["ran"]), seconds))

    def ran(probe: str) -> Callable[..., None]:
        def hook(_module: torch.nn.Module, _args: tuple, _output: Any) -> None:
            if current["depth"] > 0:
                current["ran"].add(probe)

        return hook

    handles = [
        module.register_forward_pre_hook(before, with_kwargs=True),
        module.register_forward_hook(after, always_call=True),
    ]
    handles += [probe.register_forward_hook(ran(probe_name)) for probe_name, probe in probes.items()]
    return handles
