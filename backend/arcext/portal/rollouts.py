"""Rollouts: each published version's rollout by phase (region), wave and batch; pause and resume.

Rollouts span every subscription, so, like ``GET /arcext/v1/rollouts`` on the admin surface, the
page needs the Owner role; Pause and Resume call ``Engine.set_rollout_state``, the same call as
``POST /arcext/v1/rollouts/{id}/pause|resume``.
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, url_for

from .. import errors
from ..auth import Principal, Role
from ..request_context import services
from . import security
from .blueprint import bp

HELD = ("Paused", "Frozen")


def _require_owner(who: Principal, verb: str) -> None:
    if who.role < Role.OWNER:
        raise errors.authorization_failed(who.name, f"arcext/admin/{verb}", "/arcext/v1")


@bp.get("/rollouts")
def rollouts() -> Any:
    who = security.principal()
    _require_owner(who, "read")
    items = list(reversed(services().engine.rollouts()))  # newest first
    for item in items:
        item["waveCount"] = sum(len(p["waves"]) for p in item["phases"])
        item["batchCount"] = sum(len(w["batches"]) for p in item["phases"] for w in p["waves"])
        item["attempted"] = sum(item["counts"].values())
    return render_template(
        "portal/rollouts.html",
        rollouts=items,
        frozen=[r for r in items if r["state"] == "Frozen"],
        stalled=[r for r in items if r["state"] == "Stalled"],
        open_count=sum(1 for r in items if r["state"] != "Completed"),
    )


@bp.post("/rollouts/<rollout_id>/<action>")
def rollout_action(rollout_id: str, action: str) -> Any:
    who = security.principal()
    _require_owner(who, "action")
    if action not in ("pause", "resume"):
        abort(400, description="A rollout can be paused or resumed.")
    try:
        rollout = services().engine.set_rollout_state(rollout_id, action)
    except errors.ArmError as exc:
        if exc.status == 404:
            raise
        flash(exc.message, "error")
    else:
        flash(
            f"Rollout of {rollout['type']} {rollout['version']} is now {rollout['state'].lower()}.",
            "success",
        )
    return redirect(url_for("portal.rollouts") + f"#rollout-{rollout_id}", 303)
