"""What the host benchmarks (bench_hosts.py, bench_hosts_ssh.py) ask of the API: a checked response, and
long-running operations waited for together."""

from __future__ import annotations

import time
from typing import Any

import requests


def ok(r: requests.Response, *codes: int) -> Any:
    """The response's JSON (None without a body); RuntimeError unless its status is one of ``codes``."""
    if r.status_code not in codes:
        raise RuntimeError(f"{r.request.method} {r.url}: {r.status_code} {r.text[:500]}")
    return r.json() if r.content else None


def wait_operations(s: requests.Session, urls: list[str], timeout: float) -> list[str]:
    """Poll the operations' Azure-AsyncOperation URLs until none is InProgress; their final statuses, in order."""
    deadline = time.monotonic() + timeout
    pending = list(urls)
    statuses: dict[str, str] = {}
    while pending:
        still = []
        for url in pending:
            status = str(ok(s.get(url), 200)["status"])
            if status == "InProgress":
                still.append(url)
            else:
                statuses[url] = status
        pending = still
        if pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(pending)} operations still InProgress after {timeout}s")
            time.sleep(0.05)
    return [statuses[u] for u in urls]
