"""Encryption at rest for protectedSettings and host credentials.

The key lives in ``<data-dir>/secret.key``, created at first start with mode 0600. Values are
Fernet tokens (AES-128-CBC + HMAC-SHA256), so a copied store file reveals nothing without the key.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

KEY_FILE = "secret.key"
#: a Fernet key: 32 bytes in URL-safe base64
KEY_LENGTH = 44
#: how long a process waits for a key another one is writing in place
KEY_WAIT_SECONDS = 5.0
_OWN_PREFIX = f".{KEY_FILE}."


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise  # (some network and FUSE file systems cannot sync a directory: nothing to do there)
    finally:
        os.close(fd)


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> SecretBox:
        """The data directory's key, made on first use. Several processes may start on a new directory at once
        (``arcext serve --workers N``): the key is written whole to a file of this process's own and only then
        linked to its name, so a process never reads a key half written, and all of them end up with the one key
        whose link was made first. Where the file system has no hard links (some network shares), the key file is
        made in place and a reader waits for its whole length."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / KEY_FILE
        cls._sweep(data_dir)
        if not path.exists():
            cls._make(data_dir, path)
        key = cls._read_whole(path)
        _sync_directory(data_dir)  # the key's name is durable before anything sealed with it is written anywhere
        return cls(key)

    @staticmethod
    def _make(data_dir: Path, path: Path) -> None:
        """Give ``path`` a new key unless another process gave it one first."""
        key = Fernet.generate_key()
        own = data_dir / f"{_OWN_PREFIX}{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(own, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(key)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(own, path)  # the name appears with the whole key, or names another process's key
            except FileExistsError:
                pass
            except OSError:  # no hard links here: made in place (readers wait for the whole key)
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    return
                with os.fdopen(fd, "wb") as fh:
                    fh.write(key)
                    fh.flush()
                    os.fsync(fh.fileno())
        finally:
            own.unlink(missing_ok=True)

    @staticmethod
    def _read_whole(path: Path) -> bytes:
        """The key in ``path``, once it is whole (a process making it in place may be writing it now)."""
        deadline = time.monotonic() + KEY_WAIT_SECONDS
        while True:
            key = path.read_bytes().strip()
            if len(key) >= KEY_LENGTH:
                return key
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{path} is incomplete ({len(key)} bytes; a key is {KEY_LENGTH}): a process making it was "
                    "interrupted. If nothing was sealed with it yet (a new data directory), delete it and start again; "
                    "otherwise restore it from your backup."
                )
            time.sleep(0.01)

    @staticmethod
    def _sweep(data_dir: Path) -> None:
        """Remove key files processes left when they died between writing and removing them (each a copy of a key,
        and of the live one once linked, which a copy of the directory without ``secret.key`` would still carry)."""
        for leftover in data_dir.glob(f"{_OWN_PREFIX}*"):
            try:
                if time.time() - leftover.stat().st_mtime > 60:
                    leftover.unlink()
            except OSError:
                pass

    def seal(self, value: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(value, separators=(",", ":")).encode()).decode("ascii")

    def open(self, token: str) -> dict[str, Any]:
        try:
            value = json.loads(self._fernet.decrypt(token.encode("ascii")))
        except InvalidToken:
            raise RuntimeError(
                "A protected value cannot be decrypted: secret.key does not match the data directory."
            ) from None
        if not isinstance(value, dict):
            raise RuntimeError("A protected value is not a JSON object.")
        return value
