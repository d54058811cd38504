"""vad_worker.unsaved: a session's messages wait for its checkpoint, which is due a fixed time
after the session was first processed since its last one."""

from __future__ import annotations

import math

import pytest

from vad_worker.unsaved import Unsaved
from vad_worker.worker import HOLE_FETCH_S, IDLE_FETCH_S, MIN_FETCH_S, fetch_wait


def test_a_checkpoint_is_due_the_interval_after_the_first_unsaved_processing() -> None:
    u: Unsaved[str] = Unsaved()
    u.processed("a", now=10.0)
    u.hold("a", "m1")
    u.processed("a", now=10.6)  # later processing does not push the deadline back
    u.hold("a", "m2")
    u.processed("b", now=10.5)
    u.hold("b", "n1")
    assert u.due(before=9.9) == []
    assert u.due(before=10.0) == ["a"]
    assert sorted(u.due(before=10.5)) == ["a", "b"]
    assert u.saved("a") == ["m1", "m2"]
    assert "a" not in u and "b" in u
    u.processed("a", now=11.0)  # processed again after its save: a new deadline
    assert u.due(before=10.9) == ["b"]
    assert u.saved("a") == []  # processed without a message (a catch-up): nothing to acknowledge


def test_every_batch_when_the_interval_is_zero() -> None:
    u: Unsaved[int] = Unsaved()
    u.processed("a", now=5.0)
    u.hold("a", 1)
    assert u.due(before=5.0 - 0.0) == ["a"]


def test_clear_forgets_without_handing_anything_out() -> None:
    u: Unsaved[int] = Unsaved()
    u.processed("a")
    u.hold("a", 1)
    assert u and sorted(u.sessions()) == ["a"]
    u.clear()
    assert not u and u.sessions() == [] and u.saved("a") == []


def test_an_ended_session_is_due_at_once() -> None:
    u: Unsaved[int] = Unsaved()
    u.processed("a", now=100.0)
    u.ended("a")
    assert u.due(before=0.0) == ["a"]


def test_next_due_is_the_oldest_session_plus_the_interval_and_at_once_for_an_ended_one() -> None:
    u: Unsaved[int] = Unsaved()
    assert u.next_due(1.0) is None
    u.processed("a", now=10.0)
    u.processed("b", now=12.0)
    u.processed("a", now=13.0)  # still due from its first processing
    assert u.next_due(1.0) == 11.0
    u.saved("a")
    assert u.next_due(1.0) == 13.0
    u.ended("b")
    assert u.next_due(1.0) == -math.inf


def test_a_quiet_shard_waits_long_but_never_past_a_due_checkpoint() -> None:
    assert fetch_wait(100.0, None, waiting=False) == IDLE_FETCH_S
    assert fetch_wait(100.0, None, waiting=True) == HOLE_FETCH_S < IDLE_FETCH_S
    assert fetch_wait(100.0, 100.4, waiting=False) == pytest.approx(0.4)
    assert fetch_wait(100.0, 150.0, waiting=True) == HOLE_FETCH_S
    assert fetch_wait(100.0, 99.0, waiting=False) == MIN_FETCH_S  # overdue: save right after a short fetch
    assert fetch_wait(100.0, -math.inf, waiting=False) == MIN_FETCH_S  # an ended session
