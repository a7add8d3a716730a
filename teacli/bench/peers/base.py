"""What every peer cache shares: its settings, its one-line errors, and the Peer interface."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ...errors import TeacliError
from ...limits import clip

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


def format_setting(params: dict[str, Any]) -> str:
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
        return PeerSetting(self.method, format_setting(params), f"{self.method}@{label}")

    def _check_setting(self, setting: PeerSetting) -> dict[str, Any]:
        if setting.method != self.method:
            raise PeerError(f"{setting.label} is a {setting.method} setting, not {self.method}")
        return setting.params()
