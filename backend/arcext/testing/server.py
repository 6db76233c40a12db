"""ArcextServer: a real arcext server on a free port, in a thread of the test process.

Tuned for tests (each a setting you can change): 202s carry ``Retry-After: 0`` and the clients the
harness builds poll at once (``polling_interval=0``); and a 202 is answered only once the operation
it started has finished (up to ``settle_operations`` seconds), so the client's first poll already
reads a terminal status. The wire stays ARM's: 202, ``Azure-AsyncOperation``, ``Location``, polling.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import requests

from ..auth import Role
from ..clock import parse_iso
from ..operations import OperationRunner
from ..services import Services
from ..serving import ServerThread, ssl_context

if TYPE_CHECKING:
    from azure.mgmt.hybridcompute import HybridComputeManagementClient
    from azure.mgmt.hybridcompute.aio import HybridComputeManagementClient as AsyncHybridComputeManagementClient
    from flask import Flask

DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
ACTIVITY_API_VERSION = "2015-04-01"

#: Settings the harness changes from a served arcext's defaults (``config=`` overrides them).
HARNESS_CONFIG: dict[str, Any] = {
    "ARCEXT_RETRY_AFTER": 0,  # azure-core then polls after the client's polling_interval (0 in sdk_client)
}

StartResponse = Callable[..., Any]


def scratch_dir() -> str | None:
    """Where a harness server without a data_dir keeps its data: ``$ARCEXT_HARNESS_TMPDIR``, else
    ``/dev/shm`` where it exists (tmpfs: the store's fsyncs cost nothing, a write is about twice as
    fast), else the system's temporary directory. Each server gets a directory of its own there."""
    chosen = os.environ.get("ARCEXT_HARNESS_TMPDIR")
    if chosen:
        return chosen
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


def _runner_paused(runner: OperationRunner) -> bool:
    # A test that paused the runner (to observe Creating/Updating) must get its 202 at once.
    return not runner._running.is_set()


class SettleOperations:
    """WSGI middleware that lets long-running operations finish before the client looks.

    A 202 that started an operation is sent once the operation finished, and a status poll
    (``operationstatus``/``operationresults``) is answered once the operations in flight finished,
    each waiting at most ``timeout`` seconds and never while a test holds operations
    (``hold_operations()``). So the client's first poll reads a terminal status and it never sleeps
    ``Retry-After`` or its ``polling_interval``; the wire is unchanged."""

    def __init__(
        self,
        app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]],
        runner: OperationRunner,
        timeout: float,
    ) -> None:
        self.app = app
        self.runner = runner
        self.timeout = timeout

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", "")).lower()
        if environ.get("REQUEST_METHOD") == "GET" and ("/operationstatus/" in path or "/operationresults/" in path):
            self._settle()
            return self.app(environ, start_response)
        accepted = False

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal accepted
            accepted = status.startswith("202") and any(k.lower() == "azure-asyncoperation" for k, _ in headers)
            return start_response(status, headers, exc_info)

        body = self.app(environ, capture)
        if accepted:
            self._settle()
        return body

    def _settle(self) -> None:
        if not _runner_paused(self.runner):
            self.runner.wait_idle(self.timeout)


class StaticTokenCredential:
    """An azure-core TokenCredential that always returns one arcext token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int(time.time()) + 3600)


class AsyncStaticTokenCredential:
    """The same for azure-core's async clients (an AsyncTokenCredential)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> AsyncStaticTokenCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None


class AdminError(RuntimeError):
    """An admin call (``/arcext/v1``) the server refused; ``status`` and ``error`` are its answer."""

    def __init__(self, method: str, url: str, status: int, error: dict[str, Any]) -> None:
        self.status = status
        self.error = error
        super().__init__(f"{method} {url} -> {status} {error.get('code', '')}: {error.get('message', error)}")


class ArcextServer:
    """Start with ``with ArcextServer() as arc:`` (or ``.start()`` / ``.stop()``).

    ``.url`` is the base URL, ``.token`` an Owner token for every subscription, ``.reset()``
    forgets every machine, operation and catalog change (tokens stay).
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = False,
        manual_clock: bool = False,
        simulate: bool = True,
        subscription_id: str = DEFAULT_SUBSCRIPTION,
        config: dict[str, Any] | None = None,
        settle_operations: float = 2.0,
        database_url: str | None = None,
    ) -> None:
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="arcext-", dir=scratch_dir()))
        self.host = host
        self.port = port
        self.tls = tls
        self.manual_clock = manual_clock
        self.simulate = simulate
        self.subscription_id = subscription_id
        self.config = {**HARNESS_CONFIG, **(config or {})}
        self.settle_operations = settle_operations
        #: the PostgreSQL store's URL (None: the embedded store in data_dir). With ARCEXT_TEST_STORE=postgres
        #: (arcext's own suites) a server without one gets a scratch database of its data directory's.
        self.database_url = database_url
        self._scratch_database = False
        self.token = ""
        self.ca_cert: Path | None = None
        self._server: ServerThread | None = None
        self._admin: requests.Session | None = None
        self.app: Flask | None = None

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> ArcextServer:
        from ..app import create_app
        from ..tls import ensure_self_signed

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        if self.database_url is None and os.environ.get("ARCEXT_TEST_STORE") == "postgres":
            from ..store.postgres import provision

            self.database_url = provision.for_directory(self.data_dir)
            self._scratch_database = True
        self.app = create_app(
            {
                "ARCEXT_DATA_DIR": str(self.data_dir),
                "ARCEXT_MANUAL_CLOCK": self.manual_clock,
                "ARCEXT_SIMULATE": self.simulate,
                "ARCEXT_DATABASE_URL": self.database_url or "",  # never the environment's: reset() clears it
                **self.config,
            }
        )
        if self.settle_operations > 0:
            self.app.wsgi_app = SettleOperations(  # type: ignore[method-assign]
                self.app.wsgi_app, self.services.resources.runner, self.settle_operations
            )
        self.token = self.create_token("Owner", "/", name="arcext-test-owner")
        context = None
        if self.tls:
            cert, key = ensure_self_signed(self.data_dir / "tls")
            self.ca_cert = cert
            context = ssl_context(cert, key)
        # a short accept-loop poll: stop() returns in milliseconds (mock_arc() starts a server per block)
        self._server = ServerThread(self.app, self.host, self.port, context, poll_interval=0.02).start()
        return self

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self.app is not None:
            self.services.close()
            self.app = None
        if self._own_dir:
            if self._scratch_database and self.database_url:
                from ..store.postgres import provision

                provision.drop(self.database_url)
                self.database_url = None
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> ArcextServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- state ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("ArcextServer is not running; call start() or use it as a context manager")
        return self._server.url

    @property
    def services(self) -> Services:
        if self.app is None:
            raise RuntimeError("ArcextServer is not running")
        svc: Services = self.app.extensions["arcext"]
        return svc

    def reset(self) -> None:
        """Forget machines, extensions, operations and catalog changes; keep tokens."""
        svc = self.services
        svc.resources.runner.resume()
        svc.resources.runner.wait_idle()
        svc.engine.reset()
        svc.store.clear(keep_tokens=True)
        svc.maintenance.reload()
        svc.fleet.clear()
        if self.app is not None and self.app.config.get("ARCEXT_SEED_CATALOG", True):
            svc.catalog.seed(svc.clock.now())

    @contextmanager
    def hold_operations(self) -> Iterator[None]:
        """Hold long-running operations in flight (resources stay Creating/Updating/Deleting and
        operation polls answer InProgress) until the block ends."""
        runner = self.services.resources.runner
        runner.pause()
        try:
            yield
        finally:
            runner.resume()

    def wait_for_operations(self, timeout: float = 10.0) -> bool:
        """Block until every long-running operation has finished."""
        return self.services.resources.runner.wait_idle(timeout)

    def create_token(self, role: str, scope: str, name: str | None = None) -> str:
        """A new token for ``role`` (Owner, Contributor, Reader) on ``scope`` (``/``,
        ``/subscriptions/<id>`` or ``/subscriptions/<id>/resourceGroups/<rg>``), as
        ``arcext token create`` makes one."""
        token, _record = self.services.tokens.create(Role.parse(role), scope, name, self.services.clock.now())
        return token

    # --- driving the world: thin calls over the admin API (/arcext/v1, the Owner token) ----------
    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the admin API: ``admin("POST", "engine/run")``; returns the JSON answer, raises
        ``AdminError`` on a 4xx/5xx."""
        if self._admin is None:
            self._admin = self.session()
        url = f"{self.url}/arcext/v1/{path.lstrip('/')}"
        response = self._admin.request(method, url, **kwargs)
        body: Any = response.json() if response.content else None
        if response.status_code >= 400:
            error = body.get("error", body) if isinstance(body, dict) else {"message": response.text}
            raise AdminError(method, url, response.status_code, error)
        return body

    def publish_version(
        self, publisher: str, extension_type: str, version: str, *, critical: bool = False
    ) -> dict[str, Any]:
        """Publish a version of an extension type (``critical``: the security fast lane); it shows in
        ExtensionMetadata at once and the engine plans its rollout (``rolloutId`` in the answer)."""
        path = f"catalog/{publisher}/{extension_type}/versions/{version}"
        record: dict[str, Any] = self.admin("PUT", path, json={"critical": critical})
        return record

    def set_extension_type(
        self, publisher: str, extension_type: str, *, auto_upgrade_supported: bool = True
    ) -> dict[str, Any]:
        """Add an extension type to the catalog or change whether it supports automatic upgrade."""
        body = {"autoUpgradeSupported": auto_upgrade_supported}
        record: dict[str, Any] = self.admin("PUT", f"catalog/{publisher}/{extension_type}", json=body)
        return record

    def advance(
        self, *, days: float = 0, hours: float = 0, minutes: float = 0, seconds: float = 0, run: bool = True
    ) -> dict[str, Any]:
        """Move the manual clock forward, then (``run=True``) run the engine until nothing more is due;
        returns the engine's summary (or the new time). Needs ``manual_clock=True``."""
        total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
        moved: dict[str, Any] = self.admin("POST", "clock/advance", json={"seconds": total})
        return self.run_engine() if run else moved

    def run_engine(self) -> dict[str, Any]:
        """Run the engine until nothing more is due now; returns what it did."""
        summary: dict[str, Any] = self.admin("POST", "engine/run")
        return summary

    def now(self) -> datetime:
        """The server's clock."""
        return parse_iso(self.admin("GET", "clock")["now"])

    def set_faults(
        self,
        machine: str,
        *,
        fail_upgrade: int | None = None,
        fail_rollback: bool | None = None,
        hang: bool | None = None,
        unreachable: bool | None = None,
        latency_ms: int | None = None,
        resource_group: str | None = None,
        subscription: str | None = None,
    ) -> dict[str, Any]:
        """Make a simulated host fail its next ``fail_upgrade`` upgrades, fail rollbacks, hang past the
        host timeout, be unreachable or answer slowly. Only the given faults are sent; no fault clears."""
        values = {
            "failUpgrade": fail_upgrade,
            "failRollback": fail_rollback,
            "hang": hang,
            "unreachable": unreachable,
            "latencyMs": latency_ms,
        }
        params = {k: v for k, v in {"resourceGroup": resource_group, "subscription": subscription}.items() if v}
        body = {k: v for k, v in values.items() if v is not None}
        answer: dict[str, Any] = self.admin("PUT", f"simulated-hosts/{machine}/faults", json=body, params=params)
        return answer

    def clear_faults(self, machine: str, **where: str) -> dict[str, Any]:
        """Remove every fault of a simulated host."""
        return self.set_faults(machine, **where)  # type: ignore[arg-type]

    def simulated_host(self, machine: str) -> list[dict[str, Any]]:
        """The simulated host's own model (installed versions, handler commands, faults)."""
        hosts: list[dict[str, Any]] = self.admin("GET", f"simulated-hosts/{machine}")["hosts"]
        return hosts

    def rollouts(self) -> list[dict[str, Any]]:
        """Every rollout: phase, batches, counts, state and next action."""
        value: list[dict[str, Any]] = self.admin("GET", "rollouts")["value"]
        return value

    def rollout(self, rollout_id: str, *, targets: bool = False) -> dict[str, Any]:
        """One rollout (``targets=True``: with the extensions of every batch)."""
        params = {"$expand": "targets"} if targets else {}
        answer: dict[str, Any] = self.admin("GET", f"rollouts/{rollout_id}", params=params)
        return answer

    def set_rollout_state(self, rollout_id: str, action: str) -> dict[str, Any]:
        """``pause``, ``resume`` or ``freeze`` a rollout."""
        answer: dict[str, Any] = self.admin("POST", f"rollouts/{rollout_id}/{action}")
        return answer

    def activity_log(
        self,
        subscription: str | None = None,
        *,
        since: datetime | str | None = None,
        filter: str | None = None,
        token: str | None = None,
    ) -> list[dict[str, Any]]:
        """The subscription's activity-log events, newest first, every page. ``filter`` adds Azure
        Monitor ``$filter`` clauses (``operationName eq '...'``, ``resourceGroupName eq 'rg'``);
        ``since`` defaults to 90 days before the server's clock."""
        start = since or (self.services.clock.now() - timedelta(days=90))
        start_text = start if isinstance(start, str) else start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        clauses = [f"eventTimestamp ge '{start_text}'"] + ([filter] if filter else [])
        sub = subscription or self.subscription_id
        url: str | None = f"{self.url}/subscriptions/{sub}/providers/Microsoft.Insights/eventtypes/management/values"
        params: dict[str, str] | None = {"api-version": ACTIVITY_API_VERSION, "$filter": " and ".join(clauses)}
        events: list[dict[str, Any]] = []
        with self.session(token) as session:
            while url:
                response = session.get(url, params=params)
                if response.status_code != 200:
                    raise AdminError("GET", url, response.status_code, response.json().get("error", {}))
                page = response.json()
                events.extend(page["value"])
                url, params = page.get("nextLink"), None
        return events

    # --- clients ------------------------------------------------------------------------------
    @property
    def verify(self) -> str | bool:
        return str(self.ca_cert) if self.ca_cert else True

    def session(self, token: str | None = None) -> requests.Session:
        """A requests session that sends the token and trusts the server's certificate."""
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token or self.token}"
        session.verify = self.verify
        # requests lets REQUESTS_CA_BUNDLE override Session.verify (psf/requests#3829); loopback needs no proxy.
        session.trust_env = False
        return session

    def sdk_client(
        self, subscription_id: str | None = None, token: str | None = None, **kwargs: Any
    ) -> HybridComputeManagementClient:
        """An unmodified azure-mgmt-hybridcompute client pointed at this server.

        Over http, azure-core refuses bearer tokens, so the key-credential policy sends the header;
        over https the SDK's own bearer-token policy is used with the server's certificate trusted."""
        from azure.core.credentials import AzureKeyCredential
        from azure.core.pipeline.policies import AzureKeyCredentialPolicy
        from azure.mgmt.hybridcompute import HybridComputeManagementClient

        value = token or self.token
        options: dict[str, Any] = {"polling_interval": 0, **kwargs}
        if self.tls:
            options.setdefault("connection_verify", str(self.ca_cert))
            options.setdefault("credential_scopes", ["https://management.azure.com/.default"])
        else:
            options.setdefault(
                "authentication_policy",
                AzureKeyCredentialPolicy(AzureKeyCredential(value), "Authorization", prefix="Bearer"),
            )
        return HybridComputeManagementClient(
            StaticTokenCredential(value), subscription_id or self.subscription_id, base_url=self.url, **options
        )

    def async_sdk_client(
        self, subscription_id: str | None = None, token: str | None = None, **kwargs: Any
    ) -> AsyncHybridComputeManagementClient:
        """The same for ``azure.mgmt.hybridcompute.aio`` (aiohttp transport); use it as
        ``async with arc.async_sdk_client() as client:``."""
        from azure.core.credentials import AzureKeyCredential
        from azure.core.pipeline.policies import AzureKeyCredentialPolicy
        from azure.mgmt.hybridcompute.aio import HybridComputeManagementClient as AsyncClient

        value = token or self.token
        options: dict[str, Any] = {"polling_interval": 0, **kwargs}
        if self.tls:
            options.setdefault("connection_verify", str(self.ca_cert))
            options.setdefault("credential_scopes", ["https://management.azure.com/.default"])
        else:
            options.setdefault(
                "authentication_policy",
                AzureKeyCredentialPolicy(AzureKeyCredential(value), "Authorization", prefix="Bearer"),
            )
        return AsyncClient(
            AsyncStaticTokenCredential(value),
            subscription_id or self.subscription_id,
            base_url=self.url,
            **options,
        )
