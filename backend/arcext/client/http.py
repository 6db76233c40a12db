"""One session helper for every client command: auth, api-version, paging, LROs, ARM errors.

The client talks HTTP only. Long-running operations are polled on their ``Azure-AsyncOperation``
URL (``Location`` when there is none), sleeping what ``Retry-After`` says; like az (final state via
azure-async-operation), the result of a PUT/PATCH is the ``properties`` embedded in the Succeeded
operation status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import requests

from . import progress
from .config import Connection
from .errors import ArmHttpError, ConnectionProblem, OperationFailed, WaitTimeout

API_VERSION = "2024-07-10"  # what az connectedmachine 1.0.0 sends
ACTIVITY_API_VERSION = "2015-04-01"
DEFAULT_POLL_INTERVAL = 2.0  # seconds, when a response carries no Retry-After
MIN_POLL_INTERVAL = 0.05  # Retry-After: 0 means "now", but never spin
DEFAULT_WAIT_TIMEOUT = 3600.0
USER_AGENT = "arcext-cli"

sleep = time.sleep  # tests replace this to see the delays
log = logging.getLogger("arcext.client")  # --debug / --verbose; never logs headers (the token is one)


def segment(value: str) -> str:
    """One URL path segment, escaped."""
    return quote(value, safe="")


def retry_after(response: requests.Response, default: float = DEFAULT_POLL_INTERVAL) -> float:
    value = response.headers.get("Retry-After")
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:  # an HTTP-date: not sent by ARM, fall back
        return default
    return max(seconds, MIN_POLL_INTERVAL)


def arm_error(response: requests.Response) -> ArmHttpError:
    """The exception for an error response, from the ARM envelope when there is one."""
    code = response.reason.replace(" ", "") if response.reason else f"Http{response.status_code}"
    message = f"The server answered {response.status_code} {response.reason or ''}".rstrip() + "."
    target = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error") if isinstance(body.get("error"), dict) else body
        if isinstance(error, dict) and (error.get("code") or error.get("message")):
            code = str(error.get("code") or code)
            message = str(error.get("message") or message)
            target = error.get("target")
    return ArmHttpError(response.status_code, code, message, target)


class ArmClient:
    """Requests against one arcext endpoint with one token."""

    def __init__(
        self,
        connection: Connection,
        api_version: str = API_VERSION,
        timeout: float = 60.0,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
    ) -> None:
        self.connection = connection
        self.api_version = api_version
        self.timeout = timeout
        self.wait_timeout = wait_timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {connection.token}"
        self.session.headers["Accept"] = "application/json"
        self.session.headers["User-Agent"] = USER_AGENT
        # Passed on every request: a session-level verify loses to REQUESTS_CA_BUNDLE (psf/requests#3829).
        self.verify: str | bool = connection.ca_bundle or True

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> ArmClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- paths ------------------------------------------------------------------------------
    @property
    def subscription(self) -> str:
        if not self.connection.subscription:
            raise ValueError("this command needs a subscription")
        return self.connection.subscription

    def subscription_path(self, subscription: str | None = None) -> str:
        return f"/subscriptions/{segment(subscription or self.subscription)}"

    def machine_path(self, resource_group: str, machine: str, subscription: str | None = None) -> str:
        return (
            f"{self.subscription_path(subscription)}/resourceGroups/{segment(resource_group)}"
            f"/providers/Microsoft.HybridCompute/machines/{segment(machine)}"
        )

    def extension_path(self, resource_group: str, machine: str, name: str, subscription: str | None = None) -> str:
        return f"{self.machine_path(resource_group, machine, subscription)}/extensions/{segment(name)}"

    def url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return self.connection.endpoint + path_or_url

    # --- requests ---------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        api_version: str | None = None,
        arm: bool = True,
    ) -> requests.Response:
        """Send one request; any status >= 400 raises ArmHttpError, a transport failure ConnectionProblem.

        ``arm=False`` sends no api-version (the admin surface); absolute URLs (nextLink, operation
        URLs) are used as given, since they carry their own query."""
        query: dict[str, str] = dict(params or {})
        absolute = path_or_url.startswith(("http://", "https://"))
        if arm and not absolute:
            query.setdefault("api-version", api_version or self.api_version)
        url = self.url(path_or_url)
        log.info("Request: %s %s", method, url.split("?")[0])
        log.debug("Request query: %s", query)
        try:
            response = self.session.request(
                method, url, params=query or None, json=json, timeout=self.timeout, verify=self.verify
            )
        except requests.exceptions.SSLError as exc:
            raise ConnectionProblem(
                f"TLS verification failed for {self.connection.endpoint}: {_reason(exc)}. "
                "Pass the server's certificate with 'arcext login --ca-bundle PATH' or ARCEXT_CA_BUNDLE.",
                "ConnectionError",
            ) from None
        except requests.exceptions.Timeout:
            raise ConnectionProblem(
                f"{method} {url.split('?')[0]} timed out after {self.timeout:g}s.", "Timeout"
            ) from None
        except requests.exceptions.RequestException as exc:
            raise ConnectionProblem(
                f"Cannot reach {self.connection.endpoint}: {_reason(exc)}", "ConnectionError"
            ) from None
        log.info("Response status: %s", response.status_code)
        log.debug("Response headers: %s", {k: v for k, v in response.headers.items() if k.lower() != "set-cookie"})
        if response.status_code >= 400:
            raise arm_error(response)
        return response

    def get_json(self, path: str, params: dict[str, str] | None = None, **kwargs: Any) -> Any:
        response = self.request("GET", path, params=params, **kwargs)
        return response.json() if response.content else None

    def iter_pages(
        self, path: str, params: dict[str, str] | None = None, limit: int | None = None, **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        """Every item of an ARM list, following nextLink (as given) until it is absent or ``limit`` items."""
        body = self.get_json(path, params, **kwargs)
        count = 0
        while True:
            for item in (body or {}).get("value") or []:
                if limit is not None and count >= limit:
                    return
                count += 1
                yield item
            link = (body or {}).get("nextLink")
            if not link:
                return
            body = self.get_json(link, **kwargs)

    def list_all(self, path: str, params: dict[str, str] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
        return list(self.iter_pages(path, params, **kwargs))

    # --- long-running operations ------------------------------------------------------------------
    def send_lro(self, method: str, path: str, *, json: Any = None, wait: bool = True, label: str = "Running") -> Any:
        """Send a write; without ``wait`` return None at once (az's --no-wait), else poll to the end.

        Returns the resource: the body of a 200, or the ``properties`` of the Succeeded operation
        status (az prints exactly that); None when there is nothing (delete, upgradeExtensions)."""
        response = self.request(method, path, json=json)
        if not wait:
            return None
        if response.status_code != 202:
            return response.json() if response.content else None
        status = self.wait(response, label)
        result = status.get("properties")
        if result in (None, [], {}):
            return None
        return result

    def wait(self, accepted: requests.Response, label: str = "Running") -> dict[str, Any]:
        """Poll a 202 until its operation is terminal; returns the final operation status body."""
        status_url = accepted.headers.get("Azure-AsyncOperation")
        location_url = accepted.headers.get("Location")
        if not status_url and not location_url:
            return {"status": "Succeeded"}
        delay = retry_after(accepted)
        deadline = time.monotonic() + self.wait_timeout
        with progress.spinner(label) as update:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(
                        f"{label}: the operation did not finish within {self.wait_timeout:g}s; "
                        f"its status is at {status_url or location_url}",
                        "OperationTimedOut",
                    )
                sleep(min(delay, remaining))
                if status_url:
                    response = self.request("GET", status_url)
                    body = response.json() if response.content else {}
                    state = str(body.get("status", "")).lower()
                    update(description=f"{label} ({body.get('status', '?')})")
                    if state == "succeeded":
                        return dict(body)
                    if state in ("failed", "canceled", "cancelled"):
                        error = body.get("error") or {}
                        raise OperationFailed(
                            str(error.get("message") or f"The operation {body.get('name', '')} {body.get('status')}."),
                            str(error.get("code") or body.get("status")),
                        )
                else:
                    assert location_url is not None
                    response = self.request("GET", location_url)
                    if response.status_code != 202:
                        content = response.json() if response.content else None
                        return {"status": "Succeeded", "properties": content}
                delay = retry_after(response)


def _reason(exc: BaseException) -> str:
    """The innermost cause of a requests exception, without urllib3's long wrapper text."""
    while exc.__context__ is not None and exc.args and not isinstance(exc.args[0], str):
        exc = exc.__context__
    text = str(exc)
    return text.split("Caused by ")[-1].strip("()") if "Caused by " in text else text
