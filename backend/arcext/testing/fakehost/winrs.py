"""The WinRS side of the fake Windows host: the cmd shell resource
(``http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd``) that pywinrm and every WinRS client
use. Create / Command / Send / Receive / Signal / Delete, shaped like the real-Windows transcripts in
tests/data/pypsrp-recordings/test_winrs_*.yml.

The fake cannot run programs. A Command is recognised only as ``powershell.exe ... -EncodedCommand
<base64 UTF-16LE>`` whose decoded text is, by SHA-256, one of the project's own scripts, and only the
two WinRS scripts run inline: the bootstrap (Install-AgentScripts.ps1, which stores the uploaded agent
scripts on the model's disk) and the wrapper (Invoke-AgentScript.ps1, which runs an uploaded agent
script by name if the file on disk is byte for byte a known project script, binding the header's
parameters against its real param() block, as the PSRP path does). cmd.exe's 8191-character command
line limit is enforced. Anything else fails as cmd.exe or powershell.exe would (stderr, exit code 1).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from .context import HostContext
from .disk import SCRIPT_NAME, ScriptFailure
from .injection import long_poll, receive_deadline
from .machine import WindowsMachine
from .resource import ShellResource
from .scripts import BindingError, bind, known_scripts
from .soap import (
    CMD_RESOURCE,
    DONE,
    INVALID_VALUE_DETAIL,
    NS,
    SHELL_RESOURCE,
    Request,
    invalid_parameter,
    resource_created,
    shell_not_found,
)

log = logging.getLogger("arcext.fakehost")


RUNNING = f"{SHELL_RESOURCE}/CommandState/Running"
SIGNAL_CTRL_C = f"{SHELL_RESOURCE}/signal/ctrl_c"
SIGNAL_TERMINATE = f"{SHELL_RESOURCE}/signal/terminate"
CMD_LINE_LIMIT = 8191
#: the scripts the fake runs when they arrive inline as -EncodedCommand
INLINE_SCRIPTS = ("Install-AgentScripts", "Invoke-AgentScript")
ENCODED_FLAGS = ("-encodedcommand", "-enc", "-ec", "-e")


@dataclass
class WinrsCommand:
    id: str
    line: str
    script: str | None  # the inline script it runs, or None (it failed at start)
    stdin: bytearray = field(default_factory=bytearray)
    stdin_done: threading.Event = field(default_factory=threading.Event)
    cancel: threading.Event = field(default_factory=threading.Event)
    stdout: deque[bytes] = field(default_factory=deque)
    stderr: deque[bytes] = field(default_factory=deque)
    exit_code: int | None = None
    done: bool = False
    done_sent: bool = False


class WinrsShell:
    def __init__(self, shell_id: str, codepage: int, noprofile: bool, idle: str) -> None:
        self.id = shell_id
        self.codepage = codepage
        self.noprofile = noprofile
        self.idle = idle
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.commands: dict[str, WinrsCommand] = {}
        self.created_at = time.time()
        self.closed = False

    def encode(self, text: str) -> bytes:
        return text.encode("utf-8" if self.codepage == 65001 else "cp437", "replace")

    def cancel(self, close: bool = False) -> None:
        """Cancel every command (and with ``close`` mark the shell deleted); wake every waiter."""
        with self.lock:
            self.closed = self.closed or close
            for cmd in self.commands.values():
                cmd.cancel.set()
                cmd.stdin_done.set()
            self.cond.notify_all()

    def stop(self) -> None:
        self.cancel()


class WinrsEndpoint(ShellResource[WinrsShell]):
    """The cmd shell resource of one fake host (``WSManServer.winrs``)."""

    def __init__(self, host: HostContext) -> None:
        super().__init__(
            host,
            {
                "Create": self._create,
                "Delete": self._delete,
                "Command": self._start_command,
                "Send": self._send,
                "Receive": self._receive,
                "Signal": self._signal,
            },
        )
        #: every Command: (the inline script it ran or None, the whole command line)
        self.commands: list[tuple[str | None, str]] = []

    @property
    def machine(self) -> WindowsMachine:
        return self.host.machine

    @staticmethod
    def _command(shell: WinrsShell, command_id: str | None) -> WinrsCommand:
        cmd = shell.commands.get((command_id or "").upper())
        if cmd is None:
            raise shell_not_found(command=True)
        return cmd

    # --- actions --------------------------------------------------------------------------------
    def _create(self, req: Request) -> str:
        shell_el = req.body.find("rsp:Shell", NS)
        if shell_el is None:
            raise invalid_parameter()
        inputs = (shell_el.findtext("rsp:InputStreams", "stdin", NS) or "").split()
        outputs = (shell_el.findtext("rsp:OutputStreams", "stdout stderr", NS) or "").split()
        if inputs != ["stdin"] or sorted(outputs) != ["stderr", "stdout"]:
            raise invalid_parameter()
        try:
            codepage = int(req.options.get("WINRS_CODEPAGE", "437"))
        except ValueError:
            raise invalid_parameter() from None
        noprofile = req.options.get("WINRS_NOPROFILE", "FALSE").upper() == "TRUE"
        idle = shell_el.findtext("rsp:IdleTimeOut", "PT7200.000S", NS) or "PT7200.000S"
        shell = WinrsShell(str(uuid.uuid4()).upper(), codepage, noprofile, idle)
        self._add(shell)
        address = req.to or f"http://127.0.0.1:{self.host.port}/wsman"
        return resource_created(address, CMD_RESOURCE, shell.id) + (
            f'<rsp:Shell xmlns:rsp="{SHELL_RESOURCE}"><rsp:ShellId>{shell.id}</rsp:ShellId>'
            f"<rsp:ResourceUri>{CMD_RESOURCE}</rsp:ResourceUri>"
            f"<rsp:Owner>{escape(self.host.machine.name)}\\{escape(self.host.username)}</rsp:Owner>"
            f"<rsp:ClientIP>{escape(req.client_ip)}</rsp:ClientIP>"
            f"<rsp:IdleTimeOut>{escape(idle)}</rsp:IdleTimeOut><rsp:InputStreams>stdin</rsp:InputStreams>"
            f"<rsp:OutputStreams>stdout stderr</rsp:OutputStreams><rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime>"
            f"<rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity></rsp:Shell>"
        )

    def _delete(self, req: Request) -> str:
        shell = self._shell(req)
        shell.cancel(close=True)
        self._remove(shell)
        return ""

    def _start_command(self, req: Request) -> str:
        shell = self._shell(req)
        line_el = req.body.find("rsp:CommandLine", NS)
        if line_el is None:
            raise invalid_parameter()
        command = (line_el.findtext("rsp:Command", "", NS) or "").strip()
        arguments = [a.text or "" for a in line_el.findall("rsp:Arguments", NS)]
        line = " ".join([command, *arguments]).strip()
        cmd = WinrsCommand(str(uuid.uuid4()).upper(), line, None)
        problem = self._recognise(cmd)
        self.commands.append((cmd.script, line))
        with shell.lock:
            shell.commands[cmd.id] = cmd
            if problem is not None:
                cmd.stderr.append(shell.encode(problem))
                cmd.exit_code = 1
                cmd.done = True
            else:
                threading.Thread(
                    target=self._execute, args=(shell, cmd), name=f"fakehost-winrs-{cmd.id}", daemon=True
                ).start()
        return f"<rsp:CommandResponse><rsp:CommandId>{cmd.id}</rsp:CommandId></rsp:CommandResponse>"

    def _send(self, req: Request) -> str:
        shell = self._shell(req)
        with shell.lock:
            for stream in req.body.findall("rsp:Send/rsp:Stream", NS):
                if stream.get("Name") != "stdin":
                    raise invalid_parameter()
                cmd = self._command(shell, stream.get("CommandId"))
                if cmd.stdin_done.is_set() and not cmd.cancel.is_set():
                    raise invalid_parameter()
                cmd.stdin += base64.b64decode(stream.text or "")
                if (stream.get("End") or "").lower() == "true":
                    cmd.stdin_done.set()
            shell.cond.notify_all()
        return "<rsp:SendResponse/>"

    def _receive(self, req: Request) -> str:
        shell = self._shell(req)
        desired = req.body.find("rsp:Receive/rsp:DesiredStream", NS)
        if desired is None or not desired.get("CommandId"):
            raise invalid_parameter(INVALID_VALUE_DETAIL)
        deadline = receive_deadline(req.timeout)
        with shell.lock:
            cmd = self._command(shell, desired.get("CommandId"))
            long_poll(
                self.host.fault_plan,
                self.host.stopping,
                shell,
                lambda: bool(cmd.stdout or cmd.stderr or (cmd.done and not cmd.done_sent)),
                deadline,
            )
            streams: list[str] = []
            for name, queue in (("stdout", cmd.stdout), ("stderr", cmd.stderr)):
                while queue:
                    data = base64.b64encode(queue.popleft()).decode()
                    streams.append(f'<rsp:Stream Name="{name}" CommandId="{cmd.id}">{data}</rsp:Stream>')
            if cmd.done:
                cmd.done_sent = True
                streams.append(f'<rsp:Stream Name="stdout" CommandId="{cmd.id}" End="true"></rsp:Stream>')
                streams.append(f'<rsp:Stream Name="stderr" CommandId="{cmd.id}" End="true"></rsp:Stream>')
                state = (
                    f'<rsp:CommandState CommandId="{cmd.id}" State="{DONE}">'
                    f"<rsp:ExitCode>{cmd.exit_code}</rsp:ExitCode></rsp:CommandState>"
                )
            else:
                state = f'<rsp:CommandState CommandId="{cmd.id}" State="{RUNNING}"></rsp:CommandState>'
        return f"<rsp:ReceiveResponse>{''.join(streams)}{state}</rsp:ReceiveResponse>"

    def _signal(self, req: Request) -> str:
        shell = self._shell(req)
        signal = req.body.find("rsp:Signal", NS)
        code = (req.body.findtext("rsp:Signal/rsp:Code", "", NS) or "").strip().lower()
        if signal is None or code not in (SIGNAL_CTRL_C, SIGNAL_TERMINATE):
            raise invalid_parameter()
        with shell.lock:
            cmd = self._command(shell, signal.get("CommandId"))
            cmd.cancel.set()
            cmd.stdin_done.set()
            if code == SIGNAL_TERMINATE:
                shell.commands.pop(cmd.id, None)
            shell.cond.notify_all()
        return "<rsp:SignalResponse/>"

    # --- what runs ------------------------------------------------------------------------------
    def _recognise(self, cmd: WinrsCommand) -> str | None:
        """Set ``cmd.script`` to the inline script the line runs; else the error cmd.exe/powershell.exe
        would print."""
        if len(cmd.line) > CMD_LINE_LIMIT:
            return "The command line is too long.\r\n"
        tokens = cmd.line.split()
        program = re.split(r"[\\/]", tokens[0])[-1].lower() if tokens else ""
        if program not in ("powershell.exe", "powershell"):
            name = tokens[0] if tokens else ""
            return (
                f"'{name}' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n"
            )
        flags = [t.lower() for t in tokens[1:]]
        encoded = next((tokens[i + 2] for i, f in enumerate(flags[:-1]) if f in ENCODED_FLAGS), None)
        if encoded is None:
            return "The fake Windows host runs PowerShell only as -EncodedCommand of arcext's own scripts.\r\n"
        try:
            text = base64.b64decode(encoded, validate=True).decode("utf-16-le")
        except ValueError:
            return "Cannot process the command: the -EncodedCommand value is not properly encoded.\r\n"
        info = known_scripts().get(hashlib.sha256(text.encode("utf-8")).hexdigest())
        if info is None:
            return "The fake Windows host runs only arcext's own scripts (this -EncodedCommand is not one).\r\n"
        if info.name not in INLINE_SCRIPTS:
            try:
                bind(info, [])
            except BindingError as exc:
                return f"{info.name}.ps1 : {exc}\r\n"
            return f"The fake Windows host does not run {info.name}.ps1 inline.\r\n"
        cmd.script = info.name
        return None

    def _execute(self, shell: WinrsShell, cmd: WinrsCommand) -> None:
        while not cmd.stdin_done.wait(0.5):
            if cmd.cancel.is_set() or self.host.stopping.is_set():
                return
        if cmd.cancel.is_set():
            return
        stdin_lines = bytes(cmd.stdin).decode("utf-8", "replace").splitlines()
        stdout, stderr, code = "", "", 0
        try:
            if cmd.script == "Install-AgentScripts":
                stdout = self.machine.run_script("Install-AgentScripts", {}, stdin_lines, cmd.cancel)
            else:
                stdout, code = self._wrapper(stdin_lines, cmd.cancel)
        except ScriptFailure as exc:
            stderr, code = f"{cmd.script}.ps1 : {exc}\r\n", 1
        except Exception as exc:  # a bug in the model: fail the command, never hang
            log.exception("fake host WinRS command failed")
            stderr, code = f"Internal fake-host error: {exc}\r\n", 1
        with shell.lock:
            if stdout:
                cmd.stdout.append(shell.encode(stdout))
            if stderr:
                cmd.stderr.append(shell.encode(stderr))
            cmd.exit_code = code
            cmd.done = True
            shell.cond.notify_all()

    def _wrapper(self, lines: list[str], cancel: threading.Event) -> tuple[str, int]:
        """Invoke-AgentScript.ps1: a header line listing the uploaded scripts to run (each hash checked
        before any runs: exit code 3 when one is missing or differs), each bound against its param()
        block and run in order until one fails, the lines after the header being the first one's
        pipeline input; one JSON envelope and the exit code."""
        outputs: list[list[str]] = []
        errors: list[str] = []
        code = 1
        try:
            try:
                header = json.loads(lines[0]) if lines else None
            except ValueError as exc:
                raise ScriptFailure(f"Invalid JSON primitive: {exc}") from None
            if header is None:
                raise ScriptFailure("Cannot bind argument to parameter 'InputObject' because it is null.")
            runs: list[tuple[Any, dict[str, Any]]] = []
            for call in header if isinstance(header, list) else [header]:
                if not isinstance(call, dict):
                    raise ScriptFailure("The call is not an object.")
                name = str(call.get("script", ""))
                if not SCRIPT_NAME.fullmatch(name):
                    raise ScriptFailure(f"Invalid agent script name '{name}'.")
                code = 3
                data = self.machine.agent_script(name)
                if data is None:
                    raise ScriptFailure(f"The agent script {name} is not installed.")
                actual = hashlib.sha256(data).hexdigest()
                if actual != str(call.get("sha256", "")).lower():
                    raise ScriptFailure(f"The agent script {name} has SHA-256 {actual}, not {call.get('sha256')}.")
                code = 1
                info = known_scripts().get(actual)
                if info is None:
                    raise ScriptFailure(f"{name}.ps1 is not one of arcext's own agent scripts.")
                if info.name == "Invoke-HandlerRunner":
                    raise ScriptFailure("Invoke-HandlerRunner.ps1 runs only in the handler's scheduled task.")
                parameters = call.get("parameters") or {}
                if not isinstance(parameters, dict):
                    raise ScriptFailure("The parameters are not an object.")
                runs.append((info, parameters))
            for index, (info, parameters) in enumerate(runs):
                params = bind(info, list(parameters.items()))
                outputs.append([self.machine.run_script(info.name, params, lines[1:] if index == 0 else [], cancel)])
        except (ScriptFailure, BindingError) as exc:
            errors.append(str(exc))
        envelope = json.dumps({"outputs": outputs, "errors": errors}, separators=(",", ":"))
        return envelope, (code if errors else 0)
