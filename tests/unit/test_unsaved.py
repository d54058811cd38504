"""vad_worker.unsaved: a session's messages wait for its checkpoint, which is due a fixed time
after the session was first processed since its last one."""

from __future__ import annotations

from vad_worker.unsaved import Unsaved


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
