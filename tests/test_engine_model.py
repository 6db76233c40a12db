"""A model-based test of the upgrade engine (issue 18): a hypothesis state machine against a live
server on the manual clock with simulated hosts, over HTTP.

Each step is one thing an operator (or a fleet) does: concurrent creates and deletes, turning
automatic upgrade off and on, manual upgrades, publishing versions (standard, critical, a critical
one right after another), pausing, freezing and resuming rollouts, moving the clock, running the
engine, making simulated hosts fail, restarting the server. After every step the invariants below
are checked; at the end faults are cleared, rollouts resumed and time runs out the windows, and
every healthy opted-in extension must be on the newest version of its major.

Bounded and derandomized (a fixed seed) for the normal run; ``ARCEXT_MODEL_EXAMPLES`` and
``ARCEXT_MODEL_STEPS`` make a longer run, e.g. ``ARCEXT_MODEL_EXAMPLES=40 ARCEXT_MODEL_STEPS=80``.

A failure is reported as found, not shrunk: every step runs against a live server, and hypothesis's
shrinker once spent more than five minutes on one failure. ``ARCEXT_MODEL_SHRINK=1`` shrinks it, for at
most ``ARCEXT_MODEL_SHRINK_SECONDS`` (default 60). The number of runs and steps is printed either way,
with what the engine's self-check repaired on the way (a bug, but not an invariant broken for a user);
A repair fails the run (``ARCEXT_MODEL_STRICT=0`` only reports it), so the sequence that needed it is shown.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture import engine as hypothesis_engine
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from arcext.testing import ArcextServer
from conftest import API, SUB, ext_url, machine_url

PUB, TYPE = "Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent"
HANDLER = f"{PUB}.{TYPE}"
AUTO = "Azure Regional Service Manager"
MACHINES = [f"m{i}" for i in range(8)]
HOUR, DAY = 3600, 86400
EXAMPLES = int(os.environ.get("ARCEXT_MODEL_EXAMPLES", "25"))
STEPS = int(os.environ.get("ARCEXT_MODEL_STEPS", "40"))
SHRINK = os.environ.get("ARCEXT_MODEL_SHRINK", "0") == "1"
#: a repair by the engine's self-check is a bug: it fails the run (ARCEXT_MODEL_STRICT=0 only reports it)
STRICT = os.environ.get("ARCEXT_MODEL_STRICT", "1") == "1"
SHRINK_SECONDS = int(os.environ.get("ARCEXT_MODEL_SHRINK_SECONDS", "60"))
TRANSITIONAL = ("Creating", "Updating", "Deleting")


def vkey(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


class Holder:
    """The live server of the whole test (a restart replaces it) and what the runs found."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.server = ArcextServer(data_dir, manual_clock=True, simulate=True).start()
        self.steps = 0
        self.examples = 0
        self.restarts = 0
        self.findings: list[str] = []

    def restart(self) -> None:
        self.server.stop()
        self.server = ArcextServer(self.data_dir, manual_clock=True, simulate=True).start()
        self.restarts += 1


HOLDER: Holder | None = None


class EngineModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        assert HOLDER is not None
        self.h = HOLDER
        self.h.server.reset()
        self.h.examples += 1
        self.s = self.h.server.session()
        self.published = ["1.0.0"]  # major 1; 2.0.0 may come too (never automatic)
        self.minor = 0
        self.seen: dict[str, str] = {}  # extension (machine name) -> highest version seen since created
        self.manual_ops: list[tuple[str, str]] = []  # (machine, Azure-AsyncOperation path)
        self.restarted = False

    # --- plumbing ---------------------------------------------------------------------------
    @property
    def arc(self) -> ArcextServer:
        return self.h.server

    def teardown(self) -> None:
        try:
            self._settle_and_check_end()
        finally:
            self.s.close()

    def _get_ext(self, m: str) -> dict[str, Any] | None:
        r = self.s.get(ext_url(self.arc, "ama", m), params={"api-version": API})
        if r.status_code == 404:
            return None
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def _rollouts(self) -> list[dict[str, Any]]:
        r = self.s.get(f"{self.arc.url}/arcext/v1/rollouts")
        assert r.status_code == 200, r.text
        value: list[dict[str, Any]] = r.json()["value"]
        return value

    def _pending(self, m: str) -> dict[str, Any] | None:
        r = self.s.get(f"{self.arc.url}/arcext/v1/subscriptions/{SUB}/resourceGroups/rg1/machines/{m}/pending")
        if r.status_code == 404:
            return None
        assert r.status_code == 200, r.text
        items = r.json()["extensions"]
        return items[0] if items else None

    def _events(self) -> list[dict[str, Any]]:
        now = self.s.get(f"{self.arc.url}/arcext/v1/clock").json()["now"]
        r = self.s.get(
            f"{self.arc.url}/subscriptions/{SUB}/providers/Microsoft.Insights/eventtypes/management/values",
            params={
                "api-version": "2015-04-01",
                "$filter": f"eventTimestamp ge '2020-01-01T00:00:00Z' and eventTimestamp le '{now}'",
            },
        )
        assert r.status_code == 200, r.text
        events: list[dict[str, Any]] = r.json()["value"]
        while r.json().get("nextLink"):  # every page
            r = self.s.get(r.json()["nextLink"])
            assert r.status_code == 200, r.text
            events += r.json()["value"]
        return events

    def _run(self) -> dict[str, Any]:
        assert self.arc.wait_for_operations(30)
        r = self.s.post(f"{self.arc.url}/arcext/v1/engine/run")
        assert r.status_code == 200, r.text
        summary: dict[str, Any] = r.json()
        assert self.arc.wait_for_operations(30)
        if summary.get("repairs"):  # any repair is an engine bug worth reporting: say which invariant
            repaired = sorted(
                {
                    f"{e['properties'].get('invariant')}: {e['properties'].get('repair')}"
                    for e in self._events()
                    if e["operationName"]["value"].endswith("/engineRepair/action")
                }
            )
            self.h.findings.append(f"engine/run repaired its own state {summary['repairs']} time(s): {repaired}")
            assert not STRICT, ("the engine repaired its own state", repaired)
        return summary

    # --- rules: the fleet ---------------------------------------------------------------------
    @initialize(names=st.lists(st.sampled_from(MACHINES), min_size=3, max_size=6, unique=True))
    def onboard(self, names: list[str]) -> None:
        self._create(names)

    def _create(self, names: list[str], version: str = "1.0.0") -> None:
        def one(m: str) -> None:
            with self.arc.session() as client:
                r = client.put(machine_url(self.arc, m), params={"api-version": API}, json={"location": "eastus"})
                assert r.status_code in (200, 409), r.text
                if client.get(ext_url(self.arc, "ama", m), params={"api-version": API}).status_code != 404:
                    return
                body = {
                    "location": "eastus",
                    "properties": {"publisher": PUB, "type": TYPE, "typeHandlerVersion": version},
                }
                r = client.put(ext_url(self.arc, "ama", m), params={"api-version": API}, json=body)
                assert r.status_code in (200, 202, 409), r.text
                if r.status_code in (200, 202):
                    self.seen.pop(m, None)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, names))

    @rule(
        create=st.lists(st.sampled_from(MACHINES), max_size=4, unique=True),
        delete=st.lists(st.sampled_from(MACHINES), max_size=2, unique=True),
        newest=st.booleans(),
    )
    def churn(self, create: list[str], delete: list[str], newest: bool) -> None:
        """Concurrent creates and deletes (the creates not waited for)."""
        version = max((v for v in self.published if v.startswith("1.")), key=vkey) if newest else "1.0.0"

        def remove(m: str) -> None:
            with self.arc.session() as client:
                r = client.delete(ext_url(self.arc, "ama", m), params={"api-version": API})
                assert r.status_code in (200, 202, 204, 404, 409), r.text
                if r.status_code in (200, 202, 204):
                    self.seen.pop(m, None)

        with ThreadPoolExecutor(2) as pool:
            a = pool.submit(self._create, [m for m in create if m not in delete], version)
            b = pool.submit(lambda: [remove(m) for m in delete])
            a.result()
            b.result()

    @rule(m=st.sampled_from(MACHINES), flag=st.booleans())
    def toggle_auto(self, m: str, flag: bool) -> None:
        r = self.s.patch(
            ext_url(self.arc, "ama", m),
            params={"api-version": API},
            json={"properties": {"enableAutomaticUpgrade": flag}},
        )
        assert r.status_code in (200, 202, 404, 409), r.text

    @rule(m=st.sampled_from(MACHINES), data=st.data())
    def manual_upgrade(self, m: str, data: st.DataObject) -> None:
        version = data.draw(st.sampled_from(self.published))
        r = self.s.post(
            f"{machine_url(self.arc, m)}/upgradeExtensions",
            params={"api-version": API},
            json={"extensionTargets": {HANDLER: {"targetVersion": version}}},
        )
        assert r.status_code in (202, 400, 404, 409), r.text
        if r.status_code == 202:
            url = r.headers["Azure-AsyncOperation"]
            self.manual_ops.append((m, url[url.index("/subscriptions/") :]))  # the port changes on a restart

    @rule(kind=st.sampled_from(["standard", "critical", "superseding", "major"]))
    def publish(self, kind: str) -> None:
        def put(version: str, critical: bool) -> None:
            r = self.s.put(
                f"{self.arc.url}/arcext/v1/catalog/{PUB}/{TYPE}/versions/{version}", json={"critical": critical}
            )
            assert r.status_code == 201, r.text
            self.published.append(version)

        if kind == "major":
            if "2.0.0" not in self.published:
                put("2.0.0", False)
            return
        self.minor += 1
        put(f"1.{self.minor}.0", kind == "critical")
        if kind == "superseding":  # a critical version right after a standard one
            self.minor += 1
            put(f"1.{self.minor}.0", True)

    @rule(action=st.sampled_from(["pause", "freeze", "resume"]), data=st.data())
    def rollout_action(self, action: str, data: st.DataObject) -> None:
        rollouts = self._rollouts()
        if not rollouts:
            return
        rollout = data.draw(st.sampled_from(rollouts))
        r = self.s.post(f"{self.arc.url}/arcext/v1/rollouts/{rollout['id']}/{action}")
        assert r.status_code in (200, 409), r.text

    @rule(seconds=st.sampled_from([60, HOUR, 6 * HOUR, DAY, 4 * DAY, 10 * DAY]))
    def advance(self, seconds: int) -> None:
        r = self.s.post(f"{self.arc.url}/arcext/v1/clock/advance", json={"seconds": seconds})
        assert r.status_code == 200, r.text

    @rule()
    def engine_run(self) -> None:
        self._run()
        self._check_idle()

    @rule(
        m=st.sampled_from(MACHINES),
        fault=st.sampled_from(["fail1", "fail3", "failRollback", "unreachable", "clear"]),
    )
    def host_fault(self, m: str, fault: str) -> None:
        body: dict[str, Any] = {
            "fail1": {"failUpgrade": 1},
            "fail3": {"failUpgrade": 3},
            "failRollback": {"failUpgrade": 1, "failRollback": True},
            "unreachable": {"unreachable": True},
            "clear": {},
        }[fault]
        r = self.s.put(f"{self.arc.url}/arcext/v1/simulated-hosts/{m}/faults", json=body)
        assert r.status_code in (200, 404), r.text

    @precondition(lambda self: not self.restarted)
    @rule()
    def restart(self) -> None:
        self.s.close()
        self.h.restart()
        self.restarted = True
        self.s = self.h.server.session()

    # --- invariants -----------------------------------------------------------------------------
    @invariant()
    def count_step(self) -> None:
        self.h.steps += 1

    @invariant()
    def versions_never_go_down(self) -> None:
        for m in MACHINES:
            record = self._get_ext(m)
            if record is None:
                self.seen.pop(m, None)
                continue
            version = record["properties"]["typeHandlerVersion"]
            before = self.seen.get(m)
            assert before is None or vkey(version) >= vkey(before), f"{m} went from {before} down to {version}"
            self.seen[m] = version

    @invariant()
    def counts_agree_with_the_records_and_the_log(self) -> None:
        events = self._events()
        ends = [e for e in events if e["status"]["value"] != "Started" and e["caller"] == AUTO]
        for rollout in self._rollouts():
            counts = rollout["counts"]
            total = sum(counts.values())
            assert total <= rollout["eligible"], rollout
            if rollout["state"] == "Completed":
                assert total == rollout["eligible"], rollout
            assert rollout["state"] != "Stalled", rollout
            mine = [
                e
                for e in ends
                if e["properties"].get("rolloutId") == rollout["id"]
                and e["properties"].get("wave") is not None
                and e["properties"].get("attempt") == 1
                and e["properties"].get("errorCode") != "InterruptedByRestart"
            ]
            succeeded = {e["resourceId"] for e in mine if e["status"]["value"] == "Succeeded"}
            failed = {e["resourceId"] for e in mine if e["status"]["value"] == "Failed"}
            assert counts["succeeded"] >= len(succeeded - failed), (rollout, succeeded)
            assert counts["failed"] <= len(failed) + len(succeeded), (rollout, failed)

    def _check_idle(self) -> None:
        """After engine/run returned (nothing due now is left undone)."""
        now = self.s.get(f"{self.arc.url}/arcext/v1/clock").json()["now"]
        for m in MACHINES:
            record = self._get_ext(m)
            if record is None:
                continue
            state = record["properties"]["provisioningState"]
            assert state not in TRANSITIONAL, f"{m} is {state} with the engine idle"
            item = self._pending(m)
            assert item is not None
            assert item["state"] != "Running", item
            assert item["dueAt"] is None or item["dueAt"] >= now, item
        # every Started event has its end
        events = self._events()
        ended = {e["operationId"] for e in events if e["status"]["value"] != "Started"}
        unended = [
            (e["resourceId"].split("/machines/")[1], e["eventTimestamp"], e["properties"])
            for e in events
            if e["status"]["value"] == "Started" and e["operationId"] not in ended
        ]
        assert not unended, unended
        # no operation InProgress without work behind it
        for m, url in self.manual_ops:
            answer = self.s.get(self.arc.url + url)
            if answer.status_code == 404:
                continue  # an ended operation past its retention, removed at a restart
            assert answer.status_code == 200, (url, answer.text)
            status = answer.json()["status"]
            if status == "InProgress":
                item = self._pending(m)
                assert item is not None and item["state"] in ("Queued", "Running"), (m, item)
        # no wave past due left unstarted behind completed ones, nothing Stalled
        for rollout in self._rollouts():
            assert rollout["state"] != "Stalled", rollout
            if rollout["state"] != "Active":
                continue
            waves = [w for p in rollout["phases"] for w in p["waves"]]
            first = next((w for w in waves if w["state"] != "Completed"), None)
            assert first is None or first["state"] == "Running" or first["notBefore"] > now, rollout

    # --- the end --------------------------------------------------------------------------------
    def _settle_and_check_end(self) -> None:
        for m in MACHINES:
            self.s.put(f"{self.arc.url}/arcext/v1/simulated-hosts/{m}/faults", json={})
        for rollout in self._rollouts():
            if rollout["state"] in ("Paused", "Frozen"):
                self.s.post(f"{self.arc.url}/arcext/v1/rollouts/{rollout['id']}/resume")
        self._run()
        for _ in range(12):  # 60 days: every window (8 weeks at most) has run out
            self.s.post(f"{self.arc.url}/arcext/v1/clock/advance", json={"seconds": 5 * DAY})
            self._run()
        self._check_idle()
        for m in MACHINES:
            record = self._get_ext(m)
            if record is None:
                continue
            props = record["properties"]
            major = props["typeHandlerVersion"].split(".")[0] + "."
            newest = max((v for v in self.published if v.startswith(major)), key=vkey)
            healthy = props["provisioningState"] == "Succeeded"
            if healthy and props.get("enableAutomaticUpgrade", True):
                assert props["typeHandlerVersion"] == newest, (m, props["typeHandlerVersion"], newest, self._pending(m))
        for rollout in self._rollouts():
            assert rollout["state"] == "Completed", rollout
        for m, url in self.manual_ops:
            answer = self.s.get(self.arc.url + url)
            assert answer.status_code == 404 or answer.json()["status"] != "InProgress", (m, answer.text)


@pytest.fixture(scope="module")
def holder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Holder]:
    global HOLDER
    HOLDER = Holder(tmp_path_factory.mktemp("model"))
    try:
        yield HOLDER
    finally:
        HOLDER.server.stop()
        HOLDER = None


def test_engine_model(holder: Holder, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    if SHRINK:  # hypothesis's own limit is five minutes; a live server makes every shrink step slow
        monkeypatch.setattr(hypothesis_engine, "MAX_SHRINKING_SECONDS", SHRINK_SECONDS)
    try:
        run_state_machine_as_test(
            EngineModel,
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                derandomize=True,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
                # no shrinking (nor the explain phase that follows it) unless asked for
                phases=[Phase.explicit, Phase.generate, *([Phase.shrink, Phase.explain] if SHRINK else [])],
            ),
        )
    finally:
        with capsys.disabled():
            print(
                f"\nengine model: {holder.examples} runs, {holder.steps} steps checked, {holder.restarts} restarts, "
                f"{time.monotonic() - started:.1f} s; findings: {sorted(set(holder.findings)) or 'none'}"
            )
    assert holder.steps > 0
