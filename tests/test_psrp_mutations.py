"""Deliberate breakages of the driver must be caught by the same model assertions the end-to-end
tests make: skipping old.disable, dropping the settings copy, ignoring handler exit codes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from arcext.crypto import SecretBox
from arcext.hosts import connections
from arcext.hosts.base import ExtensionSpec, HostDriverError
from arcext.hosts.packages import PackageStore
from arcext.hosts.psrp import AgentScriptDriver, DriverTuning, HandlerCommandFailed, PsrpDriver
from arcext.testing.fakehost import FakeHost, make_package

HANDLER = "Contoso.Fake.Agent"
ORDER = [("1.0.0", "disable"), ("1.1.0", "update"), ("1.0.0", "uninstall"), ("1.1.0", "install"), ("1.1.0", "enable")]


def scenario(tmp: Path, new_behaviour: dict[str, Any], driver: type[AgentScriptDriver] = PsrpDriver) -> None:
    """Install 1.0.0, upgrade to 1.1.0 (rolling back on failure, as the engine does) and check the
    fake host's model. Raises AssertionError when the host is not in the state the protocol demands.
    ``driver`` is the driver class (the fake host speaks PSRP and WinRS)."""
    with FakeHost(tmp / "host", auth="basic", tls=True, driver=driver.kind) as host:
        public, secrets = connections.validate(host.connection(operationTimeoutSeconds=2, statusDeadlineSeconds=1))
        box = SecretBox.from_data_dir(tmp / "data")
        conn = connections.load({**public, "credentials": box.seal(secrets)}, box)
        store = PackageStore(tmp / "data" / "packages")
        store.put("Contoso.Fake", "Agent", "1.0.0", make_package(HANDLER, "1.0.0"), datetime.now(UTC))
        store.put("Contoso.Fake", "Agent", "1.1.0", make_package(HANDLER, "1.1.0", new_behaviour), datetime.now(UTC))
        spec = ExtensionSpec("agent", "Contoso.Fake", "Agent", {"w": 1}, {"k": "secret"})
        d = driver("m1", conn, store, tuning=DriverTuning(status_poll_s=0.1))
        d.install(spec, "1.0.0")
        before = host.machine.settings_files(HANDLER, "1.0.0")
        failed = False
        try:
            d.upgrade(spec, "1.0.0", "1.1.0")
        except HostDriverError as exc:
            failed = True
            code = new_behaviour.get("enable", {}).get("exitCode")
            assert getattr(exc, "exit_code", None) == code, f"the handler's own exit code is reported: {exc}"
            d.rollback(spec, "1.1.0", "1.0.0")
        d.close()
        expect_failure = bool(new_behaviour)
        good = "1.0.0" if expect_failure else "1.1.0"
        assert failed == expect_failure, "the upgrade outcome matches the package's behaviour"
        assert host.machine.versions(HANDLER) == {good: "Enabled"}
        assert host.machine.settings_files(HANDLER, good) == before
        assert host.machine.commands(HANDLER)[2:7] == ORDER


def drop_calls(monkeypatch: pytest.MonkeyPatch, dropped: Callable[[str, dict[str, Any]], bool]) -> None:
    """The driver no longer sends the scripts ``dropped`` picks (in a batch or alone); each answers
    ``{}`` (a skipped step for Invoke-HandlerCommand) as if it had run."""
    real = AgentScriptDriver._scripts

    def patched(self: AgentScriptDriver, calls: list[tuple[str, dict[str, Any]]], *a: Any, **k: Any) -> Any:
        kept = [c for c in calls if not dropped(*c)]
        answers = iter(real(self, kept, *a, **k) if kept else [])
        return [
            ({"skipped": True} if c[0] == "Invoke-HandlerCommand" else {}) if dropped(*c) else next(answers)
            for c in calls
        ]

    monkeypatch.setattr(AgentScriptDriver, "_scripts", patched)


def skip_disable(monkeypatch: pytest.MonkeyPatch) -> None:
    drop_calls(monkeypatch, lambda name, p: name == "Invoke-HandlerCommand" and p.get("Step") == "old.disable")


def drop_settings_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    drop_calls(monkeypatch, lambda name, p: name == "Copy-RuntimeSettings")


def ignore_exit_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    real = PsrpDriver.handler_command

    def patched(self: PsrpDriver, *a: Any, **k: Any) -> dict[str, Any]:
        try:
            return real(self, *a, **k)
        except HandlerCommandFailed:
            return {}

    monkeypatch.setattr(PsrpDriver, "handler_command", patched)


def test_the_honest_driver_passes_both_scenarios(tmp_path: Path) -> None:
    scenario(tmp_path / "ok", {})
    scenario(tmp_path / "fails", {"enable": {"exitCode": 3}})


@pytest.mark.parametrize(
    ("breakage", "behaviour"),
    [
        (skip_disable, {}),
        (drop_settings_copy, {}),
        (ignore_exit_codes, {"enable": {"exitCode": 3}}),
    ],
    ids=["skip-disable", "drop-settings-copy", "ignore-exit-codes"],
)
def test_each_breakage_is_caught(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    breakage: Callable[[pytest.MonkeyPatch], None],
    behaviour: dict[str, Any],
) -> None:
    breakage(monkeypatch)
    with pytest.raises((AssertionError, HostDriverError)):
        scenario(tmp_path, behaviour)
