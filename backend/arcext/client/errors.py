"""Client errors and the exit codes scripts can rely on.

=====  ===========================================================================================
code   meaning
=====  ===========================================================================================
0      success
1      the server answered an error (ARM error: 4xx other than 404, 5xx), or a long-running
       operation ended Failed or Canceled
2      usage error: a bad option or argument, invalid JSON or JMESPath, no endpoint/token/subscription
3      not found: the server answered 404 (ResourceNotFound, ParentResourceNotFound, ...)
4      cannot reach the server: connection refused, DNS, TLS verification, HTTP timeout
5      a wait timed out: a long-running operation or ``rollout watch`` did not finish in time
130    interrupted (Ctrl-C)
=====  ===========================================================================================

Errors are printed on stderr as ``ERROR: (<ARM code>) <message>`` (az's format).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONNECTION = 4
EXIT_TIMEOUT = 5
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An error the CLI reports as ``ERROR: (<code>) <message>`` and turns into an exit code."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def render(self) -> str:
        return f"ERROR: ({self.code}) {self.message}" if self.code else f"ERROR: {self.message}"


class ArmHttpError(CliError):
    """The server answered with an error status (the ARM error envelope when it sent one)."""

    def __init__(self, status: int, code: str, message: str, target: str | None = None) -> None:
        super().__init__(message, code)
        self.status = status
        self.target = target
        self.exit_code = EXIT_NOT_FOUND if status == 404 else EXIT_ERROR


class OperationFailed(CliError):
    """A long-running operation ended Failed or Canceled."""


class UsageProblem(CliError):
    """The command cannot run as given (missing login, bad JSON...)."""

    exit_code = EXIT_USAGE


class ConnectionProblem(CliError):
    exit_code = EXIT_CONNECTION


class WaitTimeout(CliError):
    exit_code = EXIT_TIMEOUT
