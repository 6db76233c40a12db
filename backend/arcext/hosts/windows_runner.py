"""Running the Windows agent scripts (``hosts/scripts/*.ps1``) on one host, whatever the transport.

The Windows drivers send only the project's own scripts (composed with their common block by
:mod:`arcext.hosts.agent_scripts`), each with named parameters (values never enter the script text)
and optional pipeline input; every script ends with one JSON document, and any error-stream entry is
a failure. :class:`AgentScriptRunner` is that primitive plus the per-call deadline and the one place
a library's errors become the driver taxonomy (:meth:`AgentScriptRunner._boundary`, with the
transport's ``_library_error``). A transport subclass (:class:`arcext.hosts.psrp.PsrpDriver`, a PSRP
runspace pool; :class:`arcext.hosts.winrm.WinrmDriver`, a WinRS cmd shell) implements
``_ensure_session``, ``_session``, ``_invoke_many``, ``_discard``, ``_upload_chunk_size`` and
``_library_error``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .agent import DriverTuning, HandlerProtocol
from .base import HostDriverError, HostTimeout, HostUnreachable, ProtocolError, SessionLost

T = TypeVar("T")
#: a script's pipeline input: a function that makes the iterator of its items (called again when
#: the call is retried, so a package is read from disk again rather than held in memory)
Input = Callable[[], Iterator[str]] | None
#: how :meth:`AgentScriptRunner._boundary` discards the session after an error
FORGET = "forget"  # drop it without a word to the host (it stopped answering)
CLOSE = "close"  # best effort to close it on the host, then drop it
Mapped = tuple[HostDriverError, str | None]
#: the WS-Management fault for a shell (or command) the service no longer knows
SHELL_GONE = 0x8033805B

#: The agent scripts and the parameters the driver sends to each (tests check these against the
#: scripts' real param() blocks).
SCRIPT_PARAMETERS: dict[str, frozenset[str]] = {
    "Get-ExtensionState": frozenset({"Handler"}),
    "Receive-Package": frozenset({"Handler", "Version", "Sha256"}),
    "Expand-Package": frozenset({"Handler", "Version", "Sha256", "FilesJson"}),
    "Write-RuntimeSettings": frozenset({"Handler", "Version", "SequenceNumber", "ContentBase64"}),
    "Copy-RuntimeSettings": frozenset({"Handler", "FromVersion", "ToVersion"}),
    "Invoke-HandlerCommand": frozenset(
        {
            "Handler",
            "Version",
            "Command",
            "TimeoutSeconds",
            "OperationId",
            "Step",
            "Environment",
            "RunnerScript",
            "WaitSeconds",
            "After",
            "OnlyInState",
        }
    ),
    "Get-HandlerStatus": frozenset({"Handler", "Version", "SequenceNumber"}),
    "Remove-HandlerVersion": frozenset({"Handler", "Version", "PurgeCache"}),
    "Write-Journal": frozenset({"Handler", "ContentJson"}),
}

#: psrp only: the batch runner, which runs several agent scripts (their texts, sent with it) in one
#: pipeline, each in its own scope, stopping at the first error.
PSRP_SCRIPTS: dict[str, frozenset[str]] = {"Invoke-AgentBatch": frozenset({"Scripts", "CallsJson"})}

#: Scripts that run on the host but are never sent as a pipeline: Invoke-HandlerCommand.ps1 writes the
#: runner (its text is the RunnerScript parameter) and a scheduled task runs it as LocalSystem.
HOST_SCRIPTS: dict[str, frozenset[str]] = {"Invoke-HandlerRunner": frozenset({"RequestPath"})}


class AgentScriptRunner(HandlerProtocol[DriverTuning]):
    """One Windows host's agent scripts over a transport a subclass supplies (see the module doc)."""

    def _default_tuning(self) -> DriverTuning:
        return DriverTuning()

    @property
    def scripts_run(self) -> list[str]:
        """The agent scripts sent, in order (every script of a batch counts)."""
        return self.calls

    def _with_deadline(self, op: str, seconds: float, fn: Callable[[], T]) -> T:
        """Run ``fn`` but give up after ``seconds``: a silent host cannot stall a job beyond it."""
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread
                box["error"] = exc

        worker = threading.Thread(target=target, name=f"{self.kind}-{self.name}-{op}", daemon=True)
        worker.start()
        worker.join(seconds)
        if worker.is_alive():
            self._discard(close=False)
            raise HostTimeout(self.name, op, f"no answer within the driver's deadline of {seconds:.0f} s")
        if "error" in box:
            raise box["error"]
        value: T = box["value"]
        return value

    # ============================================================================================
    # The one boundary where a library's errors become the driver's taxonomy
    # ============================================================================================
    def _boundary(self, op: str, fn: Callable[[], T], opened: bool) -> T:
        """Run ``fn`` (one library call); map what it raises to the taxonomy. The session is
        discarded only if it is still the one ``fn`` used: a late failure of a call the deadline
        abandoned must not discard the session its successor opened."""
        session = self._session()
        try:
            return fn()
        except HostDriverError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped below; anything unmapped is re-raised as is
            mapped = self._library_error(op, exc, opened) or self._requests_error(op, exc, opened)
            if mapped is None:
                raise
            error, discard = mapped
            if discard is not None and session is not None:  # (a failed connect cleans up itself)
                self._discard(close=discard == CLOSE, only=session)
            raise error from None

    def _requests_error(self, op: str, exc: Exception, opened: bool) -> Mapped | None:
        """The HTTP layer (requests), the same under both libraries."""
        import requests

        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return HostUnreachable(self.name, op, "connection timed out"), None
        if isinstance(exc, requests.exceptions.ReadTimeout):
            return HostTimeout(self.name, op, "the host stopped answering (read timeout)"), FORGET
        if isinstance(exc, requests.exceptions.SSLError):
            return HostUnreachable(self.name, op, f"TLS failed: {exc}"), None
        if isinstance(exc, requests.exceptions.RequestException):  # ConnectionError, a reset mid-body, ...
            if opened:
                return SessionLost(self.name, op, f"the connection dropped ({type(exc).__name__})"), CLOSE
            return HostUnreachable(self.name, op, f"cannot connect ({type(exc).__name__})"), CLOSE
        return None

    # ============================================================================================
    # The transport (a subclass provides it)
    # ============================================================================================
    def _ensure_session(self) -> None:
        """Open the host session unless it is open (and usable)."""
        raise NotImplementedError

    def _session(self) -> object | None:
        """The open session (its identity is what :meth:`_boundary` compares), or None."""
        raise NotImplementedError

    def _library_error(self, op: str, exc: Exception, opened: bool) -> Mapped | None:
        """The driver error for one of the library's own exceptions (and how to discard the
        session: None, FORGET or CLOSE); None for anything else."""
        raise NotImplementedError

    def _discard(self, close: bool = True, only: object | None = None) -> None:
        """Forget the session; with ``close``, best effort to close it on the host first. With
        ``only``, do nothing unless ``only`` is still the open session."""
        raise NotImplementedError

    def _invoke(self, name: str, params: dict[str, Any], deadline: float, input_: Input) -> list[Any]:
        """Run one agent script on the open session within ``deadline`` seconds; its output items.
        Raises RemoteScriptError when the script reported any error."""
        return self._invoke_many([(name, params)], deadline, input_)[0]

    def _invoke_many(self, calls: list[tuple[str, dict[str, Any]]], deadline: float, input_: Input) -> list[list[Any]]:
        """Run several agent scripts in order in ONE pipeline (one command on the transport), each in
        its own scope with its own parameters, stopping at the first that fails; ``input_`` is the
        first script's pipeline input. The output items of each. Raises RemoteScriptError when any
        script reported an error (the later ones did not run)."""
        raise NotImplementedError

    def _upload_chunk_size(self) -> int:
        """Package bytes per pipeline-input chunk (sized from the transport's envelope)."""
        raise NotImplementedError

    # ============================================================================================
    # Running one agent script
    # ============================================================================================
    def _script(
        self, name: str, params: dict[str, Any], deadline_s: float | None = None, input_: Input = None
    ) -> dict[str, Any]:
        return self._scripts([(name, params)], deadline_s, input_)[0]

    def _scripts(
        self,
        calls: list[tuple[str, dict[str, Any]]],
        deadline_s: float | None = None,
        input_: Input = None,
    ) -> list[dict[str, Any]]:
        """Run the scripts in order in one pipeline; each one's JSON document."""
        for name, params in calls:
            if set(params) - SCRIPT_PARAMETERS[name]:
                raise ValueError(f"{name}.ps1 takes no parameter(s) {sorted(set(params) - SCRIPT_PARAMETERS[name])}")
        self._ensure_session()
        self.calls.extend(name for name, _ in calls)
        deadline = deadline_s or (2 * self.conn.operation_timeout_s + self.tuning.deadline_margin_s)
        if len(calls) == 1:
            outputs = [self._invoke(calls[0][0], calls[0][1], deadline, input_)]
        else:
            outputs = self._invoke_many(calls, deadline, input_)
        return [self._document(name, output) for (name, _), output in zip(calls, outputs, strict=True)]

    def _document(self, name: str, output: list[Any]) -> dict[str, Any]:
        if not output:
            raise ProtocolError(self.name, name, "the script returned no JSON document")
        try:
            result = json.loads(str(output[-1]))
        except ValueError:
            raise ProtocolError(self.name, name, "the script's last output is not JSON") from None
        if not isinstance(result, dict):
            raise ProtocolError(self.name, name, "the script's JSON document is not an object")
        return result


def quietly(fn: Callable[[], Any]) -> None:
    """Call ``fn`` and ignore what it raises (closing a session that may already be broken)."""
    try:
        fn()
    except Exception:  # noqa: BLE001 - closing is courtesy
        pass
