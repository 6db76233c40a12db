"""How ``mock_arc()`` reaches azure-core: a requests adapter that answers in-process, and the patch
on the ``send`` of azure-core's transports (``RequestsTransport``; ``AsyncioRequestsTransport`` and
``AioHttpTransport`` for ``.aio`` clients) that hands every request to the innermost active mock
unless its host passes through."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import Any, Protocol

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPResponse
from urllib3._collections import HTTPHeaderDict

from .mock_identity import Answer


class RoutedMock(Protocol):
    """What the adapter and the patch need of an active mock."""

    def passes(self, url: str) -> bool: ...

    def answer(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Answer: ...

    def transport(self, kind: str) -> Any: ...


def _body_bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    if hasattr(body, "read"):
        data = body.read()
        return data if isinstance(data, bytes) else str(data).encode()
    return b"".join(chunk if isinstance(chunk, bytes) else str(chunk).encode() for chunk in body)


class InProcessAdapter(HTTPAdapter):
    """A requests adapter that answers from the mock instead of opening a connection."""

    def __init__(self, mock: RoutedMock) -> None:
        super().__init__()
        self._mock = mock

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        method = request.method or "GET"
        url = request.url or ""
        status, reason, headers, body = self._mock.answer(method, url, dict(request.headers), _body_bytes(request.body))
        raw = HTTPResponse(
            body=io.BytesIO(body),
            headers=HTTPHeaderDict(headers),
            status=status,
            reason=reason,
            preload_content=False,
            decode_content=False,
            request_method=method,
            request_url=url,
        )
        return self.build_response(request, raw)


# --- the patch on azure-core's transports ------------------------------------------------------------
_ACTIVE: list[RoutedMock] = []
_PATCH_LOCK = threading.RLock()
_ORIGINALS: dict[tuple[type, str], Any] = {}
#: Keyword arguments AsyncioRequestsTransport.send passes on to requests; others (aiohttp's) are dropped.
_REQUESTS_KWARGS = {"stream", "proxies", "connection_verify", "connection_timeout", "connection_cert"}


def active_mock() -> RoutedMock | None:
    """The innermost active ``mock_arc()``, or None."""
    return _ACTIVE[-1] if _ACTIVE else None


def transport_classes() -> list[tuple[type, bool]]:
    try:
        from azure.core.pipeline.transport import AsyncioRequestsTransport, RequestsTransport
    except ImportError as missing:
        raise RuntimeError(
            "mock_arc() routes azure-core's transports: install azure-core (any Azure SDK client brings it, "
            "or `pip install arcext[test]`)"
        ) from missing

    classes: list[tuple[type, bool]] = [(RequestsTransport, False), (AsyncioRequestsTransport, True)]
    try:
        from azure.core.pipeline.transport import AioHttpTransport
    except ImportError:  # aiohttp is not installed: no aiohttp transport to patch
        pass
    else:
        classes.append((AioHttpTransport, True))
    return classes


def _original(cls: type) -> Any:
    return _ORIGINALS[(cls, "send")]


def _sync_send(self: Any, request: Any, **kwargs: Any) -> Any:
    from azure.core.pipeline.transport import RequestsTransport

    mock = active_mock()
    if mock is None or mock.passes(request.url):
        return _original(RequestsTransport)(self, request, **kwargs)
    return _original(RequestsTransport)(mock.transport("sync"), request, **kwargs)


def _make_async_send(cls: type) -> Callable[..., Any]:
    async def send(self: Any, request: Any, **kwargs: Any) -> Any:
        from azure.core.pipeline.transport import AsyncioRequestsTransport

        mock = active_mock()
        if mock is None or mock.passes(request.url):
            return await _original(cls)(self, request, **kwargs)
        options = {k: v for k, v in kwargs.items() if k in _REQUESTS_KWARGS}
        return await _original(AsyncioRequestsTransport)(mock.transport("async"), request, **options)

    return send


def activate(mock: RoutedMock) -> None:
    with _PATCH_LOCK:
        if not _ACTIVE:
            for cls, is_async in transport_classes():
                _ORIGINALS[(cls, "send")] = cls.__dict__["send"]
                cls.send = _make_async_send(cls) if is_async else _sync_send  # type: ignore[attr-defined]
        _ACTIVE.append(mock)


def deactivate(mock: RoutedMock) -> None:
    with _PATCH_LOCK:
        if mock in _ACTIVE:
            _ACTIVE.remove(mock)
        if not _ACTIVE:
            for (cls, name), original in _ORIGINALS.items():
                setattr(cls, name, original)
            _ORIGINALS.clear()
