"""The peers `teacli bench` knows, by name, and `--against` read against them."""

from __future__ import annotations

from .base import Peer, UnknownPeerError
from .dbcache import DBCachePeer
from .diffusers_caches import FirstBlockCachePeer, MagCachePeer, TaylorSeerPeer

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
