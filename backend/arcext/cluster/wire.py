"""What travels through the cluster's tables as JSON: job results, engine call arguments, errors."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import errors
from ..ids import MachineKey
from ..records import UpgradeJob
from ..upgrades.jobs import JobResult

#: a queued job: machine, extension, resume, wave template (arcext.cluster.node.Job)
QueuedJob = tuple[MachineKey, str, bool, UpgradeJob | None]

#: the rows of ``jobs_to_json`` as engine_jobs columns, in the batch's order (so ids follow it); SQL, with
#: the one parameter a jsonb array
QUEUED_ROWS = (
    "SELECT j->>0, j->>1, j->>2, j->>3, (j->>4)::boolean, nullif(j->5, 'null'::jsonb)"
    " FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS a(j, n) ORDER BY n"
)


def jobs_to_json(jobs: Iterable[QueuedJob]) -> list[list[Any]]:
    """Jobs to queue as one JSON array of rows (``QUEUED_ROWS`` reads it): one parameter, encoded at
    once, instead of six arrays whose elements the driver adapts one by one (a template each)."""
    return [
        [key.subscription, key.resource_group, key.name, ext, resume, template or None]
        for key, ext, resume, template in jobs
    ]


#: the rows of ``ends_to_json`` as ``(id, result, n)``, n their place in the batch; SQL, with the one parameter a
#: jsonb array
ENDED_ROWS = (
    "SELECT (j->>0)::bigint AS id, j->1 AS result, n FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS a(j, n)"
)


def ends_to_json(ends: Iterable[tuple[int, dict[str, Any]]]) -> list[list[Any]]:
    """Jobs' ends (each job's row id and its result, ``result_to_json``) as one JSON array of rows
    (``ENDED_ROWS`` reads it): one parameter encoded at once. A ``jsonb[]`` array's elements are escaped by
    the driver one quote at a time (a regular expression's replacement per match), which cost more than
    the rest of the statement."""
    return [[job_id, result] for job_id, result in ends]


def result_to_json(key: MachineKey, ext: str, result: JobResult | None) -> dict[str, Any]:
    return {
        "key": [key.subscription, key.resource_group, key.name],
        "ext": ext,
        "outcome": result.outcome if result is not None else None,
        "job": dict(result.job) if result is not None else None,
    }


def result_from_json(data: dict[str, Any]) -> tuple[MachineKey, str, JobResult | None]:
    key = MachineKey(*data["key"])
    ext = str(data["ext"])
    if data.get("outcome") is None:
        return key, ext, None
    return key, ext, JobResult(key, ext, str(data["outcome"]), dict(data.get("job") or {}))


def encode(value: Any) -> Any:
    """Arguments of an engine call as JSON (a MachineKey becomes ``{"__machine__": [...]}``)."""
    if isinstance(value, MachineKey):
        return {"__machine__": [value.subscription, value.resource_group, value.name]}
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    return value


def decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__machine__"}:
            return MachineKey(*value["__machine__"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def error_to_json(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, errors.ArmError):
        return {
            "status": exc.status,
            "code": exc.code,
            "message": exc.message,
            "target": exc.target,
            "details": exc.details,
            "headers": exc.headers,
        }
    return {"status": 500, "code": "InternalServerError", "message": "The leader could not run the engine call."}


def error_from_json(data: dict[str, Any]) -> errors.ArmError:
    return errors.ArmError(
        int(data["status"]),
        str(data["code"]),
        str(data["message"]),
        data.get("target"),
        data.get("details"),
        data.get("headers"),
    )
