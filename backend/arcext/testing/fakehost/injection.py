"""Faults on demand (``FakeHost.inject``): an HTTP 401, a WSManFault 500, a TCP reset, a request
that never answers, a broken runspace pool; and the Receive long-poll both shell resources share,
which is where a reset injected while a client waits takes effect."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .soap import shell_not_found, timed_out

KINDS = ("401", "500", "reset", "hang", "broken")


class ConnectionReset(Exception):
    """Drop the TCP connection with a RST instead of answering."""


class Hang(Exception):
    """Never answer (until the host stops)."""


@dataclass
class InjectedFault:
    action: str  # Create, Command, Send, Receive, Signal, Delete, Get, "auth", or "*"
    kind: str  # "401", "500", "reset", "hang", "broken"
    count: int = 1


class FaultPlan:
    """The faults still to inject, each for its next ``count`` requests of an action."""

    def __init__(self) -> None:
        self.faults: list[InjectedFault] = []
        self.lock = threading.Lock()

    def inject(self, action: str, kind: str, count: int = 1) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        with self.lock:
            self.faults.append(InjectedFault(action, kind, count))

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()

    def take(self, action: str, kinds: tuple[str, ...] | None = None) -> str | None:
        """The kind of the first planned fault for ``action`` (one of ``kinds``), counted down."""
        with self.lock:
            for fault in self.faults:
                if fault.action in (action, "*") and (kinds is None or fault.kind in kinds):
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
                    return fault.kind
        return None


class WaitingShell(Protocol):
    """What the long-poll needs of a shell: its lock's condition and whether it was deleted."""

    cond: threading.Condition
    closed: bool


def receive_deadline(timeout: float) -> float:
    """When a Receive that has nothing to send answers TimedOut: Windows does so just before the
    client's OperationTimeout."""
    return time.monotonic() + max(0.2, timeout - 1.0)


def long_poll(
    plan: FaultPlan, stopping: threading.Event, shell: WaitingShell, ready: Callable[[], bool], deadline: float
) -> None:
    """A Receive's long-poll (the shell's lock held): wait on ``shell.cond`` until ``ready()``; the
    TimedOut fault at ``deadline``, ShellNotFound once the shell is deleted, a connection reset
    when one was injected while the Receive waited."""
    while not (ready() or shell.closed):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or stopping.is_set():
            raise timed_out()
        shell.cond.wait(remaining)
    if shell.closed:
        raise shell_not_found()
    if plan.take("Receive", ("reset",)) == "reset":
        raise ConnectionReset()
