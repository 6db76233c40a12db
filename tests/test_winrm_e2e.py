"""End to end with the winrm driver: the upgrade engine + WinrmDriver + unmodified pywinrm over real
HTTP(S) + fake Windows hosts reached through their WinRS cmd shell.

The scenarios are test_psrp_e2e's, run unchanged against hosts whose hostConnection asks for the
winrm driver (``FakeHost(driver="winrm")``); each asserts on the fake host's own model (versions on
disk, settings bytes, handler command order, one shell per job). On top, every test checks what only
WinRS has: the agent scripts were uploaded to the host's disk and the only command lines sent were
the two fixed -EncodedCommand scripts, each under cmd.exe's limit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

import test_psrp_e2e as psrp_e2e
from arcext.hosts.psrp import SCRIPT_PARAMETERS
from arcext.hosts.winrm import CMD_LINE_LIMIT, WINRS_SCRIPTS, script_sha256
from arcext.testing import ArcextServer
from arcext.testing.fakehost import FakeHost

# the same engine fixtures as the psrp scenarios
arc = psrp_e2e.arc


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeHost]:
    with FakeHost(tmp_path / "host", auth="basic", tls=True, driver="winrm") as host:
        yield host


@pytest.fixture
def fake_ntlm(tmp_path: Path) -> Iterator[FakeHost]:
    with FakeHost(tmp_path / "ntlmhost", auth="ntlm", tls=False, username="ntlmuser", driver="winrm") as host:
        yield host


def assert_winrs_only(host: FakeHost, uploaded: bool = True) -> None:
    """Only the bootstrap and the wrapper ran as command lines (no PSRP at all), all under cmd.exe's
    limit; the host's disk has every agent script, byte for byte the project's."""
    commands = host.server.winrs.commands
    assert commands, "the host was reached over WinRS"
    assert {name for name, _ in commands} <= set(WINRS_SCRIPTS), commands
    assert max(len(line) for _, line in commands) <= CMD_LINE_LIMIT
    assert host.server.shells == {}, "no PSRP runspace pool was ever opened"
    if uploaded:
        for name in SCRIPT_PARAMETERS:
            data = host.machine.agent_script(name)
            assert data is not None and hashlib.sha256(data).hexdigest() == script_sha256(name), name


def test_upgrade_succeeds_over_basic_tls(arc: ArcextServer, s: requests.Session, fake: FakeHost) -> None:
    psrp_e2e.test_upgrade_succeeds_over_basic_tls(arc, s, fake)
    assert_winrs_only(fake)
    assert fake.server.winrs.shells_opened == 2, "one cmd shell for the install job, one for the upgrade job"


def test_enable_fails_1009_rolls_back(arc: ArcextServer, s: requests.Session, fake: FakeHost) -> None:
    psrp_e2e.test_enable_fails_1009_rolls_back(arc, s, fake)
    assert_winrs_only(fake)


def test_update_hangs_times_out_1011_and_rolls_back(
    arc: ArcextServer,
    s: requests.Session,
    fake: FakeHost,
) -> None:
    psrp_e2e.test_update_hangs_times_out_1011_and_rolls_back(arc, s, fake)
    assert_winrs_only(fake)
    # the hang runs in the host's handler task, which enforces the timeout; the driver polls for it
    update = [c for c in fake.machine.command_log() if c["command"] == "update"]
    assert update and update[-1]["timedOut"] is True and update[-1]["runAs"] == "SYSTEM"
    # the host waits for the step (WaitSeconds) rather than the driver polling through the 2 s hang
    assert 0 < fake.machine.scripts_run().count("Invoke-HandlerCommand") <= 8


def test_connection_reset_during_install_resumes_from_the_journal_over_ntlm(
    arc: ArcextServer,
    s: requests.Session,
    fake_ntlm: FakeHost,
) -> None:
    psrp_e2e.test_connection_reset_during_install_resumes_from_the_journal_over_ntlm(arc, s, fake_ntlm)
    assert_winrs_only(fake_ntlm)
    bootstraps = [name for name, _ in fake_ntlm.server.winrs.commands if name == "Install-AgentScripts"]
    # the bootstrap runs only when the wrapper finds a script missing: once, for the install job's
    # first script; the upgrade job's shell and its reconnection find them all in place
    assert len(bootstraps) == 1, bootstraps


def test_wrong_password_is_an_auth_error_without_retry_storm(
    arc: ArcextServer,
    s: requests.Session,
    fake: FakeHost,
) -> None:
    psrp_e2e.test_wrong_password_is_an_auth_error_without_retry_storm(arc, s, fake)
    assert_winrs_only(fake)


def test_wrong_password_over_ntlm_is_an_auth_error(
    arc: ArcextServer,
    s: requests.Session,
    fake_ntlm: FakeHost,
) -> None:
    psrp_e2e.prepare(s, arc, fake_ntlm)
    psrp_e2e.connect(s, arc, fake_ntlm, password="not-the-password")
    summary = psrp_e2e.upgrade(s, arc)
    assert summary["notRun"] == 1 and summary["rolledBack"] == 0, summary
    assert psrp_e2e.job_commands(fake_ntlm) == []
    assert fake_ntlm.machine.versions(psrp_e2e.HANDLER) == {"1.0.0": "Enabled"}


def test_failed_rollback_leaves_the_extension_failed(
    arc: ArcextServer,
    s: requests.Session,
    fake: FakeHost,
) -> None:
    psrp_e2e.test_failed_rollback_leaves_the_extension_failed(arc, s, fake)
    assert_winrs_only(fake)


def test_status_stays_transitioning_past_its_deadline_rolls_back(
    arc: ArcextServer, s: requests.Session, fake: FakeHost
) -> None:
    psrp_e2e.test_status_stays_transitioning_past_its_deadline_rolls_back(arc, s, fake)
    assert_winrs_only(fake)


def test_stale_heartbeat_rolls_back(arc: ArcextServer, s: requests.Session, fake: FakeHost) -> None:
    psrp_e2e.test_stale_heartbeat_rolls_back(arc, s, fake)
    assert_winrs_only(fake)
