"""The fake host's WS-Management pieces on their own: request parsing, the faults, faults on demand."""

from __future__ import annotations

import threading
import time

import pytest

from arcext.testing.fakehost.injection import ConnectionReset, FaultPlan, long_poll
from arcext.testing.fakehost.soap import (
    ACTION,
    CMD_RESOURCE,
    Fault,
    Request,
    fault_envelope,
    parse_timeout,
    read_envelope,
)


def request_xml(action: str, timeout: str = "PT20S") -> bytes:
    return (
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
        'xmlns:wsman="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><s:Header>'
        f"<wsa:Action>{action}</wsa:Action><wsa:MessageID>uuid:M1</wsa:MessageID>"
        f"<wsman:ResourceURI>{CMD_RESOURCE}</wsman:ResourceURI><wsa:To>http://h:5985/wsman</wsa:To>"
        f"<wsman:OperationTimeout>{timeout}</wsman:OperationTimeout>"
        '<wsman:SelectorSet><wsman:Selector Name="ShellId">ab-12</wsman:Selector></wsman:SelectorSet>'
        '<wsman:OptionSet><wsman:Option Name="WINRS_CODEPAGE"> 65001 </wsman:Option></wsman:OptionSet>'
        "</s:Header><s:Body/></s:Envelope>"
    ).encode()


def test_a_request_is_parsed_into_one_record() -> None:
    env = read_envelope(request_xml(ACTION["Receive"]))
    assert (env.action, env.message_id, env.resource_uri) == ("Receive", "uuid:M1", CMD_RESOURCE)
    req = Request.parse(env, "10.0.0.1")
    assert req.shell_id == "AB-12" and req.options == {"WINRS_CODEPAGE": "65001"}
    assert (req.timeout, req.to, req.client_ip) == (20.0, "http://h:5985/wsman", "10.0.0.1")
    assert read_envelope(request_xml("http://example/Unknown")).action == "Unknown"


def test_an_invalid_timeout_is_the_header_fault_and_a_missing_one_is_a_minute() -> None:
    assert parse_timeout(None) == 60.0 and parse_timeout("PT2.5S") == 2.5
    with pytest.raises(Fault) as caught:
        Request.parse(read_envelope(request_xml(ACTION["Receive"], "20s")), "10.0.0.1")
    assert caught.value.subcode == "a:InvalidMessageInformationHeader"
    with pytest.raises(ValueError, match="not a SOAP envelope"):
        read_envelope(b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"/>')


def test_a_fault_envelope_escapes_what_it_quotes() -> None:
    text = fault_envelope("uuid:<1>", Fault("s:Sender", "w:X", "a < b", 5), "HOST&1")
    assert "uuid:&lt;1&gt;" in text and "a &lt; b" in text and 'Machine="HOST&amp;1"' in text


def test_an_injected_fault_counts_down_and_matches_any_action_with_a_star() -> None:
    plan = FaultPlan()
    plan.inject("Receive", "500", count=2)
    plan.inject("*", "reset")
    assert plan.take("Command", ("500",)) is None
    assert [plan.take("Receive", ("500",)) for _ in range(3)] == ["500", "500", None]
    assert plan.take("Command") == "reset" and plan.take("Command") is None
    with pytest.raises(ValueError):
        plan.inject("Receive", "teapot")


class _Shell:
    def __init__(self) -> None:
        self.cond = threading.Condition(threading.RLock())
        self.closed = False


def test_the_long_poll_times_out_wakes_on_data_and_resets_when_told() -> None:
    plan, stopping, shell = FaultPlan(), threading.Event(), _Shell()
    with shell.cond, pytest.raises(Fault) as caught:
        long_poll(plan, stopping, shell, lambda: False, time.monotonic() + 0.05)
    assert caught.value.subcode == "w:TimedOut"
    ready = threading.Event()

    def data_arrives() -> None:
        with shell.cond:
            ready.set()
            shell.cond.notify_all()

    threading.Timer(0.05, data_arrives).start()
    started = time.monotonic()
    with shell.cond:
        long_poll(plan, stopping, shell, ready.is_set, started + 5)
    assert time.monotonic() - started < 4, "woken by the notify, not the deadline"
    plan.inject("Receive", "reset")
    with shell.cond, pytest.raises(ConnectionReset):
        long_poll(plan, stopping, shell, lambda: True, time.monotonic() + 5)
