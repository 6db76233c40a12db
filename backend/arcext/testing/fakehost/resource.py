"""What both shell resources of the fake host (:mod:`.psrp`'s runspace pools, :mod:`.winrs`'s cmd
shells) share: the open shells by id, their lookup from a request's ShellId selector, the dispatch
of an action to its handler, and stopping every shell when the host stops."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from .context import HostContext
from .soap import RESPONSE, Request, action_not_supported, shell_not_found


class OpenShell(Protocol):
    id: str
    closed: bool

    def stop(self) -> None: ...


S = TypeVar("S", bound=OpenShell)
#: an action's handler: the response body of one request (raises Fault)
Op = Callable[[Request], str]


class ShellResource(Generic[S]):
    def __init__(self, host: HostContext, ops: dict[str, Op]) -> None:
        self.host = host
        self.shells: dict[str, S] = {}
        self.lock = threading.Lock()
        #: shells ever created (one per driver per job)
        self.shells_opened = 0
        self._ops = ops

    def handle(self, action: str, req: Request) -> tuple[str, str]:
        """(response action, response body) of one request; raises Fault."""
        op = self._ops.get(action)
        if op is None:
            raise action_not_supported(action)
        self.check(req)
        return RESPONSE[action], op(req)

    def check(self, req: Request) -> None:
        """Refuse a request the resource cannot serve (raise Fault) before its action runs."""

    def stop(self) -> None:
        with self.lock:
            shells = list(self.shells.values())
        for shell in shells:
            shell.stop()

    def _add(self, shell: S) -> None:
        with self.lock:
            self.shells[shell.id] = shell
            self.shells_opened += 1

    def _remove(self, shell: S) -> None:
        with self.lock:
            self.shells.pop(shell.id, None)

    def _shell(self, req: Request) -> S:
        with self.lock:
            shell = self.shells.get(req.shell_id)
        if shell is None or shell.closed:
            raise shell_not_found()
        return shell
