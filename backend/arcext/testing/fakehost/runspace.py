"""A PowerShell runspace pool as the fake host keeps it: one WSMan shell of the PowerShell resource,
its pipelines, and the PSRP payloads (psrpcore's server side) queued for the client per target."""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PipelineRun:
    pipeline: Any  # psrpcore.ServerPipeline
    command_id: uuid.UUID
    inputs: list[Any] = field(default_factory=list)
    input_done: threading.Event = field(default_factory=threading.Event)
    created: threading.Event = field(default_factory=threading.Event)
    cancel: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    done_sent: bool = False
    metadata: Any = None
    thread: threading.Thread | None = None

    def stop(self) -> None:
        """Cancel the run and release a wait for its input."""
        self.cancel.set()
        self.input_done.set()


class Shell:
    """One runspace pool (a WSMan shell) with its outgoing PSRP payloads queued per target."""

    def __init__(self, shell_id: str, resource_uri: str) -> None:
        import psrpcore

        self.id = shell_id.upper()
        self.resource_uri = resource_uri
        self.pool = psrpcore.ServerRunspacePool()
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.queues: dict[uuid.UUID | None, deque[bytes]] = {}
        self.runs: dict[uuid.UUID, PipelineRun] = {}
        self.created_at = time.time()
        self.closed = False
        #: the pool's global scope as far as the model knows it: variables that dot-sourced scripts
        #: left type-constrained there (lower-case name -> (type, the script that left it))
        self.global_constraints: dict[str, tuple[str, str]] = {}

    def flush(self) -> None:
        """Move every PSRP payload psrpcore has ready into the per-target queues (lock held)."""
        while True:
            payload = self.pool.data_to_send()
            if payload is None:
                break
            self.queues.setdefault(payload.pipeline_id, deque()).append(payload.data)
        self.cond.notify_all()

    def stop(self) -> None:
        """Cancel every pipeline and wake every waiter (lock taken)."""
        with self.lock:
            for run in self.runs.values():
                run.stop()
            self.cond.notify_all()

    def break_pool(self, target: uuid.UUID | None = None) -> None:
        """The pool goes Broken (an injected fault); the Broken state reaches the client on the
        stream it is reading (``target``)."""
        from psrpcore.types import ErrorCategoryInfo, ErrorRecord, NETException

        with self.lock:
            record = ErrorRecord(
                Exception=NETException(Message="The remote session broke (injected fault)."),
                CategoryInfo=ErrorCategoryInfo(),
            )
            self.pool.set_broken(record)
            for run in self.runs.values():
                run.cancel.set()
            self.flush()
            if target is not None:
                pool_queue = self.queues.pop(None, deque())
                self.queues.setdefault(target, deque()).extend(pool_queue)
                self.cond.notify_all()
