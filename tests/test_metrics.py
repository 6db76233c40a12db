"""GET /metrics: Prometheus text parsed with prometheus-client's own parser; counters move as a rollout runs."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from arcext.testing import ArcextServer
from conftest import API, SUB, ext_url, machine_url, wait_operation

PUB, TYPE = "Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def arc() -> Iterator[ArcextServer]:
    with ArcextServer(manual_clock=True, simulate=True) as server:
        yield server


def scrape(arc: ArcextServer, token: str) -> Samples:
    r = requests.get(f"{arc.url}/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lbl), v in samples.items() if n == name and want <= set(lbl))


def test_counters_move_as_a_rollout_runs(arc: ArcextServer) -> None:
    reader = arc.create_token("Reader", "/")
    before = scrape(arc, reader)
    assert all(name.startswith("arcext_") for name, _ in before)
    with arc.session() as s:
        for m in ("m1", "m2", "m3"):
            assert s.put(machine_url(arc, m), params={"api-version": API}, json={"location": "eastus"}).ok
            body = {"location": "eastus", "properties": {"publisher": PUB, "type": TYPE, "typeHandlerVersion": "1.0"}}
            done = wait_operation(s, s.put(ext_url(arc, "ama", m), params={"api-version": API}, json=body))
            assert done["status"] == "Succeeded", done
        arc.set_faults("m1", fail_upgrade=1)
        rollout_id = arc.publish_version(PUB, TYPE, "1.1.0")["rolloutId"]
        mid = scrape(arc, reader)
        assert value(mid, "arcext_rollouts", state="Active") == value(before, "arcext_rollouts", state="Active") + 1
        remaining = [
            v
            for (n, lbl), v in mid.items()
            if n == "arcext_rollout_remaining_extensions" and ("rollout", rollout_id) in lbl
        ]
        assert remaining == [3.0]
        arc.advance(days=60)
        arc.advance(hours=2)
    after = scrape(arc, reader)

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("arcext_upgrade_jobs_total", outcome="succeeded", driver="simulated") == 3
    assert moved("arcext_upgrade_jobs_total", outcome="rolled_back", driver="simulated") == 1
    assert moved("arcext_upgrade_jobs_started_total") == 4
    assert moved("arcext_host_operation_duration_seconds_count", driver="simulated", step="upgrade") == 4
    assert moved("arcext_host_operation_duration_seconds_count", driver="simulated", step="rollback") == 1
    assert moved("arcext_host_operation_errors_total", driver="simulated", step="upgrade") == 1
    assert moved("arcext_store_write_duration_seconds_count") >= 8
    assert value(after, "arcext_rollouts", state="Completed") >= 1
    assert not [lbl for (n, lbl), _ in after.items() if n == "arcext_rollout_remaining_extensions"]
    if arc.database_url is None:  # the embedded store's journal (PostgreSQL has its own WAL, not served)
        assert ("arcext_store_journal_bytes", frozenset()) in after
        assert ("arcext_store_checkpoints", frozenset()) in after
    # HTTP requests by route: the URL rule, never the raw path (bounded label values)
    routes = {dict(lbl)["route"] for (n, lbl), _ in after.items() if n == "arcext_http_requests_total"}
    machine_rule = next(r for r in routes if r.endswith("/machines/<machine_name>"))
    assert "{" not in machine_rule and "m1" not in machine_rule and SUB not in machine_rule
    assert all("m1" not in r and "m2" not in r for r in routes)
    assert total(after, "arcext_http_requests_total", route=machine_rule, method="PUT", status="200") >= 3
    assert total(after, "arcext_http_request_duration_seconds_count", route=machine_rule, method="PUT") >= 3
    assert value(after, "arcext_http_requests_total", method="POST", route="/arcext/v1/engine/run", status="200") >= 2


def test_a_scrape_token_reads_metrics_and_nothing_else(arc: ArcextServer) -> None:
    scraper = arc.create_token("Metrics", "/", name="prometheus")
    assert scrape(arc, scraper)
    headers = {"Authorization": f"Bearer {scraper}"}
    arm = f"{arc.url}/subscriptions/{SUB}/providers/Microsoft.HybridCompute/machines"
    assert requests.get(arm, params={"api-version": API}, headers=headers).status_code == 403
    assert requests.get(f"{arc.url}/arcext/v1/rollouts", headers=headers).status_code == 403
    assert requests.get(f"{arc.url}/metrics").status_code == 401
    assert requests.get(f"{arc.url}/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_each_server_has_its_own_registry(arc: ArcextServer) -> None:
    with ArcextServer(simulate=True) as other:
        fresh = scrape(other, other.token)
        assert value(fresh, "arcext_upgrade_jobs_started_total") == 0
        assert other.services.metrics.registry is not arc.services.metrics.registry


@pytest.mark.embedded_store("the dashboard's journal panel reads the embedded store's journal figures")
def test_the_grafana_dashboard_queries_metrics_the_server_serves(arc: ArcextServer) -> None:
    dashboard = json.loads((Path(__file__).parent.parent / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\barcext_[a-z_]+", e)}
    text = requests.get(f"{arc.url}/metrics", headers={"Authorization": f"Bearer {arc.token}"}).text
    served = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line.startswith("arcext_")}
    # a metric declared but without samples yet (a labelled histogram before its first host operation: which
    # tests ran before on this server decides) has only its TYPE line; its series names follow from the type
    suffixes = {"histogram": ("", "_bucket", "_sum", "_count"), "counter": ("", "_total"), "gauge": ("",)}
    for line in text.splitlines():
        if line.startswith("# TYPE arcext_"):
            _hash, _type, name, kind = line.split()
            served |= {name + suffix for suffix in suffixes.get(kind, ("",))}
    assert used and used <= served, used - served


def test_arcext_token_create_issues_a_scrape_token(arc: ArcextServer) -> None:
    from click.testing import CliRunner

    from arcext.cli import main

    done = CliRunner().invoke(
        main,
        ["token", "create", "--data-dir", str(arc.data_dir), "--role", "Metrics", "--scope", "/"]
        + (["--database", arc.database_url] if arc.database_url else []),
    )
    assert done.exit_code == 0, done.output
    token = done.output.strip().splitlines()[-1]
    assert scrape(arc, token)
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{arc.url}/arcext/v1/webhooks", headers=headers).status_code == 403


def test_a_hung_host_counts_as_timed_out() -> None:
    with ArcextServer(manual_clock=True, simulate=True, config={"ARCEXT_HOST_TIMEOUT": 0.2}) as server:
        with server.session() as s:
            assert s.put(machine_url(server, "h1"), params={"api-version": API}, json={"location": "eastus"}).ok
            body = {"location": "eastus", "properties": {"publisher": PUB, "type": TYPE, "typeHandlerVersion": "1.0"}}
            assert wait_operation(s, s.put(ext_url(server, "ama", "h1"), params={"api-version": API}, json=body))
        server.set_faults("h1", hang=True)
        server.publish_version(PUB, TYPE, "1.1.0")
        server.advance(days=60)
        after = scrape(server, server.token)
    assert value(after, "arcext_upgrade_jobs_total", outcome="timed_out", driver="simulated") == 1
    assert total(after, "arcext_host_operation_errors_total", code="HostOperationTimedOut", step="upgrade") == 1


def test_requests_counted_by_many_threads_are_all_in_the_next_scrape() -> None:
    """Request threads only queue their observations (Metrics.http_request); the scrape, or a thread that finds
    the queue full, counts them: none is lost or counted twice, whichever threads count at once."""
    from prometheus_client import generate_latest

    from arcext.metrics import HTTP_PENDING_LIMIT, Metrics

    metrics = Metrics()
    threads_n, per_thread = 8, HTTP_PENDING_LIMIT  # together far more than the queue holds before counting
    durations = [0.0005, 0.003, 0.02, 0.4]

    def observe(t: int) -> None:
        for n in range(per_thread):
            metrics.http_request("GET", f"/route/{t % 2}", 200 if n % 5 else 404, durations[n % 4])

    workers = [threading.Thread(target=observe, args=(t,)) for t in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for text in (metrics.render().decode(), generate_latest(metrics.registry).decode()):  # both count the queue
        samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert total(samples, "arcext_http_requests_total") == threads_n * per_thread
        assert total(samples, "arcext_http_requests_total", status="404") == threads_n * len(range(0, per_thread, 5))
        assert total(samples, "arcext_http_request_duration_seconds_count", route="/route/1") == 4 * per_thread
        expected_sum = threads_n * per_thread / 4 * sum(durations)
        assert total(samples, "arcext_http_request_duration_seconds_sum") == pytest.approx(expected_sum)
        assert (
            value(samples, "arcext_http_request_duration_seconds_bucket", method="GET", route="/route/0", le="0.001")
            == 4 * per_thread / 4
        )
