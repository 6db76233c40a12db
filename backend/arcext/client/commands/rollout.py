"""``arcext rollout``: the engine's rollouts (admin surface /arcext/v1/rollouts; Owner role)."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import click

from .. import http, progress
from ..errors import ArmHttpError, WaitTimeout
from .common import ClientCommand, client, emit, output_options

ROLLOUTS = "/arcext/v1/rollouts"
COMPLETED = "Completed"


@click.group()
def rollout() -> None:
    """Automatic-upgrade rollouts: one per published version of an extension type."""


def _done(item: dict[str, Any]) -> int:
    counts = item.get("counts") or {}
    return int(sum(int(counts.get(k) or 0) for k in ("succeeded", "failed", "skipped")))


def _table(result: Any) -> Any:
    """Rollout rows for --output table (the id matters here, so it is a column)."""

    def row(item: Any) -> Any:
        if not isinstance(item, dict):
            return item
        counts = item.get("counts") or {}
        return OrderedDict(
            [
                ("Id", item.get("id")),
                ("Extension", f"{item.get('publisher')}.{item.get('type')}"),
                ("Version", item.get("version")),
                ("Critical", item.get("critical")),
                ("State", item.get("state")),
                ("Eligible", item.get("eligible")),
                ("Succeeded", counts.get("succeeded")),
                ("Failed", counts.get("failed")),
                ("Skipped", counts.get("skipped")),
                ("NextAction", item.get("nextAction")),
            ]
        )

    return [row(i) for i in result] if isinstance(result, list) else row(result)


def _all(arm: http.ArmClient) -> list[dict[str, Any]]:
    body = arm.get_json(ROLLOUTS, arm=False) or {}
    return list(body.get("value") or [])


def _one(arm: http.ArmClient, rollout_id: str) -> dict[str, Any]:
    for item in _all(arm):
        if str(item.get("id", "")).lower() == rollout_id.lower():
            return item
    raise ArmHttpError(404, "ResourceNotFound", f"The rollout '{rollout_id}' was not found.")


def _id_option(fn: Any) -> Any:
    return click.option("--id", "rollout_id", required=True, help="The rollout id (see 'arcext rollout list').")(fn)


@rollout.command("list", cls=ClientCommand)
@click.option("--publisher", help="Only rollouts of this publisher.")
@click.option("--type", "extension_type", help="Only rollouts of this extension type.")
@click.option("--state", help="Only rollouts in this state (Active, Paused, Frozen, Completed).")
@output_options
def rollout_list(
    publisher: str | None, extension_type: str | None, state: str | None, output: str, query: str | None
) -> None:
    """List every rollout with its state, counts and next action."""
    with client(need_subscription=False) as arm:
        items = _all(arm)
    wanted = {"publisher": publisher, "type": extension_type, "state": state}
    for key, value in wanted.items():
        if value:
            items = [i for i in items if str(i.get(key, "")).lower() == value.lower()]
    emit(items, output, query, transformer=_table)


@rollout.command("show", cls=ClientCommand)
@_id_option
@output_options
def rollout_show(rollout_id: str, output: str, query: str | None) -> None:
    """Show one rollout: phases, waves, batches, counts and next action."""
    with client(need_subscription=False) as arm:
        item = _one(arm, rollout_id)
    emit(item, output, query, transformer=_table)


def _action(action: str, rollout_id: str, output: str, query: str | None) -> None:
    with client(need_subscription=False) as arm:
        _one(arm, rollout_id)  # a 404 names the rollout, not the URL
        response = arm.request("POST", f"{ROLLOUTS}/{http.segment(rollout_id)}/{action}", arm=False)
        item: Any = response.json() if response.content else None
    emit(item, output, query, transformer=_table)


def _action_command(action: str, summary: str) -> None:
    """Add ``arcext rollout <action> --id``: one POST to the rollout's ``action`` endpoint."""

    @rollout.command(action, cls=ClientCommand, help=summary)
    @_id_option
    @output_options
    def command(rollout_id: str, output: str, query: str | None) -> None:
        _action(action, rollout_id, output, query)


_action_command("pause", "Pause a rollout: no new wave starts until it is resumed.")
_action_command("resume", "Resume a paused or frozen rollout (also after the circuit breaker stopped it).")
_action_command("freeze", "Freeze a version: nothing more is upgraded to it until it is resumed.")


@rollout.command("watch", cls=ClientCommand)
@_id_option
@click.option("--timeout", default=3600.0, show_default=True, type=click.FloatRange(min=0), help="Seconds to wait.")
@click.option(
    "--interval", default=5.0, show_default=True, type=click.FloatRange(min=0.01), help="Seconds between polls."
)
@output_options
def rollout_watch(rollout_id: str, timeout: float, interval: float, output: str, query: str | None) -> None:
    """Show a rollout's progress until it completes (exit 0) or --timeout passes (exit 5), then print it."""
    deadline = time.monotonic() + timeout
    with client(need_subscription=False) as arm:
        item = _one(arm, rollout_id)
        label = f"{item.get('publisher')}.{item.get('type')} {item.get('version')}"
        with progress.bar(label, total=max(int(item.get("eligible") or 0), 1)) as update:
            while True:
                update(
                    completed=_done(item),
                    total=max(int(item.get("eligible") or 0), 1),
                    description=f"{label} [{item.get('state')}]",
                )
                if item.get("state") == COMPLETED:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    emit(item, output, query, transformer=_table)
                    raise WaitTimeout(
                        f"Rollout {rollout_id} is still {item.get('state')} after {timeout:g}s "
                        f"({_done(item)} of {item.get('eligible')} done; next: {item.get('nextAction')}).",
                        "RolloutWatchTimedOut",
                    )
                http.sleep(min(interval, remaining))
                item = _one(arm, rollout_id)
    emit(item, output, query, transformer=_table)
