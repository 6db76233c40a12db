"""Helpers shared by the replay tests (spec examples and Az.ConnectedMachine recordings).

- where the copied data is (tests/data, see its README.md), failing loudly when it is not there;
- a strict shape comparator (keys and JSON types, recursively; values ignored except ARM resource types);
- preconditions made through the API (machines, extensions, catalog versions), including those of an
  upgradeExtensions request (each target's extension installed at an older version, the target published);
- a fast poller for long-running operations that follows the server's own headers.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from arcext.testing import ArcextServer

DATA = Path(__file__).resolve().parent / "data"
AZURE_SPEC = DATA / "azure-spec"
AZ_RECORDINGS = DATA / "az-recordings"
HC = AZURE_SPEC / "specification/hybridcompute/resource-manager/Microsoft.HybridCompute"
SPEC_DOCS = {
    "2024-07-10": HC / "stable/2024-07-10/HybridCompute.json",
    "2026-07-15": HC / "HybridCompute/stable/2026-07-15/openapi.json",
}

ARM_HOST = "https://management.azure.com"
#: Spec examples use placeholders ("{subscriptionId}", "xxxxxxxx-…"); the server wants a real GUID.
PLACEHOLDER_SUB = "00000000-0000-0000-0000-000000000000"
GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

#: The key arcext must never return (DESIGN contract 1); examples show it as `{}`, Azure omits it.
FORBIDDEN_KEY = "protectedSettings"
#: ARM omits nextLink on the last page (the real service never sends it for small lists).
OPTIONAL_ANYWHERE = frozenset({"nextLink"})
#: Machine properties the server owns (not part of a PUT body when seeding from a recorded machine).
MACHINE_SERVER_OWNED = frozenset({"provisioningState", "status", "lastStatusChange", "errorDetails", "statusReason"})
EXTENSION_WRITABLE = (
    "publisher",
    "type",
    "typeHandlerVersion",
    "settings",
    "enableAutomaticUpgrade",
    "autoUpgradeMinorVersion",
    "forceUpdateTag",
)
TERMINAL = {"Succeeded", "Failed", "Canceled"}
LRO_HEADERS = ("Azure-AsyncOperation", "Location", "Retry-After")
ARM_RESPONSE_HEADERS = ("x-ms-request-id", "x-ms-correlation-request-id")


def require(path: Path) -> Path:
    """Fail the calling test (or module, at collection) when the repository's copy of the data is missing:
    it ships with the repository (tests/data/README.md), so a missing folder is a broken checkout, never a
    reason to skip."""
    if not path.exists():
        pytest.fail(f"test data not found at {path}: it ships in tests/data (see tests/data/README.md)", pytrace=False)
    return path


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8-sig"))


def real_subscription(value: str) -> str:
    return value if GUID_RE.match(value) else PLACEHOLDER_SUB


# --- shape comparison -------------------------------------------------------------------------
def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


@dataclass
class ShapeDiff:
    missing: list[str] = field(default_factory=list)
    wrong_type: list[str] = field(default_factory=list)
    wrong_value: list[str] = field(default_factory=list)
    forbidden: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # informative only
    excused: list[str] = field(default_factory=list)  # expected keys we may lack (documented reasons)

    @property
    def problems(self) -> list[str]:
        return (
            [f"missing key {p}" for p in self.missing]
            + [f"wrong JSON type at {p}" for p in self.wrong_type]
            + [f"wrong value at {p}" for p in self.wrong_value]
            + [f"forbidden key returned at {p}" for p in self.forbidden]
        )

    def report(self, label: str) -> str:
        lines = [f"{label}: shape differs from the expected body"] + [f"  - {p}" for p in _collapse(self.problems)]
        if self.extra:
            lines.append(f"  (informative) extra keys arcext sends: {', '.join(_collapse(self.extra))}")
        return "\n".join(lines)


def _collapse(paths: list[str]) -> list[str]:
    """value[0].x, value[1].x … → value[].x (×2): one line per generic path."""
    counts: dict[str, int] = {}
    for path in paths:
        generic = _generic(path)
        counts[generic] = counts.get(generic, 0) + 1
    return [f"{p} (x{n})" if n > 1 else p for p, n in counts.items()]


def _generic(path: str) -> str:
    return re.sub(r"\[\d+\]", "[]", path)


def _pair_lists(expected: list[Any], actual: list[Any]) -> list[tuple[Any, Any, int]]:
    """Pair every element we returned with the expected element describing it.

    Resources are paired by id, else by name (lists are not ordered the same way); anything else by position,
    falling back to the first expected element (a list's shape is its elements' shape)."""
    by_id: dict[str, Any] = {}
    by_name: dict[str, Any] = {}
    for item in expected:
        if isinstance(item, dict):
            if isinstance(item.get("id"), str):
                by_id.setdefault(item["id"].lower(), item)
            if isinstance(item.get("name"), str):
                by_name.setdefault(item["name"].lower(), item)
    pairs = []
    for i, item in enumerate(actual):
        exp = None
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            exp = by_id.get(item["id"].lower())
        if exp is None and by_name and isinstance(item, dict) and isinstance(item.get("name"), str):
            exp = by_name.get(item["name"].lower())
        if exp is None:
            exp = expected[i] if i < len(expected) else expected[0]
        pairs.append((exp, item, i))
    return pairs


def compare_shape(expected: Any, actual: Any, *, optional: frozenset[str] | set[str] = frozenset()) -> ShapeDiff:
    """Every key of ``expected`` is in ``actual`` with the same JSON type, recursively.

    - dicts by key; lists element by element (paired by resource name, else position, else the first
      expected element); an empty expected list constrains only the type;
    - an expected ``null`` constrains nothing (Azure's "not set"); values are ignored (ids, timestamps,
      placeholders such as ``"type": "string"``) except ARM resource types (``Microsoft.HybridCompute/…``),
      compared case-insensitively;
    - ``protectedSettings`` is expected to be absent everywhere in ``actual``;
    - ``optional`` holds generic paths (``value[].properties.osInstallDate``) that may be missing, with a
      documented reason at the call site; ``nextLink`` is optional anywhere.
    """
    diff = ShapeDiff()
    _walk(expected, actual, "", diff, optional)
    diff.forbidden.extend(find_key(actual, FORBIDDEN_KEY))
    return diff


def _walk(expected: Any, actual: Any, path: str, diff: ShapeDiff, optional: frozenset[str] | set[str]) -> None:
    where = path or "<body>"
    if expected is None:
        return
    if json_type(expected) != json_type(actual):
        diff.wrong_type.append(f"{where} (expected {json_type(expected)}, got {json_type(actual)})")
        return
    if isinstance(expected, str):
        if expected.lower().startswith("microsoft.hybridcompute/") and path.split(".")[-1] == "type":
            if expected.lower() != actual.lower():
                diff.wrong_value.append(f"{where} (expected {expected!r}, got {actual!r})")
        return
    if isinstance(expected, dict):
        for key, sub in expected.items():
            child = f"{path}.{key}" if path else key
            if key == FORBIDDEN_KEY:
                continue
            if key not in actual:
                if sub is None:
                    continue
                if key in OPTIONAL_ANYWHERE or _generic(child) in optional:
                    diff.excused.append(child)
                    continue
                diff.missing.append(child)
                continue
            _walk(sub, actual[key], child, diff, optional)
        for key in actual:
            if key not in expected and key != FORBIDDEN_KEY:
                diff.extra.append(f"{path}.{key}" if path else key)
        return
    if isinstance(expected, list):
        if not expected:
            return
        if not actual:
            diff.missing.append(f"{where}[0] (expected a non-empty array)")
            return
        for exp, item, i in _pair_lists(expected, actual):
            _walk(exp, item, f"{path}[{i}]", diff, optional)


def find_key(value: Any, key: str, path: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            child = f"{path}.{k}" if path else k
            if k == key:
                found.append(child)
            found += find_key(v, key, child)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += find_key(v, key, f"{path}[{i}]")
    return found


def assert_shape(
    expected: Any, actual: Any, label: str, *, optional: frozenset[str] | set[str] = frozenset()
) -> ShapeDiff:
    diff = compare_shape(expected, actual, optional=optional)
    assert not diff.problems, diff.report(label)
    if diff.extra:
        print(f"{label}: extra keys (informative): {', '.join(_collapse(diff.extra))}")
    return diff


def body_of(response: requests.Response) -> Any:
    if not response.content:
        return None
    return response.json()


def assert_no_protected_settings(response: requests.Response, label: str) -> None:
    if response.content and "json" in response.headers.get("Content-Type", ""):
        found = find_key(response.json(), FORBIDDEN_KEY)
        assert not found, f"{label}: protectedSettings returned at {found}"


def assert_arm_headers(response: requests.Response, label: str) -> None:
    for name in ARM_RESPONSE_HEADERS:
        assert response.headers.get(name), f"{label}: response lacks the {name} header"


def assert_lro_headers(response: requests.Response, names: tuple[str, ...] | list[str], label: str) -> None:
    for name in names:
        assert response.headers.get(name), f"{label}: 202 lacks the {name} header (got {dict(response.headers)})"
    if "Retry-After" in names:
        value = response.headers["Retry-After"]
        assert value.isdigit(), f"{label}: Retry-After is not a number of seconds: {value!r}"


# --- long-running operations ------------------------------------------------------------------
def poll_status(session: requests.Session, url: str, label: str, timeout: float = 10.0) -> list[requests.Response]:
    """GET an Azure-AsyncOperation URL until the status is terminal; every response, in order.

    Honors Retry-After as an upper bound but polls every 0.05 s at most (we are not the SDK)."""
    answers: list[requests.Response] = []
    deadline = time.monotonic() + timeout
    while True:
        response = session.get(url)
        answers.append(response)
        assert response.status_code == 200, (
            f"{label}: operation status answered {response.status_code}: {response.text}"
        )
        status = response.json().get("status")
        if status in TERMINAL:
            return answers
        assert time.monotonic() < deadline, f"{label}: operation still {status!r} after {timeout} s"
        retry = response.headers.get("Retry-After", "0")
        time.sleep(min(float(retry) if retry.replace(".", "", 1).isdigit() else 0.0, 0.05))


# --- preconditions ----------------------------------------------------------------------------
def strip_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_nulls(v) for v in value]
    return value


def machine_put_body(resource: dict[str, Any], default_location: str = "eastus") -> dict[str, Any]:
    """A Machines_CreateOrUpdate body that recreates a recorded/example machine (its agent-reported
    properties included: arcext lets an operator write them)."""
    body: dict[str, Any] = {"location": resource.get("location") or default_location}
    if resource.get("tags") is not None:
        body["tags"] = resource["tags"]
    if resource.get("kind") is not None:
        body["kind"] = resource["kind"]
    identity = resource.get("identity") or {}
    if identity.get("type"):
        body["identity"] = {"type": identity["type"]}
    props = {
        k: strip_nulls(v)
        for k, v in (resource.get("properties") or {}).items()
        if v is not None and k not in MACHINE_SERVER_OWNED
    }
    body["properties"] = props
    return body


def extension_put_body(resource: dict[str, Any], default_location: str) -> dict[str, Any]:
    props = resource.get("properties") or {}
    out = {k: props[k] for k in EXTENSION_WRITABLE if props.get(k) is not None}
    if out.get("type") == "string":  # example placeholder: the instance view names the real type
        out["type"] = (props.get("instanceView") or {}).get("type") or "CustomScriptExtension"
    body: dict[str, Any] = {"location": resource.get("location") or default_location, "properties": out}
    if resource.get("tags") is not None:
        body["tags"] = resource["tags"]
    return body


def split_machine_path(path: str) -> tuple[str, str, str] | None:
    match = re.match(
        r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.HybridCompute/machines/([^/?]+)",
        path,
        re.IGNORECASE,
    )
    return (match.group(1), match.group(2), match.group(3)) if match else None


def machine_path(sub: str, rg: str, name: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.HybridCompute/machines/{name}"


class Seeder:
    """Creates the resources a replayed request needs, through the public API."""

    API = "2026-07-15"

    def __init__(self, server: ArcextServer, session: requests.Session) -> None:
        self.server = server
        self.session = session

    def machine(self, sub: str, rg: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.server.url}{machine_path(sub, rg, name)}?api-version={self.API}"
        response = self.session.put(url, json=body)
        assert response.status_code == 200, (
            f"precondition: PUT machine {name} -> {response.status_code} {response.text}"
        )
        result: dict[str, Any] = response.json()
        return result

    def extension(self, sub: str, rg: str, machine: str, name: str, body: dict[str, Any]) -> None:
        url = f"{self.server.url}{machine_path(sub, rg, machine)}/extensions/{quote(name)}?api-version={self.API}"
        response = self.session.put(url, json=body)
        assert response.status_code in (200, 202), (
            f"precondition: PUT extension {machine}/{name} -> {response.status_code} {response.text}"
        )
        assert self.server.wait_for_operations(10), "precondition: extension operation did not finish"

    def upgrade(
        self,
        sub: str,
        rg: str,
        machine: str,
        location: str,
        targets: dict[str, Any],
        recorded: list[dict[str, Any]] | tuple[()] = (),
    ) -> list[UpgradeTarget]:
        """What an upgradeExtensions request needs on a machine that exists: each target's extension
        installed at an older version, the target version published; the machine's other recorded
        extensions installed as recorded (they make a publisher-only key resolve among several).

        Target versions are published *before* the extensions are installed: a version published while an
        opted-in extension runs an older one starts an automatic rollout whose first wave runs at once,
        which would race the manual upgrade under test."""
        plan = plan_upgrade(targets, recorded)
        for target in plan:
            self.version(target.publisher, target.type, target.to_version)
        planned = {t.name.lower() for t in plan}
        for resource in recorded:
            if resource["name"].lower() not in planned:
                self.extension(sub, rg, machine, resource["name"], extension_put_body(resource, location))
        for target in plan:
            props: dict[str, Any] = {
                "publisher": target.publisher,
                "type": target.type,
                "typeHandlerVersion": target.from_version,
            }
            if target.settings is not None:
                props["settings"] = target.settings
            self.extension(sub, rg, machine, target.name, {"location": location, "properties": props})
        return plan

    def assert_upgraded(self, sub: str, rg: str, machine: str, plan: list[UpgradeTarget], label: str) -> None:
        """After a Succeeded upgradeExtensions: every target's extension runs its target version."""
        for target in plan:
            url = f"{self.server.url}{machine_path(sub, rg, machine)}/extensions/{quote(target.name)}"
            response = self.session.get(url, params={"api-version": self.API})
            assert response.status_code == 200, f"{label}: GET {target.name} -> {response.status_code}"
            props = response.json()["properties"]
            assert (props["typeHandlerVersion"], props["provisioningState"]) == (target.to_version, "Succeeded"), (
                f"{label}: {target.name} ({target.key}) should run {target.to_version} after the upgrade "
                f"from {target.from_version}: {props}"
            )
            assert props["instanceView"]["typeHandlerVersion"] == target.to_version, props["instanceView"]

    def version(self, publisher: str, extension_type: str, version: str) -> None:
        catalog = f"{self.server.url}/arcext/v1/catalog/{quote(publisher)}/{quote(extension_type)}"
        url = f"{catalog}/versions/{quote(version)}"
        response = self.session.put(url, json={"critical": False})
        assert response.status_code in (200, 201), (
            f"precondition: publish {version} -> {response.status_code} {response.text}"
        )


# --- upgradeExtensions ------------------------------------------------------------------------
@dataclass(frozen=True)
class UpgradeTarget:
    key: str  # the request's key: "<publisher>.<type>" or a publisher naming one extension
    name: str
    publisher: str
    type: str
    from_version: str
    to_version: str
    settings: dict[str, Any] | None = None


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in version.split("."))


def older_version(version: str) -> str:
    """A version just below ``version``, component by component: 1.10 → 1.9, 1.10.12 → 1.10.11, 2.0 → 1.0."""
    parts = [int(p) for p in version.split(".")]
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] > 0:
            parts[i] -= 1
            return ".".join(str(p) for p in parts)
    raise ValueError(f"no version is older than {version}")


def plan_upgrade(targets: dict[str, Any], recorded: list[dict[str, Any]] | tuple[()] = ()) -> list[UpgradeTarget]:
    """The extension each key names: a recorded one whose "publisher.type" or publisher is the key (kept at its
    recorded version when that is older than the target), else a new one split at the key's last dot."""
    plan: list[UpgradeTarget] = []
    for key, target in targets.items():
        to_version = target["targetVersion"]
        match = next(
            (
                r
                for r in recorded
                if key.lower()
                in (
                    f"{r['properties']['publisher']}.{r['properties']['type']}".lower(),
                    r["properties"]["publisher"].lower(),
                )
            ),
            None,
        )
        if match is not None:
            props = match["properties"]
            recorded_version = props.get("typeHandlerVersion") or ""
            from_version = (
                recorded_version
                if recorded_version and version_tuple(recorded_version) < version_tuple(to_version)
                else older_version(to_version)
            )
            plan.append(
                UpgradeTarget(
                    key,
                    match["name"],
                    props["publisher"],
                    props["type"],
                    from_version,
                    to_version,
                    props.get("settings"),
                )
            )
        else:
            publisher, _, extension_type = key.rpartition(".")
            assert publisher, f"cannot tell the publisher and type of {key!r}"
            plan.append(
                UpgradeTarget(key, extension_type, publisher, extension_type, older_version(to_version), to_version)
            )
    return plan
