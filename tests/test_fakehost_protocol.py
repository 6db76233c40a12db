"""The fake Windows host at the protocol level, through unmodified pypsrp, and the psrp driver's
error mapping: injected 401 / WSManFault 500 / silent Receive / broken pool / unknown script; and
the fake's envelopes compared with transcripts recorded from real Windows hosts."""

from __future__ import annotations

import glob
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
import yaml
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from arcext.crypto import SecretBox
from arcext.hosts import connections
from arcext.hosts.base import HostAuthError, HostTimeout, ProtocolError, RemoteScriptError, SessionLost
from arcext.hosts.packages import PackageStore
from arcext.hosts.psrp import AgentScriptDriver, DriverTuning, PsrpDriver, script_text
from arcext.testing.fakehost import FakeHost, make_package

RECORDINGS = Path(__file__).resolve().parent / "data" / "pypsrp-recordings"  # see tests/data/README.md
HANDLER = "Contoso.Fake.Agent"


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeHost]:
    with FakeHost(tmp_path / "host", auth="basic", tls=True) as host:
        yield host


def driver(
    tmp_path: Path, host: FakeHost, cls: type[AgentScriptDriver] = PsrpDriver, **overrides: object
) -> AgentScriptDriver:
    """A driver of class ``cls`` for ``host`` (operation timeout 2 s, status poll 0.1 s)."""
    public, secrets = connections.validate(host.connection(operationTimeoutSeconds=2, **overrides))
    box = SecretBox.from_data_dir(tmp_path / "data")
    conn = connections.load({**public, "credentials": box.seal(secrets)}, box)
    store = PackageStore(tmp_path / "data" / "packages")
    store.put("Contoso.Fake", "Agent", "1.0.0", make_package(HANDLER, "1.0.0"), datetime.now(UTC))
    return cls("m1", conn, store, {"agent": HANDLER}, DriverTuning(status_poll_s=0.1, deadline_margin_s=1))


def test_unknown_script_and_bad_parameters_are_terminating_errors(fake: FakeHost) -> None:
    wsman = WSMan(operation_timeout=3, read_timeout=10, reconnection_backoff=0.1, **fake.pypsrp_kwargs())
    with RunspacePool(wsman) as pool:
        with PowerShell(pool) as ps:
            ps.add_script("Get-ChildItem C:\\")
            ps.invoke()
            assert ps.had_errors and "not one of arcext's own agent scripts" in str(ps.streams.error[0])
        with PowerShell(pool) as ps:
            ps.add_script(script_text("Get-HandlerStatus"), use_local_scope=True)
            ps.add_parameters({"Handler": HANDLER, "Version": "1"})
            ps.invoke()
            assert ps.had_errors and "missing mandatory parameters: SequenceNumber" in str(ps.streams.error[0])
        with PowerShell(pool) as ps:
            ps.add_script(script_text("Get-ExtensionState"), use_local_scope=True)
            ps.add_parameters({"Handler": HANDLER, "Extra": 1})
            ps.invoke()
            assert ps.had_errors and "'Extra'" in str(ps.streams.error[0])
        with PowerShell(pool) as ps:  # a legal call works on the same pool
            ps.add_script(script_text("Get-ExtensionState"), use_local_scope=True).add_parameters({"Handler": HANDLER})
            assert ps.invoke() == ['{"handler":"Contoso.Fake.Agent","versions":[],"cached":[],"journal":null}']
    assert fake.machine.scripts_run() == ["Get-ExtensionState"], "only the recognised script reached the model"


def test_receive_long_poll_times_out_and_pypsrp_polls_again(fake: FakeHost, tmp_path: Path) -> None:
    check_long_poll(driver(tmp_path, fake, handlerTimeoutSeconds={"install": 30}), fake, "Fault:w:TimedOut")


def check_long_poll(d: AgentScriptDriver, fake: FakeHost, fault_key: str) -> None:
    """A script that takes 2.5 s against a 2 s OperationTimeout (handler commands run in a task and
    answer at once, so a slow host): the host answers TimedOut, the client polls again."""
    from arcext.hosts.base import ExtensionSpec

    fake.machine.slow_scripts["Expand-Package"] = 2.5
    d.install(ExtensionSpec("agent", "Contoso.Fake", "Agent", {"x": 1}), "1.0.0")
    d.close()
    assert fault_key in fake.server.last_envelopes, "the 2 s OperationTimeout fault was answered"
    assert fake.machine.versions(HANDLER) == {"1.0.0": "Enabled"}


def test_driver_maps_injected_faults_to_its_taxonomy(fake: FakeHost, tmp_path: Path) -> None:
    check_fault_mapping(driver(tmp_path, fake), fake, lambda: fake.inject("Receive", "broken"))


def check_fault_mapping(d: AgentScriptDriver, fake: FakeHost, break_session: Callable[[], None]) -> None:
    """An HTTP 401, a WSManFault 500, a session that breaks (``break_session``) and a Receive that
    never answers, each as the driver's taxonomy says; after the broken session a fresh one works."""
    fake.inject("auth", "401")
    with pytest.raises(HostAuthError):
        d.installed("agent")
    d.close()
    fake.inject("Command", "500")
    with pytest.raises(ProtocolError, match="WSManFault"):
        d.installed("agent")
    break_session()
    with pytest.raises(SessionLost):
        d.installed("agent")
    assert d.installed("agent") is None, "the next call opens a fresh session"
    fake.inject("Receive", "hang")
    started = time.monotonic()
    with pytest.raises(HostTimeout):
        d.installed("agent")
    assert time.monotonic() - started < 10, "the driver's own deadline, not the library's retry stall"
    d.close()


def test_a_late_failure_of_an_abandoned_call_keeps_the_new_pool(fake: FakeHost, tmp_path: Path) -> None:
    check_late_failure_keeps_the_new_session(driver(tmp_path, fake), fake)


def check_late_failure_keeps_the_new_session(d: AgentScriptDriver, fake: FakeHost) -> None:
    """A call the deadline abandoned fails later (its read timeout, a reset): by then the driver has
    opened a new session, which the late failure must leave alone."""
    import requests

    assert d.installed("agent") is None
    abandoned = d._session()

    def late_failure() -> None:
        d._discard(close=False)  # the deadline gave up on this call ...
        assert d.installed("agent") is None  # ... and the next call opened a new session
        raise requests.exceptions.ReadTimeout("read timed out")

    with pytest.raises(HostTimeout):
        d._boundary("Get-ExtensionState", late_failure, opened=True)
    current = d._session()
    assert current is not None and current is not abandoned, "the new session is still the driver's"
    opened = fake.server.pools_opened
    assert d.installed("agent") is None
    assert fake.server.pools_opened == opened, "and it is reused, not reopened"
    d.close()


def test_wrong_password_and_refused_connection(fake: FakeHost, tmp_path: Path) -> None:
    d = driver(tmp_path, fake, password="wrong")
    with pytest.raises(HostAuthError):
        d.installed("agent")
    d = driver(tmp_path, fake, port=1)
    from arcext.hosts.base import HostUnreachable

    with pytest.raises(HostUnreachable):
        d.installed("agent")


def test_script_errors_surface_as_remote_script_errors(fake: FakeHost, tmp_path: Path) -> None:
    d = driver(tmp_path, fake)
    with pytest.raises(RemoteScriptError, match="not in the package cache"):
        d._script("Expand-Package", {"Handler": HANDLER, "Version": "9.9", "Sha256": "0" * 64, "FilesJson": "{}"})
    d.close()


# --- fidelity: the fake's envelopes have the structure real Windows sends -------------------------
def _paths(xml: str) -> frozenset[str]:
    out: set[str] = set()

    def walk(e: ET.Element, prefix: str) -> None:
        p = prefix + "/" + re.sub(r"\{.*\}", "", e.tag)
        out.add(p)
        for c in e:
            walk(c, p)

    walk(ET.fromstring(xml), "")
    return frozenset(out)


def _recorded(pattern: str = "test_psrp*.yml") -> dict[str, list[frozenset[str]]]:
    """Element paths of every recorded response, per response action (or Fault:<subcode>)."""
    found: dict[str, list[frozenset[str]]] = {}
    files = sorted(glob.glob(str(RECORDINGS / pattern)))
    assert files, f"no transcript matches {pattern} in {RECORDINGS} (they ship in tests/data)"
    for f in files:
        for m in yaml.safe_load(Path(f).read_text())["messages"]:
            response = m.get("response") or ""
            action = re.search(r"<a:Action>([^<]*)<", response)
            if not action:
                continue
            key = action.group(1).rsplit("/", 1)[-1]
            if key == "fault":
                key = "Fault:" + (re.search(r"<s:Subcode><s:Value>([^<]*)<", response) or [None, "?"])[1]
            found.setdefault(key, []).append(_paths(response))
    return found


def test_envelopes_match_real_windows_transcripts(fake: FakeHost, tmp_path: Path) -> None:
    d = driver(tmp_path, fake)
    from arcext.hosts.base import ExtensionSpec

    d.install(ExtensionSpec("agent", "Contoso.Fake", "Agent", {"x": 1}), "1.0.0")
    d.close()
    wsman = WSMan(operation_timeout=1, read_timeout=10, reconnection_backoff=0.1, **fake.pypsrp_kwargs())
    with RunspacePool(wsman) as pool:
        shell_id = pool.shell.id
        ps = PowerShell(pool)
        ps.add_script(script_text("Invoke-HandlerCommand"), use_local_scope=True).add_parameters(
            {
                "Handler": HANDLER,
                "Version": "1.0.0",
                "Command": "enable",
                "TimeoutSeconds": 1,
                "OperationId": "x",
                "Step": "s",
            }
        )
        ps.begin_invoke()
        ps.poll_invoke()  # the fake fails it (no journal for op x); TimedOut or output both fine
        ps.end_invoke()
    pool.shell.id = shell_id
    with pytest.raises(Exception):  # noqa: B017 - Get on a deleted shell: InvalidSelectors fault
        pool.shell._get_shell()
    compared = compare_envelopes(fake.server.last_envelopes, _recorded(), RESPONSES)
    assert {"Create", "Command", "Receive", "Signal", "Delete", "Fault:w:InvalidSelectors"} <= set(compared), compared


#: (the fake's last_envelopes key, the recorded response it must look like)
RESPONSES = [
    ("Create", "CreateResponse"),
    ("Command", "CommandResponse"),
    ("Send", "SendResponse"),
    ("Receive", "ReceiveResponse"),
    ("Signal", "SignalResponse"),
    ("Delete", "DeleteResponse"),
    ("Fault:w:TimedOut", "Fault:w:TimedOut"),
    ("Fault:w:InvalidSelectors", "Fault:w:InvalidSelectors"),
]


def compare_envelopes(
    mine: dict[str, str],
    recorded: dict[str, list[frozenset[str]]],
    pairs: list[tuple[str, str]],
    optional: frozenset[str] = frozenset(),
) -> list[str]:
    """Each of the fake's last envelopes (key ``action``) has every element real Windows always sends
    in that response (key ``key``; ``optional`` paths excepted) and none it never sends. Returns the
    actions compared."""
    compared = []
    for action, key in pairs:
        if action not in mine:
            continue
        variants = recorded[key]
        ours = _paths(mine[action])
        required = frozenset.intersection(*variants) - optional
        allowed = frozenset.union(*variants)
        assert required <= ours, f"{action}: missing {sorted(required - ours)}"
        assert ours <= allowed, f"{action}: elements real Windows never sends: {sorted(ours - allowed)}"
        compared.append(action)
    return compared
