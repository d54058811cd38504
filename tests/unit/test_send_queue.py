"""ingest.send_queue.SendQueue: partials give way, finals are never dropped silently."""

from __future__ import annotations

from typing import Any

from ingest.send_queue import Put, SendQueue


def partial(n: int) -> dict[str, Any]:
    return {"type": "transcript", "is_final": False, "n": n}


def final(n: int) -> dict[str, Any]:
    return {"type": "transcript", "is_final": True, "n": n}


def drain(queue: SendQueue) -> list[dict[str, Any]]:
    out = []
    while (msg := queue.get()) is not None:
        out.append(msg)
    return out


def test_queued_until_full() -> None:
    queue = SendQueue(3)
    assert queue.put(partial(1), droppable=True) is Put.QUEUED
    assert queue.put(final(2), droppable=False) is Put.QUEUED
    assert queue.put(partial(3), droppable=True) is Put.QUEUED
    assert len(queue) == 3


def test_get_is_fifo_and_none_when_empty() -> None:
    queue = SendQueue(5)
    assert queue.get() is None
    msgs = [partial(1), final(2), partial(3)]
    for msg in msgs:
        queue.put(msg, droppable=not msg["is_final"])
    assert queue.get() is msgs[0]
    assert drain(queue) == msgs[1:]
    assert len(queue) == 0
    assert queue.get() is None


def test_droppable_message_is_dropped_when_full() -> None:
    queue = SendQueue(2)
    queue.put(partial(1), droppable=True)
    queue.put(final(2), droppable=False)
    assert queue.put(partial(3), droppable=True) is Put.DROPPED
    assert drain(queue) == [partial(1), final(2)]


def test_non_droppable_displaces_the_oldest_droppable() -> None:
    queue = SendQueue(4)
    queue.put(final(1), droppable=False)
    queue.put(partial(2), droppable=True)
    queue.put(final(3), droppable=False)
    queue.put(partial(4), droppable=True)
    assert queue.put(final(5), droppable=False) is Put.DISPLACED
    assert len(queue) == 4
    assert drain(queue) == [final(1), final(3), partial(4), final(5)]


def test_displacing_repeatedly_until_full_of_finals() -> None:
    queue = SendQueue(3)
    for n in (1, 2, 3):
        queue.put(partial(n), droppable=True)
    assert queue.put(final(4), droppable=False) is Put.DISPLACED
    assert queue.put(final(5), droppable=False) is Put.DISPLACED
    assert queue.put(final(6), droppable=False) is Put.DISPLACED
    assert queue.put(final(7), droppable=False) is Put.FULL
    assert queue.put(partial(8), droppable=True) is Put.DROPPED
    assert drain(queue) == [final(4), final(5), final(6)]


def test_full_of_non_droppable_is_full() -> None:
    queue = SendQueue(2)
    queue.put(final(1), droppable=False)
    queue.put(final(2), droppable=False)
    assert queue.put(final(3), droppable=False) is Put.FULL
    assert len(queue) == 2
    assert drain(queue) == [final(1), final(2)]


def test_room_again_after_get() -> None:
    queue = SendQueue(1)
    queue.put(final(1), droppable=False)
    assert queue.put(final(2), droppable=False) is Put.FULL
    assert queue.get() == final(1)
    assert queue.put(final(2), droppable=False) is Put.QUEUED
    assert drain(queue) == [final(2)]
