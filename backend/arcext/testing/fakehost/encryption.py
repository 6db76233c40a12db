"""NTLM authentication and WinRM message encryption over http, the fake host's side (a pyspnego
acceptor): one security context per TCP connection, as NTLM is connection-bound; every message
after the handshake travels sealed in a ``multipart/encrypted`` body (MS-WSMV 2.2.9.1).

pyspnego's acceptor reads the accepted credentials from the file named by ``NTLM_USER_FILE``
(see :func:`register_user`)."""

from __future__ import annotations

import base64
import os
import re
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any

ENCRYPTED_CONTENT_TYPE = (
    'multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted";boundary="Encrypted Boundary"'
)

_USERS_LOCK = threading.Lock()
_USERS: dict[str, str] = {}


def register_user(username: str, password: str) -> None:
    """Let the NTLM acceptor of every fake host in this process accept ``username``."""
    with _USERS_LOCK:
        _USERS[username] = password
        path = os.environ.get("NTLM_USER_FILE")
        if not path or not path.endswith("arcext-fakehost-ntlm.txt"):
            path = str(Path(tempfile.mkdtemp(prefix="arcext-fakehost-")) / "arcext-fakehost-ntlm.txt")
            os.environ["NTLM_USER_FILE"] = path
        Path(path).write_text("".join(f":{u}:{p}\n" for u, p in _USERS.items()))


class AuthenticationFailed(Exception):
    """The client's NTLM token was refused; the context is forgotten."""


class NtlmConnection:
    """One connection's NTLM security context and the messages it seals and unseals."""

    def __init__(self) -> None:
        self.context: Any = None
        self.authenticated = False

    def forget(self) -> None:
        """Drop the context (the next token starts a new handshake)."""
        self.context = None

    def reset(self) -> None:
        """Drop the context and the authentication: a message sealed for another context arrived."""
        self.context = None
        self.authenticated = False

    def step(self, token: str) -> bytes | None:
        """Feed one client token (base64, from the Authorization header); the token to send back
        while the handshake goes on, None once it is complete (the connection is then authenticated)."""
        import spnego
        import spnego.exceptions

        if self.context is None or self.authenticated:
            self.context = spnego.server(protocol="ntlm", options=spnego.NegotiateOptions.wrapping_winrm)
            self.authenticated = False
        try:
            out: bytes | None = self.context.step(base64.b64decode(token))
        except (spnego.exceptions.SpnegoError, ValueError) as exc:
            self.context = None
            raise AuthenticationFailed(str(exc)) from exc
        if not self.context.complete:
            return out or b""
        self.authenticated = True
        return None

    def unwrap(self, body: bytes, content_type: str) -> bytes:
        """The SOAP message inside a ``multipart/encrypted`` body; ValueError (or pyspnego's error)
        when it was not sealed by this context."""
        boundary = re.search(r'boundary="?([^";]+)"?', content_type)
        if boundary is None:
            raise ValueError("no MIME boundary")
        parts = [p for p in re.split(rb"--\s*" + re.escape(boundary.group(1).encode()) + rb"(?:--)?\r\n", body) if p]
        out = b""
        for i in range(0, len(parts), 2):
            head, payload = parts[i], parts[i + 1]
            expected = int(head.split(b"Length=")[1].split(b"\r\n")[0])
            data = payload.replace(b"\tContent-Type: application/octet-stream\r\n", b"", 1)
            hlen = struct.unpack("<i", data[:4])[0]
            plain: bytes = self.context.unwrap_winrm(data[4 : 4 + hlen], data[4 + hlen :])
            if len(plain) != expected:
                raise ValueError("decrypted length mismatch")
            out += plain
        return out

    def wrap(self, message: bytes) -> bytes:
        """``message`` sealed as a ``multipart/encrypted`` body (:data:`ENCRYPTED_CONTENT_TYPE`)."""
        header, data, padding = self.context.wrap_winrm(message)
        wrapped = struct.pack("<i", len(header)) + header + data
        head = "\r\n".join(
            [
                "--Encrypted Boundary",
                "\tContent-Type: application/HTTP-SPNEGO-session-encrypted",
                f"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={len(message) + padding}",
                "--Encrypted Boundary",
                "\tContent-Type: application/octet-stream",
                "",
            ]
        ).encode()
        out: bytes = head + wrapped + b"--Encrypted Boundary--\r\n"
        return out
