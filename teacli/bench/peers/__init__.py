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

`count_transformer_calls` (teacli.generation.counting, re-exported here) counts the transformer calls of any of
them, and of TeaCache, the same way.

Modules: base (PeerSetting, PeerError, peer_errors, the Peer interface), diffusers_peer (what diffusers' caches
share), diffusers_caches (FirstBlockCache, TaylorSeer, MagCache), dbcache (cache-dit), registry (PEERS, --against).
"""

from __future__ import annotations

from ...generation.counting import CallCounter, TransformerCall, count_transformer_calls
from .base import (
    INSTALL_PEERS,
    REASON_CHARS,
    Peer,
    PeerError,
    PeerSetting,
    UnknownPeerError,
    parse_setting,
    peer_errors,
    short_reason,
)
from .dbcache import DBCachePeer, cached_block_count, fit_compute_blocks, runs_true_cfg
from .diffusers_caches import FirstBlockCachePeer, MagCachePeer, TaylorSeerPeer
from .registry import PEERS, parse_against

__all__ = [
    "INSTALL_PEERS",
    "PEERS",
    "REASON_CHARS",
    "CallCounter",
    "DBCachePeer",
    "FirstBlockCachePeer",
    "MagCachePeer",
    "Peer",
    "PeerError",
    "PeerSetting",
    "TaylorSeerPeer",
    "TransformerCall",
    "UnknownPeerError",
    "cached_block_count",
    "count_transformer_calls",
    "fit_compute_blocks",
    "parse_against",
    "parse_setting",
    "peer_errors",
    "runs_true_cfg",
    "short_reason",
]
