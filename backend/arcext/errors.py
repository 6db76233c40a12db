"""ARM-style errors: one exception type and one factory per error code (Azurite's pattern).

Domain code raises these; the HTTP layer renders them as
``{"error": {"code", "message", "target"?, "details"?}}``. Nothing here imports Flask.
"""

from __future__ import annotations

from typing import Any

from .records import ExtensionRecord


class ArmError(Exception):
    """An error the API reports to the caller with an HTTP status and an ARM error code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        target: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.target = target
        self.details = details
        self.headers = headers or {}

    def to_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target:
            error["target"] = self.target
        if self.details:
            error["details"] = self.details
        return {"error": error}


def missing_api_version() -> ArmError:
    return ArmError(
        400,
        "MissingApiVersionParameter",
        "The api-version query parameter (?api-version=) is required for all requests.",
        target="api-version",
    )


def invalid_request_content(message: str, target: str | None = None) -> ArmError:
    return ArmError(
        400,
        "InvalidRequestContent",
        f"The request content was invalid and could not be deserialized: {message}",
        target=target,
    )


def invalid_request_format(message: str) -> ArmError:
    return ArmError(400, "InvalidRequestFormat", message)


def invalid_parameter(message: str, target: str | None = None) -> ArmError:
    return ArmError(400, "InvalidParameter", message, target=target)


def invalid_resource_name(kind: str, name: str, rule: str, target: str) -> ArmError:
    return ArmError(
        400,
        "InvalidResourceName",
        f"The {kind} name '{name}' is not valid: {rule}",
        target=target,
    )


def location_required() -> ArmError:
    return ArmError(
        400,
        "LocationRequired",
        'The location property is required for this definition. Add "location" (e.g. "eastus") to the request body.',
        target="location",
    )


def request_too_large(limit: int) -> ArmError:
    return ArmError(
        413,
        "RequestEntityTooLarge",
        f"The request body is larger than the {limit} bytes this server accepts.",
    )


def resource_not_found(resource_type: str, name: str, resource_group: str | None = None) -> ArmError:
    where = f" under resource group '{resource_group}'" if resource_group else ""
    return ArmError(
        404,
        "ResourceNotFound",
        f"The Resource '{resource_type}/{name}'{where} was not found.",
    )


def parent_resource_not_found(action: str, child_type: str, parent_id: str) -> ArmError:
    return ArmError(
        404,
        "ParentResourceNotFound",
        f"Failed to perform '{action}' on resource(s) of type '{child_type}', "
        f"because the parent resource '{parent_id}' could not be found.",
    )


def operation_not_found(operation_id: str) -> ArmError:
    return ArmError(404, "OperationNotFound", f"The operation '{operation_id}' was not found.")


def not_found_path(path: str) -> ArmError:
    return ArmError(
        404,
        "NotFound",
        f"No route matches '{path}'. Check the resource path against the Microsoft.HybridCompute API.",
    )


def method_not_allowed(method: str, path: str) -> ArmError:
    return ArmError(405, "MethodNotAllowed", f"The HTTP method '{method}' is not supported at '{path}'.")


def another_operation_in_progress(resource_id: str, operation_id: str) -> ArmError:
    return ArmError(
        409,
        "AnotherOperationInProgress",
        f"Operation '{operation_id}' is still running on '{resource_id}'. "
        "Wait for it to finish (poll its Azure-AsyncOperation URL), then retry.",
        target=resource_id,
    )


def extension_busy(record: ExtensionRecord) -> ArmError:
    """The 409 for a write to an extension that has an operation in flight: its own upgrade, or another one."""
    job = record.get("upgrade") or {}
    resource_id = str(record["resource"]["id"])
    if job.get("operationId") and job.get("operationId") == record.get("operation"):
        return upgrade_in_progress(resource_id, str(job.get("toVersion")))
    return another_operation_in_progress(resource_id, str(record["operation"]))


def upgrade_in_progress(resource_id: str, to_version: str) -> ArmError:
    return ArmError(
        409,
        "AnotherOperationInProgress",
        f"An automatic upgrade of '{resource_id}' to {to_version} is in progress. Retry when its "
        "provisioningState is no longer Updating.",
        target=resource_id,
    )


def conflict(message: str, target: str | None = None) -> ArmError:
    return ArmError(409, "Conflict", message, target=target)


def authentication_failed(message: str) -> ArmError:
    return ArmError(
        401,
        "AuthenticationFailed",
        message,
        headers={"WWW-Authenticate": 'Bearer realm="arcext", error="invalid_token"'},
    )


def authorization_failed(principal: str, action: str, scope: str) -> ArmError:
    return ArmError(
        403,
        "AuthorizationFailed",
        f"The client '{principal}' does not have authorization to perform action '{action}' over scope "
        f"'{scope}' or the scope is invalid.",
    )


def unsupported_media_type(content_type: str) -> ArmError:
    return ArmError(
        415,
        "UnsupportedMediaType",
        f"The content media type '{content_type}' is not supported. Only 'application/json' is supported.",
    )


def bad_request(message: str, target: str | None = None) -> ArmError:
    return ArmError(400, "BadRequest", message, target=target)


def insufficient_storage(retry_after: int) -> ArmError:
    return ArmError(
        507,
        "InsufficientStorage",
        "The server has no space left to record this change, so it was not made (nothing already acknowledged "
        "is lost). Retry once an operator has freed space on the data directory's disk and restarted arcext.",
        headers={"Retry-After": str(retry_after)},
    )


def storage_unavailable(retry_after: int) -> ArmError:
    return ArmError(
        503,
        "ServiceUnavailable",
        "The server could not record this change (its data directory failed a write), so it was not made; "
        "nothing already acknowledged is lost. Retry later.",
        headers={"Retry-After": str(retry_after)},
    )


def database_unavailable(retry_after: int) -> ArmError:
    """The PostgreSQL store's connection failed under a request (a database restart or fail-over, a network cut):
    a 503 the Azure SDK and az retry by themselves, after which the pool hands out a fresh connection."""
    return ArmError(
        503,
        "ServiceUnavailable",
        "The server lost its connection to its database while handling this request, so the request was not "
        "carried out. Retry it: the next attempt uses a new connection. If it was a write, read the resource "
        "first: a change interrupted as it was being committed may have been made.",
        headers={"Retry-After": str(retry_after)},
    )


def uri_too_long(limit: int) -> ArmError:
    return ArmError(414, "RequestUriTooLong", f"The request URL is longer than the {limit} bytes this server accepts.")


def internal_error(request_id: str) -> ArmError:
    return ArmError(
        500,
        "InternalServerError",
        f"The server encountered an internal error. Quote request id '{request_id}' when reporting it.",
    )
