"""Encryption at rest for protectedSettings and host credentials.

The key lives in ``<data-dir>/secret.key``, created at first start with mode 0600. Values are
Fernet tokens (AES-128-CBC + HMAC-SHA256), so a copied store file reveals nothing without the key.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

KEY_FILE = "secret.key"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> SecretBox:
        """The data directory's key, made on first use. Several processes may start on a new directory at once
        (``arcext serve --workers N``): the key is written whole to a file of this process's own and only then
        linked to its name, so a process never reads a key half written, and all of them end up with the one key
        whose link was made first."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / KEY_FILE
        if path.exists():
            return cls(path.read_bytes().strip())
        key = Fernet.generate_key()
        own = data_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(own, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(key)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(own, path)  # the name appears with the whole key, or names another process's key
            except FileExistsError:
                return cls(path.read_bytes().strip())
        finally:
            own.unlink(missing_ok=True)
        dir_fd = os.open(data_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the key's name survives a crash too
        finally:
            os.close(dir_fd)
        return cls(key)

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
