"""The activity log at Azure Monitor's path (Microsoft.Insights eventtypes/management/values)."""

from __future__ import annotations

from typing import Any

from marshmallow import fields

from ..activity import parse_filter
from ..auth import scope_contains
from ..ids import validate_subscription
from ..request_context import principal, services
from ..schemas.common import ApiVersionQuerySchema
from .base import ArmBlueprint, ArmMethodView, page_list

blp = ArmBlueprint("activity", __name__, description="Activity log (Azure Monitor event shape)")


class ActivityQuerySchema(ApiVersionQuerySchema):
    filter = fields.String(data_key="$filter", metadata={"description": "eventTimestamp ge '<start>' [and ...]"})
    select = fields.String(data_key="$select")
    skiptoken = fields.String(data_key="$skiptoken")


@blp.route("/subscriptions/<subscription_id>/providers/Microsoft.Insights/eventtypes/management/values")
class ActivityLogValues(ArmMethodView):
    @blp.arguments(ActivityQuerySchema, location="query")
    @blp.response(200)
    def get(self, query: dict[str, Any], subscription_id: str) -> Any:
        """ActivityLogs_List: newest first; $filter needs eventTimestamp ge; events older than 90 days are gone"""
        validate_subscription(subscription_id)
        flt = parse_filter(query.get("filter"))
        caller = principal()
        events = [
            e for e in services().activity.query(subscription_id, flt) if scope_contains(caller.scope, e["resourceId"])
        ]
        if query.get("select"):
            wanted = {s.strip() for s in query["select"].split(",") if s.strip()}
            events = [{k: v for k, v in e.items() if k in wanted} for e in events]
        return page_list(events, query.get("skiptoken"))
