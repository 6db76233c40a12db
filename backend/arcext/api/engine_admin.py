"""The engine's admin surface (not ARM): clock, engine runs, simulated-host faults, rollouts, views."""

from __future__ import annotations

from typing import Any

from flask import request
from marshmallow import fields, validate

from .. import errors
from ..clock import ManualClock, iso
from ..ids import MachineKey, machine_key, parse_resource_id
from ..request_context import services
from ..schemas.common import ArmSchema, StrictBoolean
from ..store.base import MachineDoc
from ..upgrades.views import history_view, pending_view
from .base import ArmBlueprint, ArmMethodView

blp = ArmBlueprint("engine_admin", __name__, url_prefix="/arcext/v1", description="Upgrade engine administration")


class AdvanceSchema(ArmSchema):
    seconds = fields.Float(required=True, validate=validate.Range(min=0, max=10 * 365 * 86400))


class FaultsSchema(ArmSchema):
    failUpgrade = fields.Integer(validate=validate.Range(min=0, max=1_000_000), strict=True)
    failRollback = StrictBoolean()
    hang = StrictBoolean()
    unreachable = StrictBoolean()
    latencyMs = fields.Integer(validate=validate.Range(min=0, max=600_000), strict=True)


@blp.route("/clock/advance")
class ClockAdvance(ArmMethodView):
    @blp.arguments(AdvanceSchema)
    @blp.response(200)
    def post(self, body: dict[str, Any]) -> Any:
        """Move the manual clock forward (only with `arcext serve --manual-clock`)"""
        clock = services().clock
        if not isinstance(clock, ManualClock):
            raise errors.ArmError(
                409,
                "ManualClockNotEnabled",
                "The server runs on the wall clock; start it with --manual-clock (ARCEXT_MANUAL_CLOCK=true) "
                "to move time by hand.",
            )
        now = clock.advance(body["seconds"])
        services().engine.kick()
        return {"now": iso(now)}


@blp.route("/clock")
class Clock(ArmMethodView):
    @blp.response(200)
    def get(self) -> Any:
        """The server's current time and whether it is a manual clock"""
        clock = services().clock
        return {"now": iso(clock.now()), "manual": isinstance(clock, ManualClock)}


@blp.route("/engine/run")
class EngineRun(ArmMethodView):
    @blp.response(200)
    def post(self) -> Any:
        """Run the engine until nothing more is due now; returns what it did"""
        return services().engine.run_until_idle()


@blp.route("/cluster")
class ClusterNode(ArmMethodView):
    @blp.response(200)
    def get(self) -> Any:
        """This node: whether it leads the upgrade engine, and how many upgrade jobs it ran"""
        engine = services().engine
        node = getattr(engine, "node", None)
        if node is None:  # the embedded store: one node, always the leader, jobs in its own pool
            return {"node": "local", "leader": True, "jobsRun": engine.jobs_run()}
        return node.view()


@blp.route("/simulated-hosts/<machine_name>/faults")
class SimulatedFaults(ArmMethodView):
    @blp.arguments(FaultsSchema)
    @blp.response(200)
    def put(self, body: dict[str, Any], machine_name: str) -> Any:
        """Make the simulated host fail upgrades, fail rollbacks, hang, be unreachable or answer slowly (`{}` clears)"""
        svc = services()
        if not svc.hosts.simulate:
            raise errors.ArmError(
                409, "NotSimulated", "Faults apply to simulated hosts; start the server with --simulate."
            )
        keys = _machines_named(machine_name)
        return {"machines": [k.id for k in keys], "faults": [svc.fleet.set_faults(k, body) for k in keys][0]}


@blp.route("/simulated-hosts/<machine_name>")
class SimulatedHost(ArmMethodView):
    @blp.response(200)
    def get(self, machine_name: str) -> Any:
        """The simulated host's own model: installed versions, settings, handler commands, faults"""
        svc = services()
        hosts = [svc.fleet.snapshot(k) for k in _machines_named(machine_name)]
        return {"hosts": [h for h in hosts if h]}


def _machines_named(machine_name: str) -> list[MachineKey]:
    """Machines called ``machine_name`` (narrowed by ?subscription= and ?resourceGroup=)."""
    rg = (request.args.get("resourceGroup") or "").lower()
    sub = (request.args.get("subscription") or "").lower()
    wanted = machine_name.lower()

    def named(doc: MachineDoc) -> MachineKey | None:
        parsed = parse_resource_id(doc["machine"]["id"])
        if parsed is None:
            return None
        key = parsed[0]
        if key.name.lower() != wanted or (rg and key.resource_group.lower() != rg) or (sub and key.subscription != sub):
            return None
        return key

    keys = services().lookups.over_machines(named)  # no copies: a projection of the ids only
    if not keys:
        raise errors.resource_not_found("Microsoft.HybridCompute/machines", machine_name)
    return keys


@blp.route("/rollouts")
class Rollouts(ArmMethodView):
    @blp.response(200)
    def get(self) -> Any:
        """Every rollout: phase, waves and batches, counts, state and next action"""
        return {"value": services().engine.rollouts()}


@blp.route("/rollouts/<rollout_id>")
class Rollout(ArmMethodView):
    @blp.response(200)
    def get(self, rollout_id: str) -> Any:
        """One rollout: phases, waves and batches with counts, state and next action (`?$expand=targets`:
        the extensions of every batch)"""
        expand = request.args.get("$expand", "").lower() == "targets"
        found = [r for r in services().engine.rollouts(targets=expand) if r["id"] == rollout_id]
        if not found:
            raise errors.resource_not_found("arcext/rollouts", rollout_id)
        return found[0]


@blp.route("/rollouts/<rollout_id>/<action>")
class RolloutAction(ArmMethodView):
    @blp.response(200)
    def post(self, rollout_id: str, action: str) -> Any:
        """pause, resume or freeze one rollout (a version of an extension type)"""
        engine = services().engine
        engine.set_rollout_state(rollout_id, action)
        return next(r for r in engine.rollouts() if r["id"] == rollout_id)


MACHINE = "/subscriptions/<subscription_id>/resourceGroups/<resource_group>/machines/<machine_name>"


@blp.route(f"{MACHINE}/pending")
class Pending(ArmMethodView):
    @blp.response(200)
    def get(self, subscription_id: str, resource_group: str, machine_name: str) -> Any:
        """What is queued on this machine, at which version, when it is due and why it waits"""
        svc = services()
        key = machine_key(subscription_id, resource_group, machine_name)
        doc = svc.lookups.machine(key)
        if doc is None:
            raise errors.resource_not_found("Microsoft.HybridCompute/machines", machine_name, resource_group)
        view = pending_view(svc.engine, svc.catalog, key, doc)
        view["maintenanceWindows"] = svc.maintenance.describe(doc, svc.clock.now())
        return view


@blp.route(f"{MACHINE}/extensions/<extension_name>/history")
class History(ArmMethodView):
    @blp.response(200)
    def get(self, subscription_id: str, resource_group: str, machine_name: str, extension_name: str) -> Any:
        """Upgrade attempts of one extension (from → to, outcome, attempt), from the activity log"""
        svc = services()
        key = machine_key(subscription_id, resource_group, machine_name)
        resource_id = key.extension_id(extension_name)
        return {"value": history_view(svc.activity, key, resource_id, iso(svc.clock.now()))}
