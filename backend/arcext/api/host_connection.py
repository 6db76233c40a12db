"""Per-machine host-connection settings for the real drivers (psrp, winrm). Placeholder blueprint."""

from __future__ import annotations

from .base import ArmBlueprint

blp = ArmBlueprint("host_connection", __name__, url_prefix="/arcext/v1", description="Host connections (psrp, winrm)")
