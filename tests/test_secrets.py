"""protectedSettings are encrypted at rest and never returned by any endpoint, nor logged."""

from __future__ import annotations

import base64
import errno
import io
import json
import logging
import multiprocessing
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from arcext.crypto import SecretBox
from arcext.logging_setup import JsonFormatter, TextFormatter
from arcext.testing import ArcextServer
from conftest import API, SUB, ext_url, machine_url, put_extension, put_machine, rg_url, wait_operation
from webhook_receiver import Receiver

SECRET = "s3cr3t-Value-7f1d"


def _walk(value: object) -> list[str]:
    """Every key anywhere in a JSON document."""
    if isinstance(value, dict):
        return [k for k in value] + [k2 for v in value.values() for k2 in _walk(v)]
    if isinstance(value, list):
        return [k for v in value for k in _walk(v)]
    return []


def _check(r: requests.Response) -> None:
    assert SECRET not in r.text
    assert "protectedSettings" not in r.text
    for value in r.headers.values():
        assert SECRET not in value
    if r.content and r.headers.get("Content-Type", "").startswith("application/json"):
        assert "protectedSettings" not in _walk(r.json())


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Every log record as the server writes it, in both --log-format forms (JSON lines and text)."""
    out = io.StringIO()
    handlers = [logging.StreamHandler(out), logging.StreamHandler(out)]
    handlers[0].setFormatter(JsonFormatter())
    handlers[1].setFormatter(TextFormatter())
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    for h in handlers:
        root.addHandler(h)
    try:
        yield out
    finally:
        for h in handlers:
            root.removeHandler(h)
        root.setLevel(level)


def test_protected_settings_never_returned(
    arcext_server: ArcextServer,
    arcext_session: requests.Session,
    caplog: pytest.LogCaptureFixture,
    log_output: io.StringIO,
) -> None:
    caplog.set_level(logging.DEBUG)
    s, server = arcext_session, arcext_server
    put_machine(s, server)
    seen: list[requests.Response] = []
    props = {
        "publisher": "Microsoft.Compute",
        "type": "CustomScriptExtension",
        "typeHandlerVersion": "1.10",
        "settings": {"commandToExecute": "hostname"},
        "protectedSettings": {"password": SECRET},
    }
    created = put_extension(s, server, properties=props, wait=False)
    seen.append(created)
    seen.append(s.get(created.headers["Azure-AsyncOperation"]))
    wait_operation(s, created)
    seen.append(s.get(created.headers["Azure-AsyncOperation"]))
    seen.append(s.get(created.headers["Location"]))
    patched = s.patch(
        ext_url(server),
        params={"api-version": API},
        json={"properties": {"protectedSettings": {"password": SECRET + "2"}, "settings": {"a": 1}}},
    )
    seen.append(patched)
    wait_operation(s, patched)
    seen += [s.get(patched.headers["Azure-AsyncOperation"]), s.get(patched.headers["Location"])]
    v = {"api-version": API}
    seen += [
        s.get(ext_url(server), params=v),
        s.get(f"{machine_url(server)}/extensions", params=v),
        s.get(f"{machine_url(server)}/extensions", params={**v, "$expand": "instanceView"}),
        s.get(machine_url(server), params=v),
        s.get(machine_url(server), params={**v, "$expand": "instanceView"}),
        s.get(f"{rg_url(server)}/machines", params=v),
        s.get(f"{server.url}/subscriptions/{SUB}/providers/Microsoft.HybridCompute/machines", params=v),
    ]
    # a replacing PUT without protectedSettings keeps them (never echoed)
    replaced = s.put(
        ext_url(server),
        params=v,
        json={"location": "eastus", "properties": {k: v for k, v in props.items() if k != "protectedSettings"}},
    )
    seen.append(replaced)
    wait_operation(s, replaced)
    deleted = s.delete(ext_url(server), params=v)
    seen.append(deleted)
    wait_operation(s, deleted)
    seen += [s.get(deleted.headers["Azure-AsyncOperation"]), s.get(deleted.headers["Location"])]
    for r in seen:
        _check(r)
    server.services.request_log.flush()  # the request lines are handed to logging by the log's own thread
    assert SECRET not in caplog.text
    logged = log_output.getvalue()
    assert '"event":"http.request"' in logged, "the structured request log was captured"
    assert SECRET not in logged and "protectedSettings" not in logged


def test_upgrade_steps_and_webhooks_never_log_or_send_secrets(log_output: io.StringIO) -> None:
    """A rollout over an extension with protectedSettings, watched by a signed webhook: neither the protected
    value nor the webhook's secret appears in the logs (JSON and text), the deliveries or the webhook's views."""
    hook_secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    receiver = Receiver(hook_secret)
    try:
        with ArcextServer(manual_clock=True, simulate=True, config={"ARCEXT_WEBHOOK_RETRY_BASE": 0.05}) as arc:
            with arc.session() as s:
                hook = s.put(f"{arc.url}/arcext/v1/webhooks/h", json={"url": receiver.url, "secret": hook_secret})
                assert hook.status_code == 201
                put_machine(s, arc)
                props = {
                    "publisher": "Microsoft.Azure.Monitor",
                    "type": "AzureMonitorWindowsAgent",
                    "typeHandlerVersion": "1.0",
                    "protectedSettings": {"password": SECRET},
                }
                put_extension(s, arc, properties=props)
                arc.publish_version("Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent", "1.1")
                arc.set_faults("m1", fail_upgrade=1)
                arc.advance(days=60)
                arc.advance(hours=2)
                assert arc.services.webhooks.wait_delivered(10)
                views = [
                    hook,
                    s.get(f"{arc.url}/arcext/v1/webhooks/h"),
                    s.get(f"{arc.url}/arcext/v1/webhooks"),
                    s.get(f"{arc.url}/arcext/v1/webhooks/h/deliveries"),
                    s.get(f"{arc.url}/metrics"),
                ]
        logged = log_output.getvalue()
        assert '"event":"upgrade.step"' in logged and '"event":"host.operation"' in logged
        delivered = json.dumps(receiver.events())
        assert "upgrade.rolledBack" in delivered
        for secret in (SECRET, hook_secret, hook_secret.removeprefix("whsec_")):
            assert secret not in logged
            assert secret not in delivered
            for r in views:
                assert secret not in r.text
    finally:
        receiver.close()


def test_protected_settings_encrypted_at_rest(arcext_server: ArcextServer, arcext_session: requests.Session) -> None:
    put_machine(arcext_session, arcext_server)
    put_extension(
        arcext_session,
        arcext_server,
        properties={"publisher": "P", "type": "T", "protectedSettings": {"password": SECRET}},
    )
    data = Path(arcext_server.data_dir)
    for path in data.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    key = data / "secret.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    # the host-driver path can still read them back
    key_obj = arcext_server.services.resources
    from arcext.ids import MachineKey

    assert key_obj.protected_settings(MachineKey(SUB, "rg1", "m1"), "cse") == {"password": SECRET}
    # and a replacing PUT that omits protectedSettings keeps them; {} clears them
    r = arcext_session.put(
        ext_url(arcext_server),
        params={"api-version": API},
        json={"location": "eastus", "properties": {"publisher": "P", "type": "T"}},
    )
    wait_operation(arcext_session, r)
    assert key_obj.protected_settings(MachineKey(SUB, "rg1", "m1"), "cse") == {"password": SECRET}
    r = arcext_session.patch(
        ext_url(arcext_server), params={"api-version": API}, json={"properties": {"protectedSettings": {}}}
    )
    wait_operation(arcext_session, r)
    assert key_obj.protected_settings(MachineKey(SUB, "rg1", "m1"), "cse") is None
    assert json.loads((data / "tokens.json").read_text())  # sanity: the data dir is the live one


def _open_box(data_dir: str, barrier: Any, answers: Any) -> None:
    barrier.wait()
    try:
        box = SecretBox.from_data_dir(Path(data_dir))
        answers.put(box.open(box.seal({"k": "v"}))["k"] + " " + (Path(data_dir) / "secret.key").read_text().strip())
    except Exception as exc:
        answers.put(f"failed: {exc!r}")


@pytest.mark.parametrize("hard_links", [True, False], ids=["hard-links", "no-hard-links"])
def test_workers_starting_at_once_on_a_new_data_directory_share_one_whole_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hard_links: bool
) -> None:
    """`arcext serve --workers N` on a new data directory: every worker makes or reads the key at the same moment.
    None may read a key half written (its boot would fail, and gunicorn's master with it), and all share one; also
    on a file system without hard links (some network shares), where the key is made in place."""
    if not hard_links:

        def no_link(source: object, target: object) -> None:
            raise PermissionError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_link)  # (the forked processes inherit it)
    leftover = tmp_path / "d0" / ".secret.key.4242.deadbeef"  # a process killed between writing and removing it
    leftover.parent.mkdir()
    leftover.write_bytes(b"a copy of a key")
    os.utime(leftover, (time.time() - 3600,) * 2)
    context = multiprocessing.get_context("fork")
    for attempt in range(10):
        data_dir = tmp_path / f"d{attempt}"
        barrier, answers = context.Barrier(6, timeout=30), context.Queue()
        processes = [context.Process(target=_open_box, args=(str(data_dir), barrier, answers)) for _ in range(6)]
        for process in processes:
            process.start()
        got = [answers.get(timeout=30) for _ in processes]
        for process in processes:
            process.join(30)
        key = (data_dir / "secret.key").read_text().strip()
        assert got == [f"v {key}"] * 6, got
        assert sorted(p.name for p in data_dir.iterdir()) == ["secret.key"]  # no process's own file left behind
        assert stat.S_IMODE((data_dir / "secret.key").stat().st_mode) == 0o600


def test_a_key_file_left_incomplete_says_so_and_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Made in place (no hard links) and cut short by a crash: every start says which file and what to do, not a
    bare Fernet error."""
    monkeypatch.setattr("arcext.crypto.KEY_WAIT_SECONDS", 0.1)
    (tmp_path / "secret.key").write_bytes(b"cut-short")
    with pytest.raises(RuntimeError, match=r"secret.key is incomplete \(9 bytes; a key is 44\).*delete it"):
        SecretBox.from_data_dir(tmp_path)
