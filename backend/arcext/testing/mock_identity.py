"""Microsoft Entra ID and managed identity (IMDS), answered locally inside ``mock_arc()``: every
token request gets an arcext token (the ``issued`` callable picks it by client id), so azure-identity
credentials work unchanged and nothing leaves the process."""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

#: Microsoft Entra ID authority hosts: token requests answered locally.
LOGIN_HOSTS = ("login.microsoftonline.com", "login.chinacloudapi.cn", "login.microsoftonline.us")
#: The Azure Instance Metadata Service (ManagedIdentityCredential).
IMDS_HOST = "169.254.169.254"
#: Made-up service principal, set while a mock is active unless the variable is already set.
FAKE_ENVIRONMENT = {
    "AZURE_TENANT_ID": "72f988bf-0000-0000-0000-00000000a7c0",
    "AZURE_CLIENT_ID": "00000000-0000-0000-0000-0000000c1e47",
    "AZURE_CLIENT_SECRET": "arcext-mock-secret",
}
TOKEN_LIFETIME = 3600  # seconds

#: (status, reason, headers, body) of one answered request
Answer = tuple[int, str, list[tuple[str, str]], bytes]
#: the access token issued to a client id (None: no client id in the request)
Issuer = Callable[[str | None], str]


def json_answer(status: int, body: dict[str, Any], reason: str = "OK") -> Answer:
    data = json.dumps(body).encode()
    return (
        status,
        reason,
        [("Content-Type", "application/json; charset=utf-8"), ("Content-Length", str(len(data)))],
        data,
    )


def authority_host() -> str:
    """The host of ``AZURE_AUTHORITY_HOST`` (a private cloud's authority), lower-case; "" when unset."""
    value = os.environ.get("AZURE_AUTHORITY_HOST", "")
    if not value:
        return ""
    return (urllib.parse.urlsplit(value if "//" in value else f"https://{value}").hostname or "").lower()


def token_endpoint(method: str, parts: urllib.parse.SplitResult, body: bytes, issued: Issuer) -> Answer:
    """Microsoft Entra ID: the token endpoints (v1 and v2.0), the OpenID configuration and instance
    discovery that MSAL reads first."""
    authority = f"{parts.scheme}://{parts.netloc}"
    segments = [s for s in parts.path.split("/") if s]
    tenant = segments[0] if segments else "common"
    path = parts.path.lower()
    if method == "POST" and path.endswith(("/oauth2/v2.0/token", "/oauth2/token")):
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        client_id = next(iter(form.get("client_id", [])), None)
        answer: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME,
            "ext_expires_in": TOKEN_LIFETIME,
            "access_token": issued(client_id),
        }
        if "/v2.0/" not in path:  # the v1 endpoint's shape
            answer["expires_on"] = str(int(time.time()) + TOKEN_LIFETIME)
            answer["resource"] = (form.get("resource") or ["https://management.azure.com/"])[0]
        return json_answer(200, answer)
    if path.endswith("/.well-known/openid-configuration"):
        base = f"{authority}/{tenant}"
        return json_answer(
            200,
            {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "jwks_uri": f"{authority}/{tenant}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                "tenant_region_scope": "NA",
                "cloud_instance_name": "microsoftonline.com",
            },
        )
    if path.endswith("/discovery/instance"):
        return json_answer(
            200,
            {
                "tenant_discovery_endpoint": f"{authority}/{tenant}/v2.0/.well-known/openid-configuration",
                "api-version": "1.1",
                "metadata": [
                    {
                        "preferred_network": parts.netloc,
                        "preferred_cache": parts.netloc,
                        "aliases": [parts.netloc],
                    }
                ],
            },
        )
    return json_answer(
        404,
        {"error": "not_found", "error_description": f"mock_arc(): no local answer for {method} {parts.path}"},
        "Not Found",
    )


def imds(parts: urllib.parse.SplitResult, headers: dict[str, str], issued: Issuer) -> Answer:
    """The Instance Metadata Service's managed-identity token endpoint."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if lowered.get("metadata", "").lower() != "true" or "/metadata/identity/oauth2/token" not in parts.path:
        return json_answer(
            400,
            {"error": "invalid_request", "error_description": "Required metadata header not specified"},
            "Bad Request",
        )
    query = urllib.parse.parse_qs(parts.query)
    client_id = next(iter(query.get("client_id", [])), None)
    now = int(time.time())
    return json_answer(
        200,
        {
            "access_token": issued(client_id),
            "expires_in": str(TOKEN_LIFETIME),
            "expires_on": str(now + TOKEN_LIFETIME),
            "not_before": str(now),
            "resource": (query.get("resource") or ["https://management.azure.com/"])[0],
            "token_type": "Bearer",
        },
    )
