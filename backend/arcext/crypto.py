"""Encryption at rest for protectedSettings and host credentials.

The key lives in ``<data-dir>/secret.key``, created at first start with mode 0600. Values are
Fernet tokens (AES-128-CBC + HMAC-SHA256), so a copied store file reveals nothing without the key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

KEY_FILE = "secret.key"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> SecretBox:
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / KEY_FILE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls(path.read_bytes().strip())
        key = Fernet.generate_key()
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
            fh.flush()
            os.fsync(fh.fileno())
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
