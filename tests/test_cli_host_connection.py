"""`arcext host-connection set|show|delete` through a live server: the settings reach the API, the
password travels on stdin only and is never printed, and bad settings get the server's clear error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from arcext.testing import ArcextServer
from conftest import API, SUB, machine_url
from test_cli_client import Cli, env_for

SECRET = "S3cret-passw0rd!"


@pytest.fixture
def arc(arcext_server: ArcextServer) -> Iterator[ArcextServer]:
    arcext_server.reset()
    with arcext_server.session() as s:
        r = s.put(machine_url(arcext_server, "m1"), params={"api-version": API}, json={"location": "eastus"})
        assert r.status_code == 200, r.text
    yield arcext_server


def _api(arc: ArcextServer) -> requests.Response:
    with arc.session() as s:
        return s.get(f"{arc.url}/arcext/v1/subscriptions/{SUB}/resourceGroups/rg1/machines/m1/hostConnection")


def test_set_show_delete_a_winrm_connection(arc: ArcextServer, tmp_path: Path) -> None:
    cli = Cli(env_for(arc, tmp_path / "config"))
    set_ = cli(
        "host-connection", "set", "-g", "rg1", "--machine-name", "m1", "--address", "winhost01.corp.example.com",
        "--driver", "winrm", "--transport", "http", "--auth", "ntlm", "--username", "CORP\\arcext",
        "--password-stdin", "--allow", "Microsoft.Azure.Monitor/AzureMonitorWindowsAgent",
        "--handler-timeouts", '{"install": 1200}', "--status-deadline", "600",
        input=f"{SECRET}\n",
    )  # fmt: skip
    assert set_.exit_code == 0, set_.output
    assert SECRET not in set_.output
    stored = _api(arc).json()
    assert stored["driver"] == "winrm" and stored["port"] == 5985 and stored["auth"] == "ntlm"
    assert stored["extensionsAllowList"] == ["Microsoft.Azure.Monitor/AzureMonitorWindowsAgent"]
    assert stored["handlerTimeoutSeconds"] == {"install": 1200} and stored["statusDeadlineSeconds"] == 600
    assert stored["hasCredentials"] is True and SECRET not in str(stored)

    shown = cli.json("host-connection", "show", "-g", "rg1", "--machine-name", "m1")
    assert shown["address"] == "winhost01.corp.example.com" and "password" not in shown
    assert cli.json("host-connection", "show", "-g", "rg1", "--machine-name", "m1", "--query", "driver") == "winrm"

    deleted = cli("host-connection", "delete", "-g", "rg1", "--machine-name", "m1")
    assert deleted.exit_code == 0, deleted.output
    assert _api(arc).status_code == 404


def test_bad_settings_get_the_servers_error_and_change_nothing(arc: ArcextServer, tmp_path: Path) -> None:
    cli = Cli(env_for(arc, tmp_path / "config"))
    basic_over_http = cli(
        "host-connection", "set", "-g", "rg1", "--machine-name", "m1", "--address", "h",
        "--transport", "http", "--auth", "basic", "--username", "u", "--password-stdin",
        input=f"{SECRET}\n",
    )  # fmt: skip
    assert basic_over_http.exit_code != 0
    assert "Basic authentication is allowed only over https" in basic_over_http.stderr
    jea_on_winrm = cli(
        "host-connection", "set", "-g", "rg1", "--machine-name", "m1", "--address", "h", "--driver", "winrm",
        "--username", "u", "--configuration-name", "JEA-Arc",
    )  # fmt: skip
    assert jea_on_winrm.exit_code != 0 and "needs the psrp driver" in jea_on_winrm.stderr
    empty_stdin = cli(
        "host-connection", "set", "-g", "rg1", "--machine-name", "m1", "--address", "h", "--username", "u",
        "--password-stdin", input="",
    )  # fmt: skip
    assert empty_stdin.exit_code == 2 and "held no password" in empty_stdin.stderr
    assert _api(arc).status_code == 404  # nothing was stored


# --- Linux hosts (ssh driver) --------------------------------------------------------------------------
PASSPHRASE = "key-Passphr4se!"


def _key_file(path: Path, passphrase: str | None = None) -> str:
    """An ed25519 private key in OpenSSH format, as ssh-keygen writes it; returns its text."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption).decode()
    path.write_text(pem, encoding="utf-8")
    path.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    path.with_suffix(".pub").write_text(public.decode() + " arcext@test\n", encoding="utf-8")
    return pem


def _fingerprint() -> str:
    """A host-key fingerprint in OpenSSH's SHA256 form."""
    import base64
    import hashlib
    import os

    return "SHA256:" + base64.b64encode(hashlib.sha256(os.urandom(51)).digest()).decode().rstrip("=")


def _key_lines(pem: str) -> list[str]:
    return [line for line in pem.splitlines() if line and "-----" not in line]


def _linux_machine(arc: ArcextServer, name: str) -> None:
    with arc.session() as s:
        r = s.put(
            machine_url(arc, name),
            params={"api-version": API},
            json={"location": "eastus", "properties": {"osType": "linux"}},
        )
        assert r.status_code == 200, r.text


def test_set_show_an_ssh_connection_with_a_key_file(arc: ArcextServer, tmp_path: Path) -> None:
    cli = Cli(env_for(arc, tmp_path / "config"))
    pem = _key_file(tmp_path / "id_ed25519")
    fp = _fingerprint()
    set_ = cli(
        "host-connection", "set", "-g", "rg1", "--machine-name", "m1", "--address", "10.0.0.7", "--driver", "ssh",
        "--port", "2222", "--username", "arcext", "--private-key-file", str(tmp_path / "id_ed25519"),
        "--host-key-fingerprint", f"256 {fp} root@lnx01 (ED25519)", "--no-sudo", "--handler-root", "/srv/arc",
        "--allow", "Microsoft.Azure.Monitor/AzureMonitorLinuxAgent", "--handler-timeouts", '{"install": 900}',
        "--debug",
    )  # fmt: skip
    assert set_.exit_code == 0, set_.output
    for line in _key_lines(pem):  # not on stdout, not in the --debug log on stderr
        assert line not in set_.output
    assert "PRIVATE KEY" not in set_.output
    stored = _api(arc).json()
    assert stored["driver"] == "ssh" and stored["port"] == 2222 and stored["username"] == "arcext"
    assert stored["auth"] == "publickey" and stored["hostKeyFingerprint"] == fp
    assert stored["trustOnFirstUse"] is False and stored["sudo"] is False and stored["handlerRoot"] == "/srv/arc"
    assert stored["extensionsAllowList"] == ["Microsoft.Azure.Monitor/AzureMonitorLinuxAgent"]
    assert stored["handlerTimeoutSeconds"] == {"install": 900}
    assert stored["hasCredentials"] is True and "PRIVATE KEY" not in str(stored)

    shown = cli("host-connection", "show", "-g", "rg1", "--machine-name", "m1", "--debug")
    assert shown.exit_code == 0, shown.output
    assert "privateKeyPem" not in shown.stdout and "PRIVATE KEY" not in shown.output
    assert '"hasCredentials": true' in shown.stdout

    # same endpoint, other settings: the stored key is kept without sending it again
    again = cli(
        "host-connection", "set", "-g", "rg1", "--machine-name", "m1", "--address", "10.0.0.7", "--driver", "ssh",
        "--port", "2222", "--username", "arcext", "--host-key-fingerprint", fp, "--status-deadline", "600",
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert _api(arc).json()["statusDeadlineSeconds"] == 600 and _api(arc).json()["sudo"] is True

    # a new address without the key again: the server's 400, with the option that gives the key
    moved = cli(
        "host-connection", "set", "-g", "rg1", "--machine-name", "m1", "--address", "10.0.0.99", "--driver", "ssh",
        "--port", "2222", "--username", "arcext", "--host-key-fingerprint", fp,
    )  # fmt: skip
    assert moved.exit_code == 1
    assert "'privateKeyPem' must be given again" in moved.stderr and "--private-key-file" in moved.stderr
    assert _api(arc).json()["address"] == "10.0.0.7"  # unchanged
    moved = cli(
        "host-connection", "set", "-g", "rg1", "--machine-name", "m1", "--address", "10.0.0.99", "--driver", "ssh",
        "--port", "2222", "--username", "arcext", "--host-key-fingerprint", fp,
        "--private-key-file", str(tmp_path / "id_ed25519"),
    )  # fmt: skip
    assert moved.exit_code == 0, moved.output
    assert _api(arc).json()["address"] == "10.0.0.99"


def test_an_encrypted_key_takes_its_passphrase_on_stdin(arc: ArcextServer, tmp_path: Path) -> None:
    cli = Cli(env_for(arc, tmp_path / "config"))
    pem = _key_file(tmp_path / "id_enc", PASSPHRASE)
    args = (
        "host-connection", "set", "-g", "rg1", "--machine-name", "m1", "--address", "lnx01", "--driver", "ssh",
        "--username", "root", "--private-key-file", str(tmp_path / "id_enc"), "--trust-on-first-use", "--verbose",
    )  # fmt: skip
    no_passphrase = cli(*args)
    assert no_passphrase.exit_code == 1 and "'privateKeyPem'" in no_passphrase.stderr
    wrong = cli(*args, "--private-key-passphrase-stdin", input="not-it\n")
    assert wrong.exit_code == 1 and "passphrase is wrong" in wrong.stderr and "not-it" not in wrong.output
    assert _api(arc).status_code == 404
    ok = cli(*args, "--private-key-passphrase-stdin", "--debug", input=f"{PASSPHRASE}\n")
    assert ok.exit_code == 0, ok.output
    assert PASSPHRASE not in ok.output and all(line not in ok.output for line in _key_lines(pem))
    stored = _api(arc).json()
    assert stored["trustOnFirstUse"] is True and stored["hostKeyFingerprint"] is None
    assert stored["sudo"] is False  # root needs no sudo
    assert PASSPHRASE not in str(stored)


def test_a_linux_machine_defaults_to_ssh(arc: ArcextServer, tmp_path: Path) -> None:
    _linux_machine(arc, "lnx1")
    cli = Cli(env_for(arc, tmp_path / "config"))
    set_ = cli(
        "host-connection", "set", "-g", "rg1", "--machine-name", "lnx1", "--address", "lnx1.corp.example.com",
        "--username", "arcext", "--trust-on-first-use", "--password-stdin",
        input=f"{SECRET}\n",
    )  # fmt: skip
    assert set_.exit_code == 0, set_.output
    assert SECRET not in set_.output
    shown = cli.json("host-connection", "show", "-g", "rg1", "--machine-name", "lnx1")
    assert shown["driver"] == "ssh" and shown["auth"] == "password" and shown["port"] == 22
    assert shown["sudo"] is True and shown["hasCredentials"] is True and SECRET not in str(shown)
    windows_driver = cli(
        "host-connection", "set", "-g", "rg1", "--machine-name", "lnx1", "--address", "h", "--driver", "psrp",
        "--username", "u", "--password-stdin", input=f"{SECRET}\n",
    )  # fmt: skip
    assert windows_driver.exit_code == 1 and "its osType is linux" in windows_driver.stderr


def test_ssh_mistakes_are_refused_clearly(arc: ArcextServer, tmp_path: Path) -> None:
    cli = Cli(env_for(arc, tmp_path / "config"))
    pem = _key_file(tmp_path / "id_ed25519")
    key = str(tmp_path / "id_ed25519")
    base = ("host-connection", "set", "-g", "rg1", "--machine-name", "m1", "--address", "h", "--username", "u")
    unpinned = cli(*base, "--driver", "ssh", "--private-key-file", key)
    assert unpinned.exit_code == 1 and "Pin the host key" in unpinned.stderr
    assert "--host-key-fingerprint" in unpinned.stderr and "--trust-on-first-use" in unpinned.stderr
    bad_fp = cli(*base, "--driver", "ssh", "--private-key-file", key, "--host-key-fingerprint", "MD5:ab:cd")
    assert bad_fp.exit_code == 1 and "OpenSSH SHA256 fingerprint" in bad_fp.stderr
    public = cli(*base, "--driver", "ssh", "--private-key-file", key + ".pub", "--trust-on-first-use")
    assert public.exit_code == 2 and "is a public key" in public.stderr
    missing = cli(*base, "--driver", "ssh", "--private-key-file", str(tmp_path / "nope"), "--trust-on-first-use")
    assert missing.exit_code == 2 and "cannot read" in missing.stderr
    not_a_key = tmp_path / "notes.txt"
    not_a_key.write_text("hello\n", encoding="utf-8")
    garbage = cli(*base, "--driver", "ssh", "--private-key-file", str(not_a_key), "--trust-on-first-use")
    assert garbage.exit_code == 2 and "not a PEM or OpenSSH private key" in garbage.stderr
    ssh_on_psrp = cli(*base, "--driver", "psrp", "--trust-on-first-use", "--password-stdin", input=f"{SECRET}\n")
    assert ssh_on_psrp.exit_code == 2 and "only for --driver ssh" in ssh_on_psrp.stderr
    https_on_ssh = cli(*base, "--driver", "ssh", "--transport", "https", "--trust-on-first-use")
    assert https_on_ssh.exit_code == 2 and "only for the Windows drivers" in https_on_ssh.stderr
    both_stdin = cli(
        *base, "--private-key-file", key, "--private-key-passphrase-stdin", "--password-stdin", input="a\nb\n"
    )
    assert both_stdin.exit_code == 2 and "both read standard input" in both_stdin.stderr
    no_key = cli(*base, "--driver", "ssh", "--private-key-passphrase-stdin", "--trust-on-first-use", input="a\n")
    assert no_key.exit_code == 2 and "--private-key-file" in no_key.stderr
    for result in (unpinned, bad_fp, public, garbage):
        assert all(line not in result.output for line in _key_lines(pem))
    assert _api(arc).status_code == 404  # nothing was stored
