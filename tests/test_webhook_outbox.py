"""The webhook outbox file on its own: replay of messages, attempts, deletions, watermark and rollout states;
a torn final line is ignored; a compaction keeps each message's delivery progress."""

from __future__ import annotations

from pathlib import Path

import pytest

from arcext.webhooks.delivery import Settings, attempt_record
from arcext.webhooks.outbox import Message, OutboxFile, read_outbox, snapshot


def _message(hook: str, msg_id: str, seq: int, created: float = 1000.0) -> Message:
    return Message(
        msg_id, hook, "upgrade.started", "/subscriptions/s/x", "2026-01-01T00:00:00.000000Z", "{}", created, seq
    )


def test_replay_folds_attempts_and_drops_deleted_webhooks(tmp_path: Path) -> None:
    outbox = OutboxFile(tmp_path / "webhooks" / "outbox.jsonl")
    outbox.rewrite(snapshot("", {}, []))
    first, second, other = _message("a", "e1", 1), _message("a", "e2", 2), _message("b", "e1", 3)
    outbox.append([{"m": m.record()} for m in (first, second, other)])
    outbox.append([{"w": "2026-01-01T00:00:00.000000Z"}, {"r": {"r1": "Active"}}])
    _outcome, attempt = attempt_record(first, 200, None, 2000.0, Settings())
    outbox.append([{"a": attempt}, {"d": "b"}])
    outbox.close()

    found = read_outbox(outbox.path)
    assert [(m.hook, m.id) for m in found.messages] == [("a", "e1"), ("a", "e2")]  # b was deleted
    assert found.messages[0].state == "Delivered" and found.messages[0].delivered_at == 2000.0
    assert found.messages[1].state == "Pending" and found.messages[1].attempts == 0
    assert (found.watermark, found.rollout_states, found.seq) == ("2026-01-01T00:00:00.000000Z", {"r1": "Active"}, 3)


def test_a_torn_final_line_is_ignored(tmp_path: Path) -> None:
    outbox = OutboxFile(tmp_path / "outbox.jsonl")
    outbox.rewrite(snapshot("", {}, [_message("a", "e1", 1)]))
    outbox.close()
    with open(outbox.path, "ab") as fh:
        fh.write(b'{"m": {"id": "e2", "hook"')  # a crash in the middle of an append
    assert [m.id for m in read_outbox(outbox.path).messages] == ["e1"]


def test_a_compaction_keeps_delivery_progress(tmp_path: Path) -> None:
    msg = _message("a", "e1", 7)
    _outcome, attempt = attempt_record(msg, 503, "HTTP 503", 1500.0, Settings(retry_base=5.0))
    msg.apply_attempt(attempt)
    outbox = OutboxFile(tmp_path / "outbox.jsonl")
    outbox.rewrite(snapshot("w", {"r": "Paused"}, [msg]))
    outbox.close()
    (again,) = read_outbox(outbox.path).messages
    assert (again.attempts, again.state, again.last_status, again.last_error, again.last_at) == (
        1,
        "Pending",
        503,
        "HTTP 503",
        1500.0,
    )


@pytest.mark.parametrize(
    ("status", "age", "state", "outcome"),
    [
        (204, 0.0, "Delivered", "delivered"),
        (410, 0.0, "Gone", "gone"),
        (500, 0.0, "Pending", "retrying"),
        (None, 0.0, "Pending", "retrying"),
        (500, 86400.0, "Expired", "expired"),
    ],
)
def test_attempt_outcomes_and_backoff(status: int | None, age: float, state: str, outcome: str) -> None:
    msg = _message("a", "e1", 1, created=1000.0)
    msg.attempts = 2
    now = 1000.0 + age
    got, attempt = attempt_record(msg, status, None, now, Settings(retry_base=5.0, retry_max=3600.0))
    assert (got, attempt["state"], attempt["attempts"]) == (outcome, state, 3)
    assert attempt["next"] == (now + 20.0 if state == "Pending" else 0.0)  # 5 * 2**(3-1)
