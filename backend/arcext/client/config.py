"""Where the client finds its server: ``arcext login``'s file, overridden by the environment.

The file is ``$ARCEXT_CONFIG_DIR/config.json`` (default ``~/.arcext/config.json``), written
atomically with mode 0600 in a 0700 directory. ``ARCEXT_ENDPOINT``, ``ARCEXT_TOKEN``,
``ARCEXT_SUBSCRIPTION_ID`` and ``ARCEXT_CA_BUNDLE`` override its values; a command's
``--subscription`` overrides both.

``--subscription`` takes a name or an id, as az's does. az looks names up in its local profile;
arcext's profile is the ``subscriptions`` map ``{name: id}`` of the file (``arcext login
--subscription ID --subscription-name NAME`` adds to it) and ``ARCEXT_SUBSCRIPTION_NAMES`` (a JSON
object of the same shape). A name matches case-insensitively; a value that is no known name is used
as the id.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageProblem

CONFIG_DIR_ENV = "ARCEXT_CONFIG_DIR"
NAMES_ENV = "ARCEXT_SUBSCRIPTION_NAMES"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
CONFIG_FILE = "config.json"
ENV_KEYS = {
    "endpoint": "ARCEXT_ENDPOINT",
    "token": "ARCEXT_TOKEN",
    "subscription": "ARCEXT_SUBSCRIPTION_ID",
    "caBundle": "ARCEXT_CA_BUNDLE",
}


@dataclass(frozen=True)
class Connection:
    endpoint: str
    token: str
    subscription: str | None = None
    ca_bundle: str | None = None

    def __repr__(self) -> str:  # never show the token, not even in a traceback
        return f"Connection(endpoint={self.endpoint!r}, subscription={self.subscription!r}, token=<hidden>)"


def config_dir() -> Path:
    configured = os.environ.get(CONFIG_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".arcext"


def config_path() -> Path:
    return config_dir() / CONFIG_FILE


def load_file() -> dict[str, Any]:
    path = config_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageProblem(f"Cannot read {path}: {exc}; run 'arcext login' again.") from None
    return data if isinstance(data, dict) else {}


def save_file(values: dict[str, Any]) -> Path:
    """Write the config atomically; the file is created 0600 and never exists with a wider mode."""
    directory = config_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / CONFIG_FILE
    fd, tmp = tempfile.mkstemp(prefix=".config-", dir=directory)  # mkstemp creates the file 0600
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(values, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_file() -> bool:
    path = config_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def settings() -> tuple[dict[str, Any], dict[str, str]]:
    """The effective values and where each came from ("environment" or the file's path)."""
    stored = load_file()
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, env in ENV_KEYS.items():
        if os.environ.get(env):
            values[key], sources[key] = os.environ[env], f"environment ({env})"
        elif stored.get(key):
            values[key], sources[key] = stored[key], str(config_path())
    return values, sources


def subscription_names() -> dict[str, str]:
    """Subscription names → ids: the file's ``subscriptions``, then ARCEXT_SUBSCRIPTION_NAMES over it."""
    names: dict[str, str] = {}
    stored = load_file().get("subscriptions")
    if isinstance(stored, dict):
        names.update({str(k): str(v) for k, v in stored.items()})
    raw = os.environ.get(NAMES_ENV)
    if raw:
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise UsageProblem(f'{NAMES_ENV}: expected a JSON object {{"name": "subscription id"}}.')
        names.update({str(k): str(v) for k, v in parsed.items()})
    return names


def subscription_id(value: str) -> str:
    """A subscription id from a name or an id (az's --subscription takes both)."""
    if _GUID.match(value):
        return value
    names = subscription_names()
    if value in names:
        return names[value]
    lowered = {k.lower(): v for k, v in names.items()}
    return lowered.get(value.lower(), value)


def resolve(subscription: str | None = None, *, need_subscription: bool = True) -> Connection:
    values, _sources = settings()
    endpoint = values.get("endpoint")
    token = values.get("token")
    if not endpoint or not token:
        raise UsageProblem(
            "Not logged in: run 'arcext login --endpoint URL --token TOKEN' or set ARCEXT_ENDPOINT and ARCEXT_TOKEN."
        )
    sub = subscription or values.get("subscription")
    if sub:
        sub = subscription_id(str(sub))
    if need_subscription and not sub:
        raise UsageProblem(
            "No subscription: pass --subscription, set ARCEXT_SUBSCRIPTION_ID, "
            "or run 'arcext login ... --subscription ID'."
        )
    return Connection(
        endpoint=str(endpoint).rstrip("/"),
        token=str(token),
        subscription=str(sub) if sub else None,
        ca_bundle=str(values["caBundle"]) if values.get("caBundle") else None,
    )
