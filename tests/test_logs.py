"""Structured logs: one JSON line per request and per upgrade step (request ids, rollout, machine, extension)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from arcext.cli import main
from arcext.logging_setup import JsonFormatter, TextFormatter, configure
from arcext.testing import ArcextServer
from conftest import API, machine_url, put_extension

PUB, TYPE = "Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent"


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def parsed(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def test_one_json_line_per_request_and_per_upgrade_step(json_lines: io.StringIO) -> None:
    with ArcextServer(manual_clock=True, simulate=True) as arc, arc.session() as s:
        put = s.put(
            machine_url(arc, "m1"),
            params={"api-version": API},
            json={"location": "eastus"},
            headers={"x-ms-correlation-request-id": "corr-42", "x-ms-client-request-id": "client-7"},
        )
        assert put.status_code == 200
        put_extension(s, arc, "ama", "m1", properties={"publisher": PUB, "type": TYPE, "typeHandlerVersion": "1.0"})
        arc.set_faults("m1", fail_upgrade=1)
        rollout_id = arc.publish_version(PUB, TYPE, "1.1")["rolloutId"]
        arc.advance(days=60)
    lines = parsed(json_lines)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    requests_logged = [line for line in lines if line.get("event") == "http.request"]
    mine = next(line for line in requests_logged if line["x-ms-correlation-request-id"] == "corr-42")
    assert mine["x-ms-request-id"] == put.headers["x-ms-request-id"]
    assert mine["x-ms-client-request-id"] == "client-7"
    assert mine["route"].endswith("/machines/<machine_name>") and mine["path"].endswith("/machines/m1")
    assert mine["status"] == 200 and mine["method"] == "PUT" and mine["durationMs"] >= 0
    assert mine["caller"] == "arcext-test-owner"
    steps = [line for line in lines if line.get("event") == "upgrade.step"]
    assert [st["step"] for st in steps] == ["started", "rolled_back"]
    for st in steps:
        assert st["rolloutId"] == rollout_id and st["machine"] == "m1" and st["extension"] == "ama"
        assert st["x-ms-correlation-request-id"] and st["toVersion"] == "1.1"
    assert steps[1]["level"] == "warning" and steps[1]["driver"] == "simulated"
    host_ops = [line for line in lines if line.get("event") == "host.operation"]
    assert [(h["step"], h.get("errorCode") is not None) for h in host_ops] == [("upgrade", True), ("rollback", False)]
    assert all(h["rolloutId"] == rollout_id and h["machine"] == "m1" and h["extension"] == "ama" for h in host_ops)
    planned = [line for line in lines if line.get("event") == "rollout.planned"]
    assert planned and planned[0]["rolloutId"] == rollout_id


def test_text_format_appends_the_fields() -> None:
    record = logging.LogRecord("arcext.requests", logging.INFO, __file__, 1, "GET / -> 200", (), None)
    record.fields = {"event": "http.request", "x-ms-request-id": "abc"}
    assert TextFormatter().format(record).endswith("GET / -> 200 x-ms-request-id=abc")
    line = json.loads(JsonFormatter().format(record))
    assert line["x-ms-request-id"] == "abc" and line["message"] == "GET / -> 200"


def test_configure_and_the_serve_option() -> None:
    out = io.StringIO()
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        configure("json", stream=out)
        logging.getLogger("arcext.test").info("hello %s", "there", extra={"fields": {"machine": "m1"}})
        assert json.loads(out.getvalue()) | {"time": ""} == {
            "time": "",
            "level": "info",
            "logger": "arcext.test",
            "message": "hello there",
            "machine": "m1",
        }
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved:
            root.addHandler(h)
        root.setLevel(level)
    help_text = CliRunner().invoke(main, ["serve", "--help"]).output
    assert "--log-format [text|json]" in help_text


def test_text_time_matches_the_stock_formatter_across_seconds() -> None:
    """TextFormatter formats each second once: its times must still be logging.Formatter's, to the millisecond."""
    ours, stock = TextFormatter(), logging.Formatter()
    for created in (1_000_000_000.001, 1_000_000_000.999, 1_000_000_001.0005, 1_000_000_000.5, 1_700_000_123.25):
        record = logging.LogRecord("arcext.requests", logging.INFO, __file__, 1, "m", None, None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.formatTime(record) == stock.formatTime(record)
        assert ours.formatTime(record, "%H:%M") == stock.formatTime(record, "%H:%M")
