"""Absolute URLs in responses (Azure-AsyncOperation, Location, nextLink) start with the server's public base
URL: ``ARCEXT_PUBLIC_URL`` (``arcext serve --public-url``, by default made from --host, --port and TLS), or, when
none is configured, the address the server itself listens on. Never the request's Host header (or any
X-Forwarded-* header): a poller follows these URLs with its bearer token, so they must not point anywhere a
request can choose (issue #10, finding 6)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app, request


def validate_public_url(url: str) -> str:
    """The base URL without a trailing slash; ValueError if it is not http(s)://host[:port][/path]."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"'{url}' is not a base URL: use http(s)://host[:port][/path]")
    if any(c.isspace() for c in url.strip()) or "@" in parts.netloc:
        raise ValueError(f"'{url}' is not a base URL: use http(s)://host[:port][/path]")
    return url.strip().rstrip("/")


def host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def public_base_url() -> str:
    configured = str(current_app.config.get("ARCEXT_PUBLIC_URL") or "")
    if configured:
        return configured.rstrip("/")
    environ = request.environ
    scheme = environ.get("wsgi.url_scheme", "http")
    port = str(environ["SERVER_PORT"])
    default = (scheme, port) in (("http", "80"), ("https", "443"))
    return f"{scheme}://{host_for_url(str(environ['SERVER_NAME']))}{'' if default else ':' + port}"
