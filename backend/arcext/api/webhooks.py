"""Webhooks (Owner): ``PUT/GET/DELETE /arcext/v1/webhooks/{name}``, the list, and each one's deliveries.

The secret is write-only: stored sealed, never returned (a PUT without one makes one and returns it once).
Target URLs are any http(s) URL an Owner names, so the server will POST to internal addresses too: see
docs/operations.md ("Webhooks and SSRF") for what is done about it and what an operator should add.
"""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate

from .. import errors
from ..request_context import services
from ..schemas.common import ArmSchema
from ..webhooks import EVENT_TYPES, WebhookError
from .base import ArmBlueprint, ArmMethodView

blp = ArmBlueprint("webhooks", __name__, url_prefix="/arcext/v1", description="Signed webhooks (Owner role)")


class WebhookBodySchema(ArmSchema):
    url = fields.String(required=True, validate=validate.Length(min=1, max=2048))
    events = fields.List(
        fields.String(validate=validate.OneOf(["*", *EVENT_TYPES])),
        load_default=lambda: ["*"],
        validate=validate.Length(min=1, max=len(EVENT_TYPES)),
    )
    secret = fields.String(validate=validate.Length(min=1, max=200), load_only=True)


def _not_found(name: str) -> errors.ArmError:
    return errors.resource_not_found("arcext/webhooks", name)


@blp.route("/webhooks")
class Webhooks(ArmMethodView):
    @blp.response(200)
    def get(self) -> Any:
        """Every webhook (never its secret)"""
        return {"value": services().webhooks.list_hooks()}


@blp.route("/webhooks/<name>")
class WebhookItem(ArmMethodView):
    @blp.response(200)
    def get(self, name: str) -> Any:
        """One webhook (never its secret)"""
        found = services().webhooks.get(name)
        if found is None:
            raise _not_found(name)
        return found

    @blp.arguments(WebhookBodySchema)
    @blp.response(200)
    @blp.alt_response(201, description="Created")
    def put(self, body: dict[str, Any], name: str) -> Any:
        """Create or replace a webhook; a new one gets events from now on"""
        try:
            view, generated, created = services().webhooks.put(name, body["url"], body["events"], body.get("secret"))
        except WebhookError as exc:
            raise errors.invalid_parameter(str(exc), target=exc.target) from None
        if generated:
            view = {**view, "secret": generated}  # shown once: it is never returned again
        return view, 201 if created else 200

    @blp.response(200)
    @blp.alt_response(204, description="No such webhook")
    def delete(self, name: str) -> Any:
        """Delete a webhook and drop its pending deliveries"""
        if not services().webhooks.delete(name):
            return "", 204
        return {}


@blp.route("/webhooks/<name>/deliveries")
class WebhookDeliveries(ArmMethodView):
    @blp.response(200)
    def get(self, name: str) -> Any:
        """The webhook's deliveries, newest first: pending ones and the last 500 finished, with their outcome"""
        found = services().webhooks.deliveries(name)
        if found is None:
            raise _not_found(name)
        return {"value": found}
