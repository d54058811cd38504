"""Revisions wait for a free slot (`asr_worker.revisions.RevisionQueue`): oldest first, bounded in
number and in waiting time, and what is given up is handed back so that its outcome is published."""

from __future__ import annotations

from dataclasses import replace

import msgspec
import pytest

from asr_worker.asr_settings import AsrSettings
from asr_worker.revisions import PendingRevision, RevisionQueue
from common.messages import Transcript
from common.settings import Settings


def pending(index: int, queued_at: float, session: str = "s") -> PendingRevision:
    last = Transcript(session_id=session, utterance_id=f"u{index}", is_final=True, text=f"final {index}",
                      start_s=float(index), end_s=index + 0.9, final_index=index, context=f"before final {index}")
    return PendingRevision(last, audio=b"\0" * 320, following=b"\1" * 320, queued_at=queued_at)


def test_revisions_are_served_oldest_first() -> None:
    queue = RevisionQueue(max_pending=8, max_wait_s=5.0)
    for i in range(3):
        assert queue.put(pending(i, queued_at=10.0 + i)) == []
    taken = [queue.take(now=13.0)[0] for _ in range(3)]
    assert [p.last.final_index for p in taken if p is not None] == [0, 1, 2]
    assert queue.take(now=13.0) == (None, [])
    assert len(queue) == 0


def test_a_revision_that_waited_too_long_is_given_up_and_the_next_one_served() -> None:
    queue = RevisionQueue(max_pending=8, max_wait_s=5.0)
    old, fresh = pending(1, queued_at=0.0), pending(2, queued_at=4.0)
    queue.put(old)
    queue.put(fresh)
    assert queue.take(now=5.0) == (old, [])  # exactly at the bound: still served
    assert queue.drain() == [fresh]
    queue.put(old)
    queue.put(fresh)
    assert queue.take(now=5.5) == (fresh, [old])
    assert queue.take(now=20.0) == (None, [])


def test_every_revision_late_gives_all_of_them_back() -> None:
    queue = RevisionQueue(max_pending=8, max_wait_s=1.0)
    waiting = [pending(i, queued_at=0.0) for i in range(3)]
    for p in waiting:
        queue.put(p)
    assert queue.take(now=2.0) == (None, waiting)
    assert len(queue) == 0


def test_a_full_queue_pushes_out_its_oldest() -> None:
    queue = RevisionQueue(max_pending=2, max_wait_s=60.0)
    first, second, third = (pending(i, queued_at=float(i)) for i in range(3))
    assert queue.put(first) == []
    assert queue.put(second) == []
    assert queue.put(third) == [first]
    assert len(queue) == 2
    assert queue.drain() == [second, third]
    assert len(queue) == 0


def test_the_bounds_come_from_the_settings() -> None:
    settings = AsrSettings.from_settings(Settings(), revision_max_pending=3, revision_max_lag_ms=2500)
    queue = RevisionQueue.from_settings(settings)
    assert (queue.max_pending, queue.max_wait_s) == (3, 2.5)
    with pytest.raises(ValueError):
        RevisionQueue(max_pending=0, max_wait_s=1.0)


def test_the_prompt_is_the_one_the_final_had() -> None:
    p = pending(4, queued_at=0.0)
    assert p.prompt == "before"  # its stored context less its own text
    other = replace(p, last=msgspec.structs.replace(p.last, context="unrelated context"))
    assert other.prompt == ""
    assert other.session_id == "s"
