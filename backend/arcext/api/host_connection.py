"""Per-machine host-connection settings for the real drivers (``driver``: psrp, the default, over
PowerShell Remoting with pypsrp; or winrm, over a WinRS cmd shell with pywinrm, for hosts that do not
allow PSRP):
PUT/GET/DELETE /arcext/v1/subscriptions/{sub}/resourceGroups/{rg}/machines/{m}/hostConnection.

The auth hook applies ARM scope rules to /arcext/v1/subscriptions/... paths: reading needs Reader on the
machine's scope, changing or deleting needs Owner there (a host connection names where stored Windows credentials
go and lets the server connect to any address). A change of the endpoint must carry the secret again.
Credentials are accepted, sealed, and never returned.
"""

from __future__ import annotations

from typing import Any

from ..hosts.connections import HostConnectionService
from ..ids import machine_key
from ..request_context import services
from ..schemas.admin import HostConnectionViewSchema
from .base import ArmBlueprint, ArmMethodView, empty
from .jsonbody import request_object

blp = ArmBlueprint("host_connection", __name__, url_prefix="/arcext/v1", description="Host connections (psrp, winrm)")

HOST_CONNECTION = (
    "/subscriptions/<subscription_id>/resourceGroups/<resource_group>/machines/<machine_name>/hostConnection"
)


def _service() -> HostConnectionService:
    return services().host_connections


@blp.route(HOST_CONNECTION)
class HostConnection(ArmMethodView):
    @blp.alt_response(200, schema=HostConnectionViewSchema, description="The public settings")
    def get(self, subscription_id: str, resource_group: str, machine_name: str) -> Any:
        """The machine's host-connection settings (never its credentials)"""
        return _service().get(machine_key(subscription_id, resource_group, machine_name))

    @blp.alt_response(200, schema=HostConnectionViewSchema, description="Changed")
    @blp.alt_response(201, schema=HostConnectionViewSchema, description="Created")
    def put(self, subscription_id: str, resource_group: str, machine_name: str) -> Any:
        """Set how arcext reaches the Windows host: address, port, transport, auth, credentials, JEA
        configuration, certificate validation, extensions allow/block list, handler timeouts"""
        body = request_object()
        key = machine_key(subscription_id, resource_group, machine_name)
        view, created = _service().put(key, body, services().clock.now())
        return view, 201 if created else 200

    @blp.alt_response(200, description="Deleted (no body)")
    @blp.alt_response(204, description="There was none (no body)")
    def delete(self, subscription_id: str, resource_group: str, machine_name: str) -> Any:
        """Forget the host connection (the machine is then a record-only or simulated host again)"""
        deleted = _service().delete(machine_key(subscription_id, resource_group, machine_name))
        return empty(200) if deleted else empty(204)
