"""What a shell resource (:mod:`.psrp`, :mod:`.winrs`) needs of the server it runs in: the server
(:class:`.wsman.WSManServer`) fulfils this protocol, so neither resource imports the server."""

from __future__ import annotations

import threading
from typing import Protocol

from .injection import FaultPlan
from .machine import WindowsMachine


class HostContext(Protocol):
    #: the machine the scripts run on
    machine: WindowsMachine
    #: the account the shells run as (their Owner)
    username: str
    #: faults on demand
    fault_plan: FaultPlan
    #: set when the host shuts down: every waiter gives up
    stopping: threading.Event
    #: PSRP only: run a dot-sourced pipeline instead of refusing it (see :func:`.pipelines.scope_check`)
    allow_dot_sourcing: bool
    #: PSRP only: session configurations (lower-case name) that are NoLanguage JEA endpoints
    no_language_endpoints: set[str]

    @property
    def port(self) -> int: ...
