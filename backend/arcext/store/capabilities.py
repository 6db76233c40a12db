"""What some stores offer beyond the Store protocol, checked with ``isinstance`` where it is used.

The Store protocol (base.py) is what the domain needs; these are optional: observers for the
operations surface (both stores), the embedded store's journal figures (TinyDB only), and the
shared manual clock a database gives nodes that share it (PostgreSQL only).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol, runtime_checkable

from .base import Record


@runtime_checkable
class ObservableStore(Protocol):
    """Tells observers (metrics, logs, webhooks) about writes once they are durable."""

    #: called with every rollout written
    rollout_listener: Callable[[Record], None] | None

    def set_event_listener(self, listener: Callable[[list[Record]], None] | None) -> None:
        """Call ``listener`` with the events of every append once they are durable."""
        ...

    def set_write_observer(self, observer: Callable[[float], None] | None) -> None:
        """Call ``observer`` with the seconds each durable write (journal append, commit) took."""
        ...


@runtime_checkable
class JournalFigures(Protocol):
    """The embedded store's write-ahead journal, for the metrics."""

    def journal_figures(self) -> dict[str, float]: ...


@runtime_checkable
class SharedClock(Protocol):
    """One manual clock for every node sharing the store."""

    def get_clock(self, start: datetime) -> datetime:
        """The shared time; the first caller sets it to ``start``."""
        ...

    def advance_clock(self, seconds: float, start: datetime) -> datetime:
        """Move the shared time forward by ``seconds`` (from ``start`` if never set); returns it."""
        ...
