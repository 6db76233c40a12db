"""Machine, MachineUpdate and the machine list page.

Machines are registered by an operator rather than by an agent, so the properties an Arc agent
would report (osName, machineFqdn, …) are writable here."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from .common import ArmSchema, StrictString, TrackedResourceSchema, json_object, tags_field
from .extension import MachineExtensionSchema


class IdentitySchema(ArmSchema):
    type = StrictString(validate=validate.OneOf(["SystemAssigned", "None"]))
    principalId = fields.String(dump_only=True)
    tenantId = fields.String(dump_only=True)


_WRITABLE_STRINGS = (
    "osType",
    "osName",
    "osVersion",
    "osSku",
    "osEdition",
    "vmId",
    "vmUuid",
    "displayName",
    "machineFqdn",
    "domainName",
    "adFqdn",
    "dnsFqdn",
    "clientPublicKey",
    "agentVersion",
    "privateLinkScopeResourceId",
    "parentClusterResourceId",
    "mssqlDiscovered",
    "identityKeyStore",
    "tpmEkCertificate",
    "hardwareResourceId",
)
_WRITABLE_OBJECTS = (
    "locationData",
    "osProfile",
    "cloudMetadata",
    "agentUpgrade",
    "licenseProfile",
    "serviceStatuses",
    "networkProfile",
    "hardwareProfile",
    "storageProfile",
    "firmwareProfile",
    "detectedProperties",
    "agentConfiguration",
)


def _machine_properties_fields() -> dict[str, fields.Field[Any]]:
    out: dict[str, fields.Field[Any]] = {name: StrictString() for name in _WRITABLE_STRINGS}
    out.update({name: json_object() for name in _WRITABLE_OBJECTS})
    out["provisioningState"] = fields.String(dump_only=True)
    out["status"] = fields.String(dump_only=True)
    out["lastStatusChange"] = fields.String(dump_only=True)
    out["errorDetails"] = fields.List(fields.Dict(), dump_only=True)
    return out


MachinePropertiesSchema = ArmSchema.from_dict(_machine_properties_fields(), name="MachineProperties")


class MachineSchema(TrackedResourceSchema):
    identity = fields.Nested(IdentitySchema)
    kind = StrictString(validate=validate.OneOf(["AVS", "HCI", "SCVMM", "VMware", "EPS", "GCP", "AWS"]))
    properties = fields.Nested(MachinePropertiesSchema, load_default=dict)
    resources = fields.List(fields.Nested(MachineExtensionSchema), dump_only=True)


class MachineUpdateSchema(ArmSchema):
    tags = tags_field()
    identity = fields.Nested(IdentitySchema)
    kind = StrictString(validate=validate.OneOf(["AVS", "HCI", "SCVMM", "VMware", "EPS", "GCP", "AWS"]))
    properties = fields.Nested(MachinePropertiesSchema, load_default=dict)


class MachineListSchema(Schema):
    value = fields.List(fields.Nested(MachineSchema))
    nextLink = fields.String()
