"""Wire shapes of the arcext-only surface documented for clients (health, packages, host connections)."""

from __future__ import annotations

from marshmallow import INCLUDE, Schema, fields


class _Open(Schema):
    class Meta:
        unknown = INCLUDE


class HealthSchema(_Open):
    status = fields.String(
        metadata={
            "description": '"ok"; "stalled" (503) while a background loop is stuck; "waiting" while one has waited '
            "past the watchdog's bound for the database"
        }
    )
    waitingForDatabase = fields.List(
        fields.String(), metadata={"description": 'The loops waiting for the database (with "waiting").'}
    )
    stalled = fields.List(
        fields.String(),
        metadata={"description": 'The loops that stopped coming round (with "stalled"), e.g. "engine scheduler".'},
    )
    machines = fields.Integer(metadata={"description": "How many machines exist (only for an Owner's token)."})


class PackageSchema(_Open):
    publisher = fields.String()
    type = fields.String()
    version = fields.String()
    sha256 = fields.String()
    size = fields.Integer()
    handlerManifest = fields.Dict()
    uploadedAt = fields.String()


class HostConnectionViewSchema(_Open):
    """The public settings of a host connection; credentials are write-only and never returned."""

    driver = fields.String()
    address = fields.String()
    port = fields.Integer()
    transport = fields.String()
    auth = fields.String()
    username = fields.String(allow_none=True)
    certValidation = fields.Boolean()
    caCertificatePath = fields.String(allow_none=True)
    configurationName = fields.String()
    operationTimeoutSeconds = fields.Integer()
    connectionTimeoutSeconds = fields.Integer()
    extensionsAllowList = fields.List(fields.String())
    extensionsBlockList = fields.List(fields.String())
    handlerTimeoutSeconds = fields.Dict(keys=fields.String(), values=fields.Integer())
    statusDeadlineSeconds = fields.Integer()
    heartbeatMaxAgeSeconds = fields.Integer()
    protectedSettingsCertificatePem = fields.String(allow_none=True)
    updatedAt = fields.String()
    hasCredentials = fields.Boolean()
