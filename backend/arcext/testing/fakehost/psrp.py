"""The PowerShell shell resource of the fake host (``http://schemas.microsoft.com/powershell/<config>``):
Create / Command / Send / Receive / Signal / Delete / Get on runspace pools, over psrpcore's server
side, shaped like the real-Windows transcripts in tests/data/pypsrp-recordings. Each pipeline runs
on a worker thread of its own (:func:`.pipelines.execute`)."""

from __future__ import annotations

import base64
import threading
import time
import uuid
from xml.sax.saxutils import escape

from .context import HostContext
from .injection import long_poll, receive_deadline
from .pipelines import execute
from .resource import ShellResource
from .runspace import PipelineRun, Shell
from .soap import (
    DONE,
    NS,
    PS_RESOURCE_PREFIX,
    RESPONSE,
    SHELL_RESOURCE,
    Request,
    action_not_supported,
    invalid_parameter,
    resource_created,
    shell_not_found,
    unsupported_resource,
)

SIGNAL_TERMINATE = f"{SHELL_RESOURCE}/signal/Terminate"
SIGNAL_CTRL_C = "powershell/signal/ctrl_c"


class PsrpEndpoint(ShellResource[Shell]):
    """The runspace pools of one fake host (``WSManServer.psrp``)."""

    def __init__(self, host: HostContext) -> None:
        super().__init__(
            host,
            {
                "Create": self._create,
                "Delete": self._delete,
                "Command": self._command,
                "Send": self._send,
                "Signal": self._signal,
                "Receive": self._receive,
            },
        )

    def handle(self, action: str, req: Request) -> tuple[str, str]:
        if action == "Get":  # Get of a shell's properties: the request names the generic shell resource
            if req.resource_uri != SHELL_RESOURCE:
                raise action_not_supported(f"Get {req.resource_uri}")
            return RESPONSE["Get"], self._shell_xml(self._shell(req), req.client_ip)
        return super().handle(action, req)

    def check(self, req: Request) -> None:
        if not req.resource_uri.startswith(PS_RESOURCE_PREFIX):
            raise unsupported_resource(req.resource_uri)

    def _shell_xml(self, shell: Shell, client_ip: str, idle: str = "PT7200.000S") -> str:
        runtime = int(time.time() - shell.created_at)
        return (
            f'<rsp:Shell xmlns:rsp="{SHELL_RESOURCE}"><rsp:ShellId>{shell.id}</rsp:ShellId>'
            f"<rsp:ResourceUri>{escape(shell.resource_uri)}</rsp:ResourceUri>"
            f"<rsp:Owner>{escape(self.host.machine.name)}\\{escape(self.host.username)}</rsp:Owner>"
            f"<rsp:ClientIP>{client_ip}</rsp:ClientIP><rsp:ProcessId>4242</rsp:ProcessId>"
            f"<rsp:IdleTimeOut>{escape(idle)}</rsp:IdleTimeOut><rsp:InputStreams>stdin pr</rsp:InputStreams>"
            f"<rsp:OutputStreams>stdout</rsp:OutputStreams><rsp:MaxIdleTimeOut>PT2147483.647S</rsp:MaxIdleTimeOut>"
            f"<rsp:Locale>en-US</rsp:Locale><rsp:DataLocale>en-US</rsp:DataLocale>"
            f"<rsp:CompressionMode>NoCompression</rsp:CompressionMode><rsp:ProfileLoaded>Yes</rsp:ProfileLoaded>"
            f"<rsp:Encoding>UTF8</rsp:Encoding><rsp:BufferMode>Block</rsp:BufferMode><rsp:State>Connected</rsp:State>"
            f"<rsp:ShellRunTime>P0DT0H0M{runtime}S</rsp:ShellRunTime><rsp:ShellInactivity>P0DT0H0M0S"
            f"</rsp:ShellInactivity></rsp:Shell>"
        )

    # --- actions --------------------------------------------------------------------------------
    def _create(self, req: Request) -> str:
        shell_el = req.body.find("rsp:Shell", NS)
        creation = req.body.find("rsp:Shell/pwsh:creationXml", NS)
        if shell_el is None or creation is None or not creation.text:
            raise invalid_parameter()
        from psrpcore import PSRPPayload, StreamType

        shell_id = (shell_el.get("ShellId") or str(uuid.uuid4())).upper()
        shell = Shell(shell_id, req.resource_uri)
        with shell.lock:
            shell.pool.receive_data(PSRPPayload(base64.b64decode(creation.text), StreamType.default, None))
            self._pump(shell)
        self._add(shell)
        idle = shell_el.findtext("rsp:IdleTimeOut", "PT7200.000S", NS)
        address = req.to or f"http://127.0.0.1:{self.host.port}/wsman"
        return resource_created(address, req.resource_uri, shell_id) + self._shell_xml(shell, req.client_ip, idle)

    def _delete(self, req: Request) -> str:
        shell = self._shell(req)
        with shell.lock:
            shell.closed = True
            for run in shell.runs.values():
                run.stop()
            shell.pool.pipeline_table.clear()
            shell.cond.notify_all()
        self._remove(shell)
        return ""

    def _command(self, req: Request) -> str:
        shell = self._shell(req)
        line = req.body.find("rsp:CommandLine", NS)
        args = req.body.findtext("rsp:CommandLine/rsp:Arguments", "", NS)
        if line is None:
            raise invalid_parameter()
        command_id = uuid.UUID(line.get("CommandId") or str(uuid.uuid4()))
        import psrpcore
        from psrpcore import PSRPPayload, StreamType

        with shell.lock:
            pipeline = psrpcore.ServerPipeline(shell.pool, command_id)  # must exist before its fragment arrives
            run = PipelineRun(pipeline, command_id)
            shell.runs[command_id] = run
            shell.pool.receive_data(PSRPPayload(base64.b64decode(args), StreamType.default, command_id))
            self._pump(shell)
        return f"<rsp:CommandResponse><rsp:CommandId>{str(command_id).upper()}</rsp:CommandId></rsp:CommandResponse>"

    def _send(self, req: Request) -> str:
        shell = self._shell(req)
        from psrpcore import PSRPPayload, StreamType

        with shell.lock:
            for stream in req.body.findall("rsp:Send/rsp:Stream", NS):
                cid = stream.get("CommandId")
                pid = uuid.UUID(cid) if cid else None
                if pid is not None and pid not in shell.runs:
                    raise shell_not_found(command=True)
                stype = StreamType.prompt_response if stream.get("Name") == "pr" else StreamType.default
                shell.pool.receive_data(PSRPPayload(base64.b64decode(stream.text or ""), stype, pid))
            self._pump(shell)
        return "<rsp:SendResponse/>"

    def _signal(self, req: Request) -> str:
        shell = self._shell(req)
        signal = req.body.find("rsp:Signal", NS)
        code = req.body.findtext("rsp:Signal/rsp:Code", "", NS).strip()
        cid = signal.get("CommandId") if signal is not None else None
        from psrpcore.types import PSInvocationState

        with shell.lock:
            run = shell.runs.get(uuid.UUID(cid)) if cid else None
            if cid and run is None:
                raise shell_not_found(command=True)
            if run is not None:
                run.stop()
                pipe = run.pipeline
                if pipe.state == PSInvocationState.Running:
                    pipe.begin_stop()
                    pipe.stop()
                    run.done = True
                    shell.flush()
                if code == SIGNAL_TERMINATE or code == SIGNAL_CTRL_C:
                    if pipe.state != PSInvocationState.Running:
                        shell.pool.pipeline_table.pop(run.command_id, None)
                    if code == SIGNAL_TERMINATE:
                        shell.runs.pop(run.command_id, None)
                        shell.queues.pop(run.command_id, None)
                shell.cond.notify_all()
        return "<rsp:SignalResponse/>"

    def _receive(self, req: Request) -> str:
        shell = self._shell(req)
        desired = req.body.find("rsp:Receive/rsp:DesiredStream", NS)
        cid = desired.get("CommandId") if desired is not None else None
        target = uuid.UUID(cid) if cid else None
        deadline = receive_deadline(req.timeout)
        if self.host.fault_plan.take("Receive", ("broken",)) == "broken":
            with self.lock:
                broken = self.shells.get(shell.id)
            if broken is not None:
                broken.break_pool(target)
        with shell.lock:
            if target is not None and target not in shell.runs:
                raise shell_not_found(command=True)

            def ready() -> bool:
                run = shell.runs.get(target) if target is not None else None
                return bool(shell.queues.get(target)) or (run is not None and run.done and not run.done_sent)

            long_poll(self.host.fault_plan, self.host.stopping, shell, ready, deadline)
            queue = shell.queues.get(target)
            run = shell.runs.get(target) if target is not None else None
            streams = []
            attr = f' CommandId="{str(target).upper()}"' if target is not None else ""
            while queue:
                streams.append(
                    f'<rsp:Stream Name="stdout"{attr}>{base64.b64encode(queue.popleft()).decode()}</rsp:Stream>'
                )
            state = ""
            if run is not None and run.done and not queue:
                run.done_sent = True
                state = (
                    f'<rsp:CommandState CommandId="{str(target).upper()}" State="{DONE}">'
                    "<rsp:ExitCode>0</rsp:ExitCode></rsp:CommandState>"
                )
        return f"<rsp:ReceiveResponse>{''.join(streams)}{state}</rsp:ReceiveResponse>"

    # --- PSRP events ----------------------------------------------------------------------------
    def _pump(self, shell: Shell) -> None:
        """Process every complete PSRP message received so far (shell lock held)."""
        from psrpcore import CreatePipelineEvent, EndOfPipelineInputEvent, PipelineInputEvent

        while True:
            event = shell.pool.next_event()
            if event is None:
                break
            if isinstance(event, CreatePipelineEvent):
                run = shell.runs.get(event.pipeline_id)
                if run is None:
                    continue
                run.metadata = event.pipeline
                if run.metadata.no_input:
                    run.input_done.set()
                run.thread = threading.Thread(
                    target=execute,
                    args=(self.host, shell, run),
                    name=f"fakehost-pipeline-{run.command_id}",
                    daemon=True,
                )
                run.thread.start()
            elif isinstance(event, PipelineInputEvent):
                run = shell.runs.get(event.pipeline_id)
                if run is not None:
                    run.inputs.append(event.data)
            elif isinstance(event, EndOfPipelineInputEvent):
                run = shell.runs.get(event.pipeline_id)
                if run is not None:
                    run.input_done.set()
        shell.flush()
