"""Group commit's hand-off (arcext.store.postgres.db.GroupCommit), without a database: every entry is sent once,
in a batch with those that came while the previous batch was on its way, and ``submit`` returns only once its
entry was sent; a failed send fails its sender only, and the hand-off goes on."""

from __future__ import annotations

import threading
import time

import pytest

from arcext.store.postgres.db import GroupCommit


def test_entries_that_come_while_a_batch_is_on_its_way_go_together_each_submit_returning_after_its_send() -> None:
    sent: list[list[int]] = []
    returned_after_send: dict[int, bool] = {}
    lock = threading.Lock()
    first_on_its_way = threading.Event()

    def send(batch: list[int]) -> None:
        if not sent:
            first_on_its_way.set()
            time.sleep(0.3)  # the others pile up behind the first
        with lock:
            sent.append(list(batch))

    group: GroupCommit[int] = GroupCommit(send)

    def submit(i: int) -> None:
        if i:
            first_on_its_way.wait(5)
        group.submit(i)
        with lock:
            returned_after_send[i] = any(i in batch for batch in sent)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads)
    assert sorted(i for batch in sent for i in batch) == list(range(40)), "every entry sent once"
    # the 39 others came in whatever order their threads ran (the batch keeps that order, not their numbers)
    assert sent[0] == [0] and sorted(sent[1]) == list(range(1, 40)), "the rest waited for the first"
    assert returned_after_send == {i: True for i in range(40)}


def test_a_failed_send_fails_its_sender_only_and_the_next_batch_goes() -> None:
    sent: list[list[str]] = []
    started = threading.Event()

    def send(batch: list[str]) -> None:
        if batch == ["bad"]:
            started.set()
            time.sleep(0.2)
            raise RuntimeError("the statement failed")
        sent.append(batch)

    group: GroupCommit[str] = GroupCommit(send)
    outcome: dict[str, str] = {}

    def submit(entry: str) -> None:
        try:
            group.submit(entry)
            outcome[entry] = "returned"
        except RuntimeError:
            outcome[entry] = "raised"

    bad = threading.Thread(target=submit, args=("bad",))
    bad.start()
    started.wait(5)
    others = [threading.Thread(target=submit, args=(f"e{i}",)) for i in range(5)]
    for thread in others:
        thread.start()
    for thread in [bad, *others]:
        thread.join(timeout=10)
    assert outcome == {"bad": "raised", **{f"e{i}": "returned" for i in range(5)}}
    assert sorted(e for batch in sent for e in batch) == [f"e{i}" for i in range(5)]
    group.submit("after")  # nothing is left stuck: a lone submit sends at once
    assert sent[-1] == ["after"]


@pytest.mark.parametrize("threads", [2, 16, 64])
def test_many_threads_submitting_in_a_loop_all_finish_and_nothing_is_sent_twice(threads: int) -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def send(batch: list[int]) -> None:
        time.sleep(0.0005)
        with lock:
            seen.extend(batch)

    group: GroupCommit[int] = GroupCommit(send)

    def work(base: int) -> None:
        for n in range(50):
            group.submit(base * 1000 + n)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert not any(worker.is_alive() for worker in workers)
    assert sorted(seen) == sorted(t * 1000 + n for t in range(threads) for n in range(50))
