"""A real OpenSSH server on loopback for the ssh driver's tests, plus sh-handler extension packages.

``Sshd`` starts Debian's ``/usr/sbin/sshd -D`` with its own config, host key and port on 127.0.0.1,
for two throwaway users (created with useradd when missing): ``arcext-ssh`` (ed25519 key and a
password, a NOPASSWD sudo rule for ``/bin/sh -c *`` in a sudoers.d file this module writes and
removes) and ``arcext-nosudo`` (RSA key, no sudo rule). Needs root (sshd changes user, useradd);
``skip_reason()`` says why the tests cannot run when they cannot.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

SSHD = "/usr/sbin/sshd"
# Under pytest-xdist each worker has users of its own: one worker's teardown (which clears the password) must
# not pull the ground from under another's test.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
SUDO_USER = f"arcext-ssh{'-' + _WORKER if _WORKER else ''}"
PLAIN_USER = f"arcext-nosudo{'-' + _WORKER if _WORKER else ''}"


def skip_reason() -> str | None:
    if not Path(SSHD).exists():
        return "OpenSSH server not installed (scripts/test installs Debian's openssh-server)"
    if os.geteuid() != 0:
        return "the sshd tests need root (sshd switches users; the fixture creates throwaway users)"
    if not shutil.which("sudo") or not shutil.which("useradd"):
        return "sudo or useradd missing (scripts/test installs Debian's sudo)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def openssh_private(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()


def openssh_public(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def fingerprint_of(public_line: str) -> str:
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


#: One password for the sudo user per process, and the count of this process's running servers: a second
#: Sshd (the bench test starts its own) must neither change the password a running one hands out nor clear
#: it when it stops while another still serves.
PASSWORD = secrets.token_urlsafe(16)
_RUNNING: set[int] = set()


def ensure_user(name: str, password: str) -> None:
    if subprocess.run(["id", name], capture_output=True).returncode != 0:
        made = subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], capture_output=True)
        if made.returncode not in (0, 9):  # 9: another test process created it meanwhile
            raise RuntimeError(f"useradd {name}: {made.stderr.decode(errors='replace')}")
    subprocess.run(["usermod", "--home", "/", name], check=True, capture_output=True)  # no home directory needed
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True, capture_output=True)


class Sshd:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        host_key = ed25519.Ed25519PrivateKey.generate()
        self.host_key_path = self.dir / "ssh_host_ed25519_key"
        self.host_key_path.write_text(openssh_private(host_key))
        self.host_key_path.chmod(0o600)
        self.host_fingerprint = fingerprint_of(openssh_public(host_key))
        self.user_key = ed25519.Ed25519PrivateKey.generate()
        self.user_key_pem = openssh_private(self.user_key)
        self.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rsa_key_pem = self.rsa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ).decode()
        self.password = PASSWORD
        self.sudoers = Path(f"/etc/sudoers.d/arcext-test-{self.port}")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Sshd:
        ensure_user(SUDO_USER, self.password)
        ensure_user(PLAIN_USER, secrets.token_urlsafe(16))
        keys = self.dir / "authorized_keys"
        keys.mkdir(exist_ok=True)
        (keys / SUDO_USER).write_text(openssh_public(self.user_key) + "\n")
        (keys / PLAIN_USER).write_text(openssh_public(self.rsa_key) + "\n")
        for f in keys.iterdir():
            f.chmod(0o644)
        keys.chmod(0o755)
        for parent in [self.dir, *self.dir.parents]:  # sshd reads the keys as the user
            if parent == Path("/") or parent == Path("/tmp"):
                break
            parent.chmod(parent.stat().st_mode | 0o711)
        rule = f"{SUDO_USER} ALL=(root) NOPASSWD: /bin/sh -c *\n"
        tmp = self.dir / "sudoers"
        tmp.write_text(rule)
        subprocess.run(["visudo", "-cqf", str(tmp)], check=True)
        tmp.chmod(0o440)
        shutil.copy(tmp, self.sudoers)
        config = self.dir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key_path}",
                    f"PidFile {self.dir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {keys}/%u",
                    "StrictModes no",
                    "UsePAM no",
                    "PasswordAuthentication yes",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin no",
                    f"AllowUsers {SUDO_USER} {PLAIN_USER}",
                    "MaxSessions 200",
                    "MaxStartups 200:30:400",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        with open(self.dir / "sshd.log", "wb") as log:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config), "-p", str(self.port), "-h", str(self.host_key_path)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.dir / 'sshd.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        _RUNNING.add(self.port)
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start")

    def stop(self) -> None:
        self.sudoers.unlink(missing_ok=True)
        _RUNNING.discard(self.port)
        if not _RUNNING:  # the last one of this process: no password left behind for the system's own sshd
            for user in (SUDO_USER, PLAIN_USER):
                subprocess.run(["usermod", "--password", "*", user], capture_output=True)
        if self.proc is not None:
            self.kill_sessions()
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def sessions(self) -> list[int]:
        """The per-connection sshd processes of this server (its descendants named sshd)."""
        assert self.proc is not None
        parents: dict[int, int] = {}
        names: dict[int, str] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            name = text[text.index("(") + 1 : text.rindex(")")]
            parents[int(entry.name)] = int(text[text.rindex(")") + 2 :].split()[1])
            names[int(entry.name)] = name
        found: list[int] = []
        for pid in parents:
            p = pid
            while p in parents and p != self.proc.pid and p > 1:
                p = parents[p]
            if p == self.proc.pid and pid != self.proc.pid and names[pid].startswith("sshd"):
                found.append(pid)
        return found

    def kill_sessions(self) -> int:
        """Drop every open connection the hard way (SIGKILL the per-connection sshd processes)."""
        pids = self.sessions()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def connection(self, root: Path, **overrides: Any) -> dict[str, Any]:
        """A hostConnection body for the sudo user with its key and the pinned host key."""
        body: dict[str, Any] = {
            "driver": "ssh",
            "address": "127.0.0.1",
            "port": self.port,
            "username": SUDO_USER,
            "privateKeyPem": self.user_key_pem,
            "hostKeyFingerprint": self.host_fingerprint,
            "handlerRoot": str(root),
            "operationTimeoutSeconds": 5,
            "connectionTimeoutSeconds": 5,
            "statusDeadlineSeconds": 2,
            "handlerTimeoutSeconds": {"install": 10, "update": 10, "enable": 10, "disable": 10, "uninstall": 10},
        }
        body.update(overrides)
        return {k: v for k, v in body.items() if v is not None}


# --- extension packages with sh handlers ---------------------------------------------------------
HANDLER_SH = r"""#!/bin/sh
# test handler: behaviour.env (next to this file) sets what each command does
cmd=$1
here=$(cd "$(dirname "$0")" && pwd)
. "$here/behaviour.env"
root=${AZURE_GUEST_AGENT_EXTENSION_PATH%/var/lib/waagent/*}
ver=$AZURE_GUEST_AGENT_EXTENSION_VERSION
printf '%s %s\n' "$ver" "$cmd" >>"$root/commands.log"
env | grep -E '^(AZURE_GUEST_AGENT_|ConfigSequenceNumber=|VERSION=)' | sort >"$here/env.$cmd"
eval "fail=\${FAIL_$cmd:-0}"
eval "hang=\${HANG_$cmd:-0}"
eval "slow=\${SLOW_$cmd:-0}"
if [ "$slow" != 0 ] && [ ! -f "$root/slow-$cmd-$ver.done" ]; then
    : >"$root/$cmd-$ver.started"
    sleep "$slow"
    : >"$root/slow-$cmd-$ver.done"
fi
[ "$hang" = 1 ] && sleep 600
[ "$cmd" = enable ] && [ -f "$root/break-$ver" ] && fail=9
if [ "$fail" != 0 ]; then
    [ "${QUIET:-0}" = 1 ] || echo "handler $cmd failed on purpose" >&2
    exit "$fail"
fi
if [ "$cmd" = enable ]; then
    n=${ConfigSequenceNumber:-0}
    if [ ! -f "$here/config/$n.settings" ]; then
        echo "no settings file $n" >&2
        exit 52
    fi
    status=${STATUS:-success}
    msg='"formattedMessage":{"lang":"en-US","message":"ok"}'
    body='"name":"test","operation":"Enable","code":0,'"$msg"
    printf '[{"version":"1.0","timestampUTC":"2026-01-01T00:00:00Z","status":{%s,"status":"%s"}}]' \
        "$body" "$status" >"$here/status/$n.status"
    beat='[{"version":1.0,"heartbeat":{"status":"ready","code":0,'"$msg"'}}]'
    case "${HEARTBEAT:-none}" in
    fresh) printf '%s' "$beat" >"$here/heartbeat.log" ;;
    stale) printf '%s' "$beat" >"$here/heartbeat.log" && touch -d '2 hours ago' "$here/heartbeat.log" ;;
    esac
fi
exit 0
"""


def make_package(
    handler: str,
    version: str,
    behaviour: dict[str, Any] | None = None,
    report_heartbeat: bool = False,
    update_mode: str | None = None,
    continue_on_update_failure: bool = False,
) -> bytes:
    """A real extension zip: HandlerManifest.json + handler.sh + behaviour.env.
    behaviour: {"fail": {"enable": 3}, "quiet": True, "hang": ["update"], "slow": {"install": 2},
    "status": "transitioning", "heartbeat": "fresh"|"stale"}."""
    b = behaviour or {}
    env = [f"FAIL_{cmd}={code}" for cmd, code in (b.get("fail") or {}).items()]
    env += [f"HANG_{cmd}=1" for cmd in b.get("hang") or []]
    env += [f"SLOW_{cmd}={secs}" for cmd, secs in (b.get("slow") or {}).items()]
    if b.get("quiet"):
        env.append("QUIET=1")  # fail without a word on stderr
    if b.get("status"):
        env.append(f"STATUS={b['status']}")
    env.append(f"HEARTBEAT={b.get('heartbeat', 'fresh' if report_heartbeat else 'none')}")
    manifest: dict[str, Any] = {
        f"{c}Command": f"handler.sh {c}" for c in ("install", "enable", "disable", "update", "uninstall")
    }
    manifest["reportHeartbeat"] = report_heartbeat
    if update_mode:
        manifest["updateMode"] = update_mode
    if continue_on_update_failure:
        manifest["continueOnUpdateFailure"] = True
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        entry = {"name": handler, "version": version, "handlerManifest": manifest}
        zf.writestr("HandlerManifest.json", json.dumps([entry]))
        info = zipfile.ZipInfo("handler.sh")
        info.external_attr = 0o100755 << 16
        zf.writestr(info, HANDLER_SH)
        zf.writestr("behaviour.env", "\n".join(env) + "\n")
    return out.getvalue()


def commands(root: Path) -> list[tuple[str, str]]:
    log = root / "commands.log"
    if not log.exists():
        return []
    return [tuple(line.split(" ", 1)) for line in log.read_text().splitlines()]  # type: ignore[misc]


def waagent(root: Path) -> Path:
    return root / "var" / "lib" / "waagent"


def versions(root: Path, handler: str) -> dict[str, str]:
    """Version → HandlerState, read from the files the agent wrote."""
    out: dict[str, str] = {}
    base = waagent(root)
    if not base.exists():
        return out
    for d in base.iterdir():
        if d.name.startswith(handler + "-"):
            out[d.name[len(handler) + 1 :]] = (d / "config" / "HandlerState").read_text()
    return out


def settings_files(root: Path, handler: str, version: str) -> dict[str, bytes]:
    config = waagent(root) / f"{handler}-{version}" / "config"
    return {f.name: f.read_bytes() for f in sorted(config.glob("*.settings"))}


def cached(root: Path, handler: str) -> list[str]:
    cache = root / "var" / "lib" / "arcext" / "cache" / handler
    return sorted(f.name[: -len(".tar")] for f in cache.glob("*.tar")) if cache.exists() else []


def journal(root: Path, handler: str) -> dict[str, Any] | None:
    path = root / "var" / "lib" / "arcext" / "journal" / f"{handler}.json"
    if not path.exists():
        return None
    value: dict[str, Any] = json.loads(path.read_text())
    return value


# --- pytest fixtures (imported by the test modules) ----------------------------------------------
import pytest  # noqa: E402


@pytest.fixture(scope="module")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    # not under pytest's basetemp: concurrent pytest runs prune old basetemps, keys included
    directory = Path(tempfile.mkdtemp(prefix="arcext-sshd-"))
    server = Sshd(directory).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
