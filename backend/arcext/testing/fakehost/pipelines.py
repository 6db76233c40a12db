"""What runs in a PSRP pipeline of the fake host: the script text is looked up by SHA-256 among the
project's own .ps1 files, its parameters are bound against the real ``param()`` block, and the
matching Python implementation in :mod:`.machine` does the work. Anything else is a terminating
error, as PowerShell reports one (PipelineState=Failed with an ErrorRecord)."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from .context import HostContext
from .disk import ScriptFailure
from .runspace import PipelineRun, Shell
from .scripts import BindingError, ScriptInfo, bind, known_scripts, script_hash

log = logging.getLogger("arcext.fakehost")


class Terminating(Exception):
    """A terminating error of the pipeline: its message and FullyQualifiedErrorId."""

    def __init__(self, message: str, error_id: str) -> None:
        super().__init__(message)
        self.message = message
        self.error_id = error_id


class ScopePolicy(Protocol):
    allow_dot_sourcing: bool


def fail(run: PipelineRun, message: str, error_id: str, category: int = 0) -> None:
    """End the pipeline with a terminating error (PipelineState=Failed), as PowerShell does."""
    from psrpcore.types import ErrorCategoryInfo, ErrorRecord, NETException, PSInvocationState

    record = ErrorRecord(
        Exception=NETException(Message=message),
        CategoryInfo=ErrorCategoryInfo(Category=category, Reason="RuntimeException"),
        FullyQualifiedErrorId=error_id,
    )
    # psrpcore 0.3.1 has no public fail(); its author's demo server does the same (pinned ==0.3.1)
    run.pipeline._change_state(PSInvocationState.Failed, record)


def recognise(host: HostContext, shell: Shell, run: PipelineRun) -> ScriptInfo:
    """The project script the pipeline's one command is, or the terminating error it gets."""
    commands = list(run.metadata.commands)
    if len(commands) != 1 or not commands[0].is_script:
        raise Terminating(
            "The fake Windows host runs only the project's own scripts, each as one add_script() command.",
            "CommandNotFoundException",
        )
    command = commands[0]
    configuration = shell.resource_uri.rsplit("/", 1)[-1].lower()
    if configuration in host.no_language_endpoints:
        raise Terminating(
            "The syntax is not supported by this runspace. This can occur if the runspace is in no-language mode.",
            "ScriptsNotAllowed",
        )
    info = known_scripts().get(script_hash(command.command_text))
    if info is not None and info.name == "Invoke-HandlerRunner":
        raise Terminating(
            "Invoke-HandlerRunner.ps1 runs only in the handler's scheduled task, never in a remoting pipeline.",
            "CommandNotFoundException",
        )
    if info is None:
        raise Terminating(
            "The term '<script>' is not recognized: the script is not one of arcext's own agent scripts "
            f"(sha256 {script_hash(command.command_text)[:16]}).",
            "CommandNotFoundException",
        )
    return info


def execute(host: HostContext, shell: Shell, run: PipelineRun) -> None:
    """A pipeline's worker thread: start it, run its script once its input is complete, write the
    output (or the terminating error) and mark it done."""
    from psrpcore.types import PSInvocationState

    with shell.lock:
        if run.pipeline.state == PSInvocationState.NotStarted:
            run.pipeline.start()
    try:
        info = recognise(host, shell, run)
        command = run.metadata.commands[0]
        try:
            params = bind(info, list(command.parameters))
        except BindingError as exc:
            raise Terminating(str(exc), "ParameterBindingException") from None
        scope_check(host, shell, info, command.use_local_scope)
        while not run.input_done.wait(0.5):
            if run.cancel.is_set() or host.stopping.is_set():
                return
        if run.cancel.is_set():
            return
        output = host.machine.run_script(info.name, params, list(run.inputs), run.cancel)
        with shell.lock:
            if run.pipeline.state == PSInvocationState.Running and not shell.closed:
                run.pipeline.write_output(output)
                run.pipeline.complete()
    except Terminating as exc:
        _fail_running(shell, run, exc.message, exc.error_id)
    except ScriptFailure as exc:
        _fail_running(shell, run, str(exc), "RuntimeException")
    except Exception as exc:  # a bug in the model: surface it as a terminating error, never hang
        log.exception("fake host script failed")
        _fail_running(shell, run, f"Internal fake-host error: {exc}", "FakeHostInternalError")
    finally:
        with shell.lock:
            run.done = True
            if not shell.closed:
                shell.flush()
            shell.cond.notify_all()


def _fail_running(shell: Shell, run: PipelineRun, message: str, error_id: str) -> None:
    from psrpcore.types import PSInvocationState

    with shell.lock:
        if run.pipeline.state == PSInvocationState.Running:
            fail(run, message, error_id)


def scope_check(policy: ScopePolicy, shell: Shell, info: Any, use_local_scope: bool | None) -> None:
    """PowerShell runs an ``AddScript`` command with UseLocalScope unset or false in the runspace's
    global scope, as if dot-sourced: its variables stay there for every later pipeline of the pool,
    typed ones with their type constraint (``[hashtable]$Environment``), and a later script that
    assigns a value of another type to that name fails with "Cannot convert ...". The host refuses
    such a pipeline outright unless ``allow_dot_sourcing``; then it models the leftovers."""
    from .pscheck import assigned_variables, converts_to, typed_variables

    if use_local_scope:
        return
    if not policy.allow_dot_sourcing:
        raise Terminating(
            f"{info.name}.ps1 would run dot-sourced in the runspace pool's global scope (UseLocalScope is "
            f"{use_local_scope}); arcext's agent scripts must run with useLocalScope=true so that no "
            "variable outlives the script.",
            "ScopeSharingRefused",
        )
    with shell.lock:
        for name, rhs in assigned_variables(info.text).items():
            left = shell.global_constraints.get(name)
            if left is not None and left[1] != info.name and not converts_to(left[0], rhs):
                raise Terminating(
                    f'Cannot convert the value of "{rhs[:60]}" to type "{left[0]}": ${name} was left '
                    f"type-constrained in the global scope by {left[1]}.ps1.",
                    "RuntimeException",
                )
        for name, type_ in typed_variables(info.text).items():
            shell.global_constraints[name] = (type_, info.name)
