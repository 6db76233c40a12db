"""The ``psrp`` transport: a Windows host over PowerShell Remoting with pypsrp (>=0.9.1,<1.0).

One runspace pool per driver (= per host per job). Each agent script is one ``add_script`` (in its
own scope) with ``add_parameters``; several scripts of one step go in one pipeline through
``Invoke-AgentBatch.ps1``. pypsrp's own exceptions become the driver taxonomy in
:meth:`PsrpDriver._library_error`, called from the one boundary
(:meth:`arcext.hosts.windows_runner.AgentScriptRunner._boundary`). The handler protocol itself is
:class:`arcext.hosts.windows_driver.AgentScriptDriver`, shared with the winrm transport.

The names tests and scripts import from here (the Windows driver's rules and tables) are re-exported.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from .agent import DriverTuning, HandlerCommandFailed, PackageMissing
from .agent_scripts import script_text
from .base import HostAuthError, HostDriverError, ProtocolError, RemoteScriptError, SessionLost
from .windows_driver import AgentScriptDriver
from .windows_runner import (
    CLOSE,
    FORGET,
    HOST_SCRIPTS,
    PSRP_SCRIPTS,
    SCRIPT_PARAMETERS,
    SHELL_GONE,
    Input,
    Mapped,
    quietly,
)
from .windows_steps import InvalidExtensionName, package_files

__all__ = [
    "HOST_SCRIPTS",
    "PSRP_SCRIPTS",
    "SCRIPT_PARAMETERS",
    "AgentScriptDriver",
    "DriverTuning",
    "HandlerCommandFailed",
    "InvalidExtensionName",
    "PackageMissing",
    "PsrpDriver",
    "package_files",
    "script_text",
]

log = logging.getLogger(__name__)


class PsrpDriver(AgentScriptDriver):
    """HostDriver over one Windows host; one runspace pool per driver (= per host per job)."""

    kind = "psrp"
    # per instance once assigned; these are the values before the first connection
    _wsman: Any = None
    _pool: Any = None
    _last_used = 0.0
    pools_opened = 0

    # ============================================================================================
    # pypsrp's errors in the driver's taxonomy (AgentScriptRunner._boundary is the one place)
    # ============================================================================================
    def _session(self) -> object | None:
        session: object | None = self._pool
        return session

    def _library_error(self, op: str, exc: Exception, opened: bool) -> Mapped | None:
        from pypsrp.exceptions import (
            AuthenticationError,
            InvalidPipelineStateError,
            InvalidPSRPOperation,
            InvalidRunspacePoolStateError,
            WinRMError,
            WinRMTransportError,
            WSManFaultError,
        )

        if isinstance(exc, AuthenticationError):
            return HostAuthError(self.name, op, f"credentials were refused ({exc})"), None
        if isinstance(exc, WSManFaultError):
            if exc.code == SHELL_GONE:
                return SessionLost(self.name, op, "the remote shell is gone (0x8033805B)"), FORGET
            return ProtocolError(self.name, op, f"WSManFault {exc.code}: {exc.reason}"), None
        if isinstance(exc, InvalidPSRPOperation):
            return SessionLost(self.name, op, f"the runspace pool broke: {exc}"), CLOSE
        if isinstance(exc, (InvalidRunspacePoolStateError, InvalidPipelineStateError)):
            return SessionLost(self.name, op, f"the runspace pool is not usable: {exc}"), CLOSE
        if isinstance(exc, WinRMTransportError):
            if exc.code == 401:
                return HostAuthError(self.name, op, "credentials were refused (HTTP 401)"), None
            return ProtocolError(self.name, op, f"HTTP {exc.code} from the WinRM service"), None
        if isinstance(exc, WinRMError):
            return ProtocolError(self.name, op, str(exc)), None
        if isinstance(exc, ValueError):  # pypsrp refuses an auth/encryption combination before sending anything
            if not opened:
                return HostAuthError(self.name, op, f"invalid connection settings: {exc}"), None
            return ProtocolError(self.name, op, f"unexpected answer: {exc}"), None
        return None

    # ============================================================================================
    # Connection and runspace pool
    # ============================================================================================
    def _new_wsman(self) -> Any:
        from pypsrp.wsman import WSMan

        c = self.conn
        kwargs: dict[str, Any] = {
            "port": c.port,
            "ssl": c.ssl,
            "auth": c.auth,
            "username": c.username,
            "password": c.password,
            "cert_validation": c.ca_certificate_path or c.cert_validation,
            "connection_timeout": c.connection_timeout_s,
            "operation_timeout": c.operation_timeout_s,
            "read_timeout": c.operation_timeout_s + 10,
            "reconnection_retries": 0,
            "reconnection_backoff": self.tuning.reconnection_backoff,
            "encryption": "auto",
        }
        if c.auth == "certificate":
            kwargs.pop("username")
            kwargs.pop("password")
            kwargs["certificate_pem"] = c.certificate_pem
            kwargs["certificate_key_pem"] = c.certificate_key_pem
            if c.certificate_key_password:
                kwargs["certificate_key_password"] = c.certificate_key_password
        return WSMan(c.address, **kwargs)

    def _open_pool(self) -> Any:
        from pypsrp.powershell import RunspacePool

        def opening() -> tuple[Any, Any]:
            wsman = self._new_wsman()
            try:
                wsman.update_max_payload_size()
                pool = RunspacePool(wsman, configuration_name=self.conn.configuration_name)
                pool.open()
            except BaseException:
                quietly(wsman.transport.close)
                raise
            return wsman, pool

        deadline = self.conn.connection_timeout_s + 2 * self.conn.operation_timeout_s + self.tuning.deadline_margin_s
        wsman, pool = self._with_deadline("connect", deadline, lambda: self._boundary("connect", opening, opened=False))
        self._wsman = wsman
        self.pools_opened += 1
        return pool

    def _ensure_pool(self) -> Any:
        if self._pool is not None:
            idle = time.monotonic() - self._last_used
            if idle >= self.tuning.alive_check_after_s:
                pool = self._pool
                alive = False
                try:
                    alive = bool(
                        self._with_deadline(
                            "is_alive",
                            self.conn.operation_timeout_s + self.tuning.deadline_margin_s,
                            lambda: self._boundary("is_alive", lambda: pool.is_alive(timeout=5), opened=True),
                        )
                    )
                except HostDriverError:
                    alive = False
                if not alive:
                    log.info("Runspace pool on %s is gone; opening a new one", self.name)
                    self._discard()
        if self._pool is None:
            self._pool = self._open_pool()
        self._last_used = time.monotonic()
        return self._pool

    def _discard(self, close: bool = True, only: object | None = None) -> None:
        """Forget the pool (and its HTTP session); best effort to close it on the host."""
        if only is not None and only is not self._pool:
            return  # an abandoned call failed late: its pool is already gone, keep the current one
        pool, wsman = self._pool, self._wsman
        self._pool = None
        self._wsman = None
        if close and pool is not None:
            quietly(pool.close)  # the session may already be broken; closing is courtesy
        if wsman is not None:
            quietly(wsman.transport.close)

    def _ensure_session(self) -> None:
        self._ensure_pool()

    def _upload_chunk_size(self) -> int:
        max_payload = int(getattr(self._wsman, "max_payload_size", 153600) or 153600)
        return max(3, (max_payload - 82) // 4 * 3)

    # ============================================================================================
    # Running one agent script
    # ============================================================================================
    def _invoke_many(self, calls: list[tuple[str, dict[str, Any]]], deadline: float, input_: Input) -> list[list[Any]]:
        if len(calls) == 1:
            return [self._pipeline(calls[0][0], calls[0][1], deadline, input_)]
        if input_ is not None:
            raise ValueError("a batch takes no pipeline input")
        # several scripts: one pipeline of Invoke-AgentBatch.ps1, which runs them in order (each in its
        # own scope) and stops at the first error; its one document holds every script's output
        label = "+".join(name for name, _ in calls)
        batch = self._pipeline(
            "Invoke-AgentBatch",
            {
                "Scripts": {name: script_text(name) for name, _ in calls},
                "CallsJson": json.dumps([{"script": name, "parameters": params} for name, params in calls]),
            },
            deadline,
            None,
        )
        try:
            envelope = json.loads(str(batch[-1])) if batch else None
        except ValueError:
            envelope = None
        if (
            not isinstance(envelope, dict)
            or not isinstance(envelope.get("outputs"), list)
            or not isinstance(envelope.get("errors"), list)
        ):
            raise ProtocolError(self.name, label, "the batch's output is not its JSON document")
        if envelope["errors"]:
            raise RemoteScriptError(self.name, label, "; ".join(str(e) for e in envelope["errors"]))
        outputs = [list(o) if isinstance(o, list) else [o] for o in envelope["outputs"]]
        if len(outputs) != len(calls):
            raise ProtocolError(self.name, label, f"the batch ran {len(outputs)} of {len(calls)} scripts")
        return outputs

    def _pipeline(self, name: str, params: dict[str, Any], deadline: float, input_: Input) -> list[Any]:
        from pypsrp.powershell import PowerShell

        pool = self._pool
        text = script_text(name)

        def run() -> tuple[list[Any], bool, list[Any]]:
            with PowerShell(pool) as ps:
                # its own scope: a dot-sourced script would leave its (typed) variables in the
                # pool's global scope for every later script of the job (issue 17, item 1)
                ps.add_script(text, use_local_scope=True)
                ps.add_parameters(params)
                # a generator: pypsrp sends one PipelineInput per chunk
                ps.invoke(input=input_() if input_ is not None else None)
                return list(ps.output), bool(ps.had_errors), list(ps.streams.error)

        output, had_errors, error_stream = self._with_deadline(
            name, deadline, lambda: self._boundary(name, run, opened=True)
        )
        self._last_used = time.monotonic()
        if had_errors or error_stream:
            detail = "; ".join(str(e) for e in error_stream) or "the pipeline failed"
            raise RemoteScriptError(self.name, name, detail)
        return output
