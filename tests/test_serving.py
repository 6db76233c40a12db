"""`arcext serve` on its production HTTP server (gunicorn, serving_gunicorn.py), in real subprocesses on 127.0.0.1:
limits and timeouts, graceful shutdown on SIGTERM/SIGINT, TLS >= 1.2, and ARM-shaped errors for the requests the
server rejects itself."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from arcext.serving_gunicorn import ServeError, ServeOptions

pytestmark = pytest.mark.slow

API = "2024-07-10"
SUB = "00000000-0000-0000-0000-0000000000e1"
LISTENING = re.compile(r"arcext listening on (https?://\S+)")
TOKEN_WRITTEN = re.compile(r"Owner token written to (\S+)")


def machine_path(name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/{name}?api-version={API}"


class Serve:
    """`arcext serve --port 0 --data-dir D [options]`; output goes to files (never a full pipe)."""

    def __init__(self, data_dir: Path, log_dir: Path, *options: str, name: str = "serve") -> None:
        self.stdout_path = log_dir / f"{name}.out"
        self.stderr_path = log_dir / f"{name}.err"
        command = [sys.executable, "-m", "arcext.cli", "serve", "--port", "0", "--data-dir", str(data_dir), *options]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARCEXT_")} | {"PYTHONUNBUFFERED": "1"}
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        deadline = time.monotonic() + 30
        while not LISTENING.search(self.stdout_path.read_text()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"arcext serve did not start: {self.output()}")
            time.sleep(0.05)
        text = self.stdout_path.read_text()
        found = LISTENING.search(text)
        assert found
        self.url = found.group(1)
        self.port = int(urlsplit(self.url).port or 0)
        token = TOKEN_WRITTEN.search(text)
        self.token = Path(token.group(1)).read_text().strip() if token else ""

    def output(self) -> str:
        return self.stdout_path.read_text() + "\n" + self.stderr_path.read_text()[-4000:]

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    server = Serve(tmp_path / "d", tmp_path, "--graceful-timeout", "10")
    yield server
    server.kill()


def raw(port: int, request: bytes, *, tls: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    """Send bytes, read until the server closes; the status, headers and body of its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
        with tls.wrap_socket(plain, server_hostname="localhost") if tls else plain as sock:
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def assert_arm(status: int, headers: dict[str, str], body: bytes, expected: int, code: str) -> None:
    assert status == expected, (status, body)
    assert headers["content-type"].startswith("application/json"), headers
    assert headers["connection"] == "close" and headers["x-ms-request-id"]
    error = json.loads(body)["error"]
    assert error["code"] == code and len(error["message"]) > 20, error


# --- errors the server answers itself ---------------------------------------------------------------------------
def test_requests_the_server_rejects_get_arm_shaped_errors(serve: Serve) -> None:
    long_line = b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert_arm(*raw(serve.port, long_line), 414, "RequestUriTooLong")
    url = f"/subscriptions/{SUB}/providers/Microsoft.HybridCompute/machines?$skiptoken={'A' * 9000}"
    assert_arm(*raw(serve.port, f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode()), 414, "RequestUriTooLong")
    many = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n"
    assert_arm(*raw(serve.port, many), 431, "RequestHeaderFieldsTooLarge")
    long_field = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n"
    assert_arm(*raw(serve.port, long_field), 431, "RequestHeaderFieldsTooLarge")
    assert_arm(*raw(serve.port, b"GARBAGE\r\n\r\n"), 400, "BadRequest")
    assert_arm(*raw(serve.port, b"GET / HTTP/7.0\r\nHost: x\r\n\r\n"), 400, "BadRequest")
    # the server answered every one of them and still serves
    with requests.get(f"{serve.url}{machine_path('m1')}", headers={"Authorization": f"Bearer {serve.token}"}) as r:
        assert r.status_code == 404 and r.json()["error"]["code"] == "ResourceNotFound"


def test_bodies_too_large_or_malformed_get_arm_errors(serve: Serve) -> None:
    auth = {"Authorization": f"Bearer {serve.token}", "Content-Type": "application/json"}
    big = b'{"location": "eastus", "tags": {"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}}'
    r = requests.put(f"{serve.url}{machine_path('m1')}", data=big, headers=auth, timeout=10)
    assert r.status_code == 413 and r.json()["error"]["code"] == "RequestEntityTooLarge", r.text

    def chunks() -> Iterator[bytes]:
        yield b'{"location": "eastus", "tags": {"pad": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}}'

    r = requests.put(f"{serve.url}{machine_path('m1')}", data=chunks(), headers=auth, timeout=10)
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.status_code == 413 and r.json()["error"]["code"] == "RequestEntityTooLarge", r.text
    status, headers, body = raw(
        serve.port,
        f"PUT {machine_path('m2')} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {serve.token}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        "zz\r\n{}\r\n0\r\n\r\n".encode(),
    )
    assert status == 400 and headers["content-type"].startswith("application/json"), body
    assert json.loads(body)["error"]["code"] in ("BadRequest", "InvalidRequestContent")
    r = requests.put(f"{serve.url}{machine_path('m1')}", json={"location": "eastus"}, headers=auth, timeout=10)
    assert r.status_code in (200, 201), r.text


# --- limits and timeouts ----------------------------------------------------------------------------------------
def read_response(sock: socket.socket) -> bytes:
    """One whole response (headers and a Content-Length body) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return head


def _request_on(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /arcext/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    return read_response(sock)


def test_connections_beyond_the_limit_wait_and_idle_ones_are_closed(tmp_path: Path) -> None:
    # one thread, two connections: room for one idle keep-alive connection and one request being read
    server = Serve(tmp_path / "d", tmp_path, "--threads", "1", "--max-connections", "2", "--keep-alive", "2")
    sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(3)]
    idle, reading, waiting = sockets
    try:
        assert _request_on(idle).startswith(b"HTTP/1.1 200 ")
        answered = time.monotonic()
        reading.sendall(b"GET /arcext/v1/health HTTP/1.1\r\n")  # a request the server is still reading
        time.sleep(0.3)
        waiting.settimeout(0.8)
        waiting.sendall(b"GET /arcext/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(TimeoutError):
            waiting.recv(65536)  # two connections are open: the third waits in the backlog
        reading.sendall(b"Host: x\r\n\r\n")
        assert read_response(reading).startswith(b"HTTP/1.1 200 ")
        waiting.settimeout(5)
        assert read_response(waiting).startswith(b"HTTP/1.1 200 "), "served once a connection closed"
        # the idle keep-alive connection is closed after --keep-alive seconds
        idle.settimeout(6)
        assert idle.recv(65536) == b""
        assert 1.5 < time.monotonic() - answered < 4.5
    finally:
        for sock in sockets:
            sock.close()
        server.kill()


def _stall_and_be_cut_off(server: Serve, slow: socket.socket, other: socket.socket) -> None:
    """``slow`` sends half a request and never the rest, holding the server's only thread; ``other`` is served once
    the read timeout (2 s) cut ``slow`` off."""
    slow.sendall(b"GET /arcext/v1/health HT")
    started = time.monotonic()
    time.sleep(0.3)
    other.sendall(b"GET /arcext/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(other).startswith(b"HTTP/1.1 200 "), "served once the slow client was cut off"
    assert slow.recv(65536) == b""
    assert 1.5 < time.monotonic() - started < 6
    assert "Traceback" not in server.output()


def test_a_kept_alive_client_too_slow_to_send_its_next_request_is_cut_off(tmp_path: Path) -> None:
    """The read timeout also holds on a kept-alive connection's later requests (the worker sets it again for each,
    after gunicorn made the socket blocking)."""
    server = Serve(tmp_path / "d", tmp_path, "--threads", "1", "--timeout", "2")
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    other = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        for _ in range(2):
            assert _request_on(slow).startswith(b"HTTP/1.1 200 ")
        _stall_and_be_cut_off(server, slow, other)  # its third request
    finally:
        slow.close()
        other.close()
        server.kill()


def test_a_client_too_slow_to_send_its_request_is_cut_off(tmp_path: Path) -> None:
    server = Serve(tmp_path / "d", tmp_path, "--threads", "1", "--timeout", "2")
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    other = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        _stall_and_be_cut_off(server, slow, other)
    finally:
        slow.close()
        other.close()
        server.kill()


def test_several_workers_need_a_shared_store(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "arcext.cli", "serve", "--data-dir", str(tmp_path / "d"), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "embedded store" in done.stderr and "database" in done.stderr


def test_serve_options_are_checked() -> None:
    ServeOptions().check()
    ServeOptions(workers=4, shared_store=True).check()
    for bad in (
        ServeOptions(workers=2),
        ServeOptions(threads=8, max_connections=8),
        ServeOptions(limit_request_line=9000),
        ServeOptions(tls_cert=Path("c.pem")),
    ):
        with pytest.raises(ServeError):
            bad.check()


# --- graceful shutdown ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_request_in_flight_completes_after_the_stop_signal_and_new_connections_are_refused(
    tmp_path: Path, signum: int
) -> None:
    server = Serve(tmp_path / "d", tmp_path, "--graceful-timeout", "15")
    try:
        body = json.dumps({"location": "eastus", "tags": {"in": "flight"}}).encode()
        head = (
            f"PUT {machine_path('inflight')} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        slow.sendall(head + body[:10])  # the server is reading this request's body
        time.sleep(0.5)
        server.signal(signum)
        time.sleep(1.0)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
        assert server.proc.poll() is None, "still finishing the request in flight"
        slow.sendall(body[10:])
        answer = b""
        while chunk := slow.recv(65536):
            answer += chunk
        slow.close()
        assert answer.startswith(b"HTTP/1.1 201 ") or answer.startswith(b"HTTP/1.1 200 "), answer[:300]
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["tags"] == {"in": "flight"}
        started = time.monotonic()
        assert server.wait(timeout=15) == 0, server.output()
        assert time.monotonic() - started < 8, "exits once the request finished, not at the end of the grace period"
        assert "Traceback" not in server.output()
    finally:
        server.kill()
    # the services closed cleanly: the acknowledged write is there after a restart
    again = Serve(tmp_path / "d", tmp_path, name="again")
    try:
        token = (tmp_path / "d" / "owner-token").read_text().strip()
        r = requests.get(f"{again.url}{machine_path('inflight')}", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["tags"] == {"in": "flight"}, r.text
    finally:
        again.kill()


def test_the_grace_period_is_bounded(tmp_path: Path) -> None:
    server = Serve(tmp_path / "d", tmp_path, "--graceful-timeout", "1")
    try:
        stuck = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        stuck.sendall(
            f"PUT {machine_path('never')} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode()
        )
        time.sleep(0.5)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        server.wait(timeout=15)
        assert time.monotonic() - started < 6, "the server stops after about --graceful-timeout seconds"
        stuck.close()
    finally:
        server.kill()


# --- TLS --------------------------------------------------------------------------------------------------------
def test_tls_serves_1_2_and_up_with_arm_shaped_protocol_errors(tmp_path: Path) -> None:
    server = Serve(tmp_path / "d", tmp_path, "--tls-self-signed")
    try:
        assert server.url.startswith("https://")
        cert = tmp_path / "d" / "tls" / "cert.pem"
        with requests.Session() as s:
            s.trust_env = False
            r = s.get(
                f"{server.url}{machine_path('m1')}",
                headers={"Authorization": f"Bearer {server.token}"},
                verify=str(cert),
            )
        assert r.status_code == 404 and r.json()["error"]["code"] == "ResourceNotFound"
        modern = ssl.create_default_context(cafile=str(cert))
        modern.minimum_version = ssl.TLSVersion.TLSv1_2
        modern.maximum_version = ssl.TLSVersion.TLSv1_2
        assert_arm(*raw(server.port, b"GARBAGE\r\n\r\n", tls=modern), 400, "BadRequest")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # asking for TLS 1.1 is the point here
            old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            old.check_hostname = False
            old.verify_mode = ssl.CERT_NONE
            try:
                old.minimum_version = ssl.TLSVersion.TLSv1_1
                old.maximum_version = ssl.TLSVersion.TLSv1_1
                old.set_ciphers("ALL:@SECLEVEL=0")
            except (ValueError, ssl.SSLError):
                pytest.skip("this OpenSSL cannot even offer TLS 1.1")
            with pytest.raises(ssl.SSLError, match="(?i)alert protocol version"):  # the server refuses it
                raw(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", tls=old)
        with pytest.raises((requests.exceptions.ConnectionError, ConnectionError)):
            requests.get(server.url.replace("https://", "http://") + "/healthz", timeout=5)  # plain http
    finally:
        server.kill()


# --- several workers (a store shared between processes) ---------------------------------------------------------
WORKERS_SCRIPT = """
import os, sys
from pathlib import Path
from arcext.serving_gunicorn import ServeOptions, WorkerApp, serve

marks = Path(sys.argv[1])

def factory(context):
    pid = str(os.getpid()).encode()
    (marks / f"built-{os.getpid()}").write_text(context.url)
    if context.first:
        print(f"workers listening on {context.url}", flush=True)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(pid)))])
        return [pid]

    return WorkerApp(app, lambda: (marks / f"closed-{os.getpid()}").write_text("closed"))

serve(factory, ServeOptions(port=0, workers=2, threads=2, shared_store=True, graceful_timeout=5))
"""


def test_several_workers_each_build_and_close_their_own_app(tmp_path: Path) -> None:
    script = tmp_path / "workers.py"
    script.write_text(WORKERS_SCRIPT)
    marks = tmp_path / "marks"
    marks.mkdir()
    out_path = tmp_path / "workers.out"
    with open(out_path, "wb") as out, open(tmp_path / "workers.err", "wb") as err:
        proc = subprocess.Popen([sys.executable, str(script), str(marks)], stdout=out, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while not (found := re.search(r"workers listening on (\S+)", out_path.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "workers.err").read_text()
            time.sleep(0.05)
        url = found.group(1)
        while len(list(marks.glob("built-*"))) < 2:
            assert time.monotonic() < deadline, "both workers build their app"
            time.sleep(0.05)
        pids = set()
        for _ in range(200):  # a new connection each time: the kernel hands them to either worker
            pids.add(requests.get(url, headers={"Connection": "close"}, timeout=5).text)
            if len(pids) == 2:
                break
        built = {p.name.removeprefix("built-") for p in marks.glob("built-*")}
        assert pids <= built and proc.pid not in {int(p) for p in built}, "apps are built in the workers only"
        assert len(pids) == 2, "both workers answer requests"
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert {p.name.removeprefix("closed-") for p in marks.glob("closed-*")} == built, "each worker closed its app"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
