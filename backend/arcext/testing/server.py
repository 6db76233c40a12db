"""ArcextServer: a real arcext server on a free port, in a thread of the test process."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import requests

from ..auth import Role
from ..services import Services
from ..serving import ServerThread, ssl_context

if TYPE_CHECKING:
    from azure.mgmt.hybridcompute import HybridComputeManagementClient
    from flask import Flask

DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"


class StaticTokenCredential:
    """An azure-core TokenCredential that always returns one arcext token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int(time.time()) + 3600)


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
    ) -> None:
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="arcext-"))
        self.host = host
        self.port = port
        self.tls = tls
        self.manual_clock = manual_clock
        self.simulate = simulate
        self.subscription_id = subscription_id
        self.config = config or {}
        self.token = ""
        self.ca_cert: Path | None = None
        self._server: ServerThread | None = None
        self.app: Flask | None = None

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> ArcextServer:
        from ..app import create_app
        from ..tls import ensure_self_signed

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.app = create_app(
            {
                "ARCEXT_DATA_DIR": str(self.data_dir),
                "ARCEXT_MANUAL_CLOCK": self.manual_clock,
                "ARCEXT_SIMULATE": self.simulate,
                **self.config,
            }
        )
        self.token = self.create_token("Owner", "/", name="arcext-test-owner")
        context = None
        if self.tls:
            cert, key = ensure_self_signed(self.data_dir / "tls")
            self.ca_cert = cert
            context = ssl_context(cert, key)
        self._server = ServerThread(self.app, self.host, self.port, context).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self.app is not None:
            self.services.close()
            self.app = None
        if self._own_dir:
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
        svc.fleet.clear()
        if self.app is not None and self.app.config.get("ARCEXT_SEED_CATALOG", True):
            svc.catalog.seed(svc.clock.now())

    def wait_for_operations(self, timeout: float = 10.0) -> bool:
        """Block until every long-running operation has finished."""
        return self.services.resources.runner.wait_idle(timeout)

    def create_token(self, role: str, scope: str, name: str | None = None) -> str:
        token, _record = self.services.tokens.create(Role.parse(role), scope, name, self.services.clock.now())
        return token

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
