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
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

from .machine import SCRIPT_NAME, ScriptFailure, WindowsMachine
from .scripts import BindingError, bind, known_scripts
from .wsman import CMD_RESOURCE, NS, Fault, action_not_supported, long_poll, receive_deadline, shell_not_found

if TYPE_CHECKING:
    from .wsman import WSManServer

log = logging.getLogger("arcext.fakehost")


SHELL_NS = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
DONE = f"{SHELL_NS}/CommandState/Done"
RUNNING = f"{SHELL_NS}/CommandState/Running"
SIGNAL_CTRL_C = f"{SHELL_NS}/signal/ctrl_c"
SIGNAL_TERMINATE = f"{SHELL_NS}/signal/terminate"
CMD_LINE_LIMIT = 8191
#: the scripts the fake runs when they arrive inline as -EncodedCommand
INLINE_SCRIPTS = ("Install-AgentScripts", "Invoke-AgentScript")
ENCODED_FLAGS = ("-encodedcommand", "-enc", "-ec", "-e")


@dataclass(frozen=True)
class Request:
    """One WS-Management request to the cmd shell resource, as the dispatcher parsed it."""

    client_ip: str
    body: ET.Element
    selectors: dict[str, str]
    options: dict[str, str]
    timeout: float
    to: str


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


class WinrsEndpoint:
    """The cmd shell resource of one fake host (``WSManServer.winrs``)."""

    def __init__(self, server: WSManServer) -> None:
        self.server = server
        self.shells: dict[str, WinrsShell] = {}
        self.lock = threading.Lock()
        #: shells ever created (one per driver per job)
        self.shells_opened = 0
        #: every Command: (the inline script it ran or None, the whole command line)
        self.commands: list[tuple[str | None, str]] = []

    @property
    def machine(self) -> WindowsMachine:
        return self.server.machine

    def stop(self) -> None:
        with self.lock:
            shells = list(self.shells.values())
        for shell in shells:
            shell.cancel()

    # --- dispatch -------------------------------------------------------------------------------
    def handle(self, action: str, req: Request) -> tuple[str, str]:
        """(response action, response body) of one WinRS request; raises Fault."""
        op = getattr(self, f"_op_{action}", None)
        if op is None:
            raise action_not_supported(action)
        result: tuple[str, str] = op(req)
        return result

    def _shell(self, selectors: dict[str, str]) -> WinrsShell:
        with self.lock:
            shell = self.shells.get(selectors.get("ShellId", "").upper())
        if shell is None or shell.closed:
            raise shell_not_found()
        return shell

    @staticmethod
    def _command(shell: WinrsShell, command_id: str | None) -> WinrsCommand:
        cmd = shell.commands.get((command_id or "").upper())
        if cmd is None:
            raise shell_not_found(command=True)
        return cmd

    # --- actions --------------------------------------------------------------------------------
    def _op_Create(self, req: Request) -> tuple[str, str]:
        shell_el = req.body.find("rsp:Shell", NS)
        if shell_el is None:
            raise Fault("s:Sender", "w:InvalidParameter", "The parameter is incorrect. ", 87)
        inputs = (shell_el.findtext("rsp:InputStreams", "stdin", NS) or "").split()
        outputs = (shell_el.findtext("rsp:OutputStreams", "stdout stderr", NS) or "").split()
        if inputs != ["stdin"] or sorted(outputs) != ["stderr", "stdout"]:
            raise Fault("s:Sender", "w:InvalidParameter", "The parameter is incorrect. ", 87)
        try:
            codepage = int(req.options.get("WINRS_CODEPAGE", "437"))
        except ValueError:
            raise Fault("s:Sender", "w:InvalidParameter", "The parameter is incorrect. ", 87) from None
        noprofile = req.options.get("WINRS_NOPROFILE", "FALSE").upper() == "TRUE"
        idle = shell_el.findtext("rsp:IdleTimeOut", "PT7200.000S", NS) or "PT7200.000S"
        shell = WinrsShell(str(uuid.uuid4()).upper(), codepage, noprofile, idle)
        with self.lock:
            self.shells[shell.id] = shell
            self.shells_opened += 1
        with self.server.shells_lock:
            self.server.pools_opened += 1  # the server counts every shell, of either kind
        address = escape(req.to or f"http://127.0.0.1:{self.server.port}/wsman")
        body_xml = (
            f"<x:ResourceCreated><a:Address>{address}</a:Address><a:ReferenceParameters>"
            f"<w:ResourceURI>{CMD_RESOURCE}</w:ResourceURI><w:SelectorSet>"
            f'<w:Selector Name="ShellId">{shell.id}</w:Selector></w:SelectorSet></a:ReferenceParameters>'
            f'</x:ResourceCreated><rsp:Shell xmlns:rsp="{SHELL_NS}"><rsp:ShellId>{shell.id}</rsp:ShellId>'
            f"<rsp:ResourceUri>{CMD_RESOURCE}</rsp:ResourceUri>"
            f"<rsp:Owner>{escape(self.server.machine.name)}\\{escape(self.server.username)}</rsp:Owner>"
            f"<rsp:ClientIP>{escape(req.client_ip)}</rsp:ClientIP>"
            f"<rsp:IdleTimeOut>{escape(idle)}</rsp:IdleTimeOut><rsp:InputStreams>stdin</rsp:InputStreams>"
            f"<rsp:OutputStreams>stdout stderr</rsp:OutputStreams><rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime>"
            f"<rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity></rsp:Shell>"
        )
        return "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse", body_xml

    def _op_Delete(self, req: Request) -> tuple[str, str]:
        shell = self._shell(req.selectors)
        shell.cancel(close=True)
        with self.lock:
            self.shells.pop(shell.id, None)
        return "http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse", ""

    def _op_Command(self, req: Request) -> tuple[str, str]:
        shell = self._shell(req.selectors)
        line_el = req.body.find("rsp:CommandLine", NS)
        if line_el is None:
            raise Fault("s:Sender", "w:InvalidParameter", "The parameter is incorrect. ", 87)
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
        body_xml = f"<rsp:CommandResponse><rsp:CommandId>{cmd.id}</rsp:CommandId></rsp:CommandResponse>"
        return "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandResponse", body_xml

    def _op_Send(self, req: Request) -> tuple[str, str]:
        shell = self._shell(req.selectors)
        with shell.lock:
            for stream in req.body.findall("rsp:Send/rsp:Stream", NS):
                if stream.get("Name") != "stdin":
                    raise Fault("s:Sender", "w:InvalidParameter", "The parameter is incorrect. ", 87)
                cmd = self._command(shell, stream.get("CommandId"))
                if cmd.stdin_done.is_set() and not cmd.cancel.is_set():
                    raise Fault("s:Sender", "w:InvalidParameter", "The parameter is incorrect. ", 87)
                cmd.stdin += base64.b64decode(stream.text or "")
                if (stream.get("End") or "").lower() == "true":
                    cmd.stdin_done.set()
            shell.cond.notify_all()
        return "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SendResponse", "<rsp:SendResponse/>"

    def _op_Receive(self, req: Request) -> tuple[str, str]:
        shell = self._shell(req.selectors)
        desired = req.body.find("rsp:Receive/rsp:DesiredStream", NS)
        if desired is None or not desired.get("CommandId"):
            raise Fault(
                "s:Sender",
                "w:InvalidParameter",
                "The parameter is incorrect. ",
                87,
                "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/InvalidValue",
            )
        deadline = receive_deadline(req.timeout)
        with shell.lock:
            cmd = self._command(shell, desired.get("CommandId"))
            long_poll(
                self.server, shell, lambda: bool(cmd.stdout or cmd.stderr or (cmd.done and not cmd.done_sent)), deadline
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
        return (
            "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse",
            f"<rsp:ReceiveResponse>{''.join(streams)}{state}</rsp:ReceiveResponse>",
        )

    def _op_Signal(self, req: Request) -> tuple[str, str]:
        shell = self._shell(req.selectors)
        signal = req.body.find("rsp:Signal", NS)
        code = (req.body.findtext("rsp:Signal/rsp:Code", "", NS) or "").strip().lower()
        if signal is None or code not in (SIGNAL_CTRL_C, SIGNAL_TERMINATE):
            raise Fault("s:Sender", "w:InvalidParameter", "The parameter is incorrect. ", 87)
        with shell.lock:
            cmd = self._command(shell, signal.get("CommandId"))
            cmd.cancel.set()
            cmd.stdin_done.set()
            if code == SIGNAL_TERMINATE:
                shell.commands.pop(cmd.id, None)
            shell.cond.notify_all()
        return "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SignalResponse", "<rsp:SignalResponse/>"

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
            if cmd.cancel.is_set() or self.server.stopping.is_set():
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
