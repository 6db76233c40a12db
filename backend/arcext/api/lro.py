"""Answers for long-running operations: 202 with Azure-AsyncOperation, Location and Retry-After."""

from __future__ import annotations

from urllib.parse import quote

from flask import Response, current_app, request

from ..records import OperationRecord
from .urls import public_base_url

PROVIDER_PREFIX = "/subscriptions/{sub}/providers/Microsoft.HybridCompute/locations/{loc}"


def location_slug(location: str) -> str:
    return location.replace(" ", "").lower() or "global"


def operation_urls(op: OperationRecord) -> tuple[str, str]:
    api_version = request.args.get("api-version", "")
    base = public_base_url() + PROVIDER_PREFIX.format(sub=op["subscription"], loc=quote(location_slug(op["location"])))
    suffix = f"{op['id']}?api-version={quote(api_version)}"
    return f"{base}/operationstatus/{suffix}", f"{base}/operationresults/{suffix}"


def accepted(op: OperationRecord) -> Response:
    status_url, result_url = operation_urls(op)
    response = Response(status=202)
    del response.headers["Content-Type"]  # no body, so no (text/html) media type
    response.headers["Azure-AsyncOperation"] = status_url
    response.headers["Location"] = result_url
    response.headers["Retry-After"] = str(current_app.config["ARCEXT_RETRY_AFTER"])
    return response
