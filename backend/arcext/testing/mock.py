"""``mock_arc()``: unchanged Azure SDK code talks to an in-process arcext, as ``@mock_aws`` does for boto3.

moto registers a handler on botocore's own event hook (``before-send``), so a request never reaches
the network. azure-core has no such hook: every Azure SDK client, and azure-identity's token
requests, end in a transport's ``send``. Inside ``mock_arc()`` the ``send`` of azure-core's
transports (``RequestsTransport`` for sync clients; ``AioHttpTransport`` and
``AsyncioRequestsTransport`` for ``.aio`` clients) hands the request to azure-core's own requests
transport over a session whose adapter answers in-process:

- the ARM endpoint (``https://management.azure.com`` and the sovereign clouds') and the server's own
  URL go to arcext's WSGI app in the calling process (a function call, no socket);
- Microsoft Entra ID token requests (``login.microsoftonline.com``…) and managed identity (IMDS)
  are answered locally with an arcext token (the server's Owner token unless told otherwise);
- a request for any other host raises :class:`UnmockedHostError` naming the host.

azure-core still builds, signs, retries, polls and parses exactly as against Azure: only the last
step, the socket, is replaced. Clients created before the block are mocked too (the patch is on the
transport classes); a transport of another kind that you pass yourself is not. Like moto, it sets
made-up ``AZURE_CLIENT_ID``/``AZURE_TENANT_ID``/``AZURE_CLIENT_SECRET`` while active (unless set) so
``DefaultAzureCredential`` takes its environment route and never runs ``az`` or reads a cache.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
import unittest
import urllib.parse
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar, cast, overload

import requests
from werkzeug.test import EnvironBuilder, run_wsgi_app

from .mock_identity import (
    FAKE_ENVIRONMENT,
    IMDS_HOST,
    LOGIN_HOSTS,
    Answer,
    authority_host,
    imds,
    token_endpoint,
)
from .mock_transport import InProcessAdapter, activate, active_mock, deactivate, transport_classes
from .server import ArcextServer

F = TypeVar("F", bound=Callable[..., Any])

#: Hosts of Azure Resource Manager (public cloud, China, US Government): routed to arcext.
ARM_HOSTS = ("management.azure.com", "management.chinacloudapi.cn", "management.usgovcloudapi.net")


class UnmockedHostError(ConnectionRefusedError):
    """A request inside ``mock_arc()`` for a host that is neither ARM nor a token endpoint.

    Not an azure-core error on purpose: azure-core would retry it with back-off; this fails at once."""

    def __init__(self, method: str, url: str, host: str) -> None:
        self.host = host
        self.url = url
        super().__init__(
            f"mock_arc(): refused {method} {url}: {host} is not mocked (nothing leaves the process inside "
            f"mock_arc(); it answers ARM at {', '.join(ARM_HOSTS)} and tokens at {', '.join(LOGIN_HOSTS)}; "
            f"pass passthrough=[{host!r}] to let {host} through)"
        )


class MockArc:
    """The object ``mock_arc()`` returns: a context manager (``with``/``async with``) and a decorator.

    ``.server`` is the ``ArcextServer`` behind it; its helpers (``publish_version``, ``advance``,
    ``set_faults``, ``activity_log``, ``rollouts``, ``create_token``, ``reset``…) are available on the
    mock too. ``.token`` is the access token the local token endpoints issue (the server's Owner
    token unless set); ``.identities`` maps a client id to the token issued to it.
    """

    def __init__(
        self,
        server: ArcextServer | None = None,
        *,
        arm_hosts: Iterable[str] = ARM_HOSTS,
        login_hosts: Iterable[str] = LOGIN_HOSTS,
        passthrough: Iterable[str] = (),
        environment: bool = True,
        **server_options: Any,
    ) -> None:
        self._given_server = server
        self._server_options = server_options
        self.arm_hosts = {h.lower() for h in arm_hosts}
        self.login_hosts = {h.lower() for h in login_hosts}
        self.passthrough = {h.lower() for h in passthrough}
        self.environment = environment
        self.identities: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []  # (method, url) of every request answered, in order
        self._token: str | None = None
        self._server: ArcextServer | None = None
        self._owns_server = False
        self._session: requests.Session | None = None
        self._saved_env: dict[str, str | None] = {}
        self._transports: dict[str, Any] = {}
        self._lock = threading.Lock()

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> MockArc:
        if self._server is not None:
            raise RuntimeError("this mock_arc() is already active")
        transport_classes()  # fails before anything changed when azure-core is missing
        if self._given_server is None:
            self._server = ArcextServer(**self._server_options).start()
            self._owns_server = True
        else:
            self._server = self._given_server
        session = requests.Session()
        session.trust_env = False
        adapter = InProcessAdapter(self)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._session = session
        if self.environment:
            for name, value in FAKE_ENVIRONMENT.items():
                self._saved_env[name] = os.environ.get(name)
                os.environ.setdefault(name, value)
        activate(self)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        deactivate(self)
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        if self._session is not None:
            self._session.close()
            self._session = None
        self._transports.clear()
        if self._owns_server:
            self._server.stop()
        self._server = None
        self._owns_server = False

    def __enter__(self) -> MockArc:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> MockArc:
        return self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __call__(self, func: F) -> F:
        """As a decorator: each call of ``func`` runs inside a fresh mock (a new, empty arcext).

        On a class, every ``test*`` method is wrapped so; on a ``unittest.TestCase``, the mock starts
        in ``setUp`` and stops at cleanup, so ``setUp`` and the test share it (as moto does)."""
        options = {
            "arm_hosts": self.arm_hosts,
            "login_hosts": self.login_hosts,
            "passthrough": self.passthrough,
            "environment": self.environment,
            **self._server_options,
        }
        if isinstance(func, type):
            return self._decorate_class(func, options)  # type: ignore[return-value]
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with MockArc(self._given_server, **options):
                    return await func(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with MockArc(self._given_server, **options):
                return func(*args, **kwargs)

        return run  # type: ignore[return-value]

    def _decorate_class(self, cls: type, options: dict[str, Any]) -> type:
        if issubclass(cls, unittest.TestCase):
            set_up = cls.setUp
            given = self._given_server

            @functools.wraps(set_up)
            def set_up_mocked(case: unittest.TestCase) -> None:
                mock = MockArc(given, **options).start()
                case.addCleanup(mock.stop)
                set_up(case)

            cls.setUp = set_up_mocked  # type: ignore[method-assign,assignment]
            return cls
        for name, attribute in list(vars(cls).items()):
            if name.startswith("test") and inspect.isfunction(attribute):
                setattr(cls, name, self(attribute))
        return cls

    # --- state --------------------------------------------------------------------------------
    @property
    def server(self) -> ArcextServer:
        if self._server is None:
            raise RuntimeError("mock_arc() is not active; use it as `with mock_arc() as arc:`")
        return self._server

    @property
    def token(self) -> str:
        """The access token issued to any credential (the server's Owner token unless set)."""
        return self._token or self.server.token

    @token.setter
    def token(self, value: str | None) -> None:
        self._token = value

    @property
    def subscription_id(self) -> str:
        return self.server.subscription_id

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.server, name)

    # --- routing ------------------------------------------------------------------------------
    def passes(self, url: str) -> bool:
        host = (urllib.parse.urlsplit(url).hostname or "").lower()
        return host in self.passthrough

    def answer(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Answer:
        """Answer one request in-process (the adapter calls this)."""
        parts = urllib.parse.urlsplit(url)
        host = (parts.hostname or "").lower()
        server = self.server
        own = urllib.parse.urlsplit(server.url).netloc.lower()
        with self._lock:
            self.requests.append((method, url))
        if host in self.arm_hosts or parts.netloc.lower() == own:
            return self._wsgi(method, parts, headers, body)
        if host in self.login_hosts or host == authority_host():
            return token_endpoint(method, parts, body, self._issued)
        if host == IMDS_HOST:
            return imds(parts, headers, self._issued)
        raise UnmockedHostError(method, url, parts.netloc or host)

    def _wsgi(self, method: str, parts: urllib.parse.SplitResult, headers: dict[str, str], body: bytes) -> Answer:
        app = self.server.app
        assert app is not None
        builder = EnvironBuilder(
            path=urllib.parse.unquote(parts.path) or "/",
            base_url=f"{parts.scheme}://{parts.netloc}",
            query_string=parts.query,
            method=method,
            # the body is whole here: a chunked upload's framing header would make werkzeug re-read it
            headers=[(k, v) for k, v in headers.items() if k.lower() != "transfer-encoding"],
            data=body,
        )
        try:
            environ = builder.get_environ()
        finally:
            builder.close()
        environ["REMOTE_ADDR"] = "127.0.0.1"
        # The app builds absolute URLs from its own address (never the Host header): give it the
        # harness server's, which _present_as then shows as the origin the client called.
        own_url = urllib.parse.urlsplit(self.server.url)
        environ["wsgi.url_scheme"] = own_url.scheme
        environ["SERVER_NAME"] = own_url.hostname or "127.0.0.1"
        environ["SERVER_PORT"] = str(own_url.port or (443 if own_url.scheme == "https" else 80))
        app_iter, status, response_headers = run_wsgi_app(app, environ, buffered=True)
        try:
            data = b"".join(app_iter)
        finally:
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()
        code, _, reason = status.partition(" ")
        answer_headers = list(response_headers.items())
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin.lower() != self.server.url.lower():
            answer_headers, data = _present_as(self.server.url, origin, answer_headers, data)
        return int(code), reason, answer_headers, data

    # --- Microsoft Entra ID and managed identity, answered locally ------------------------------
    def _issued(self, client_id: str | None) -> str:
        return self.identities.get(client_id or "", self.token)

    # --- azure-core transports that answer in-process -------------------------------------------
    def transport(self, kind: str) -> Any:
        """azure-core's own requests transports (``sync``/``async``) over the in-process session."""
        with self._lock:
            found = self._transports.get(kind)
            if found is None:
                from azure.core.pipeline.transport import AsyncioRequestsTransport, RequestsTransport

                cls = RequestsTransport if kind == "sync" else AsyncioRequestsTransport
                found = self._transports[kind] = cls(session=self._session, session_owner=False)
            return found


def _present_as(
    server_url: str, origin: str, headers: list[tuple[str, str]], body: bytes
) -> tuple[list[tuple[str, str]], bytes]:
    """Show the server as the origin the client called (as a reverse proxy rewrites Location): a
    server that builds absolute URLs from its configured public URL (``--public-url``) would send
    the client's polls and nextLinks to ``http://127.0.0.1:port``, which azure-core's bearer-token
    policy refuses (not https) and which is not the endpoint the code under test knows."""
    old, new = server_url.encode(), origin.encode()
    rewritten = [
        (k, v.replace(server_url, origin) if k.lower() in ("location", "azure-asyncoperation") else v)
        for k, v in headers
    ]
    if old in body:
        body = body.replace(old, new)
        rewritten = [(k, str(len(body)) if k.lower() == "content-length" else v) for k, v in rewritten]
    return rewritten, body


def current_mock() -> MockArc | None:
    """The innermost active ``mock_arc()``, or None."""
    return cast("MockArc | None", active_mock())


@overload
def mock_arc(server: F) -> F: ...


@overload
def mock_arc(server: ArcextServer | None = None, **options: Any) -> MockArc: ...


def mock_arc(server: Any = None, **options: Any) -> Any:
    """Route unchanged Azure SDK code to an in-process arcext (context manager or decorator).

    ``with mock_arc() as arc:`` starts a fresh arcext for the block (``ArcextServer`` options such as
    ``manual_clock=True`` pass through); ``mock_arc(server)`` uses a running one (the
    ``arcext_mock`` fixture does, with the session's server). Options: ``arm_hosts``,
    ``login_hosts``, ``passthrough`` (hosts let through to the network), ``environment`` (set the
    made-up ``AZURE_*`` service principal). ``@mock_arc`` and ``@mock_arc()`` both decorate."""
    if server is not None and not isinstance(server, ArcextServer) and callable(server):
        return MockArc(**options)(server)  # bare @mock_arc
    return MockArc(server, **options)
