"""A client's bounded outgoing queue: partials are dropped first, finals never silently.

Pure and synchronous; the connection's single writer task drains it. ``put`` reports what
happened so the caller can count drops and decide when a client is too slow.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any


class Put(enum.Enum):
    QUEUED = "queued"
    DROPPED = "dropped"  # the queue was full and the new message was droppable: it was dropped
    DISPLACED = "displaced"  # full: an older droppable message was dropped to make room
    FULL = "full"  # full of messages that must not be dropped: the client is too slow


class SendQueue:
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[tuple[dict[str, Any], bool]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, msg: dict[str, Any], *, droppable: bool) -> Put:
        if len(self._items) < self.maxsize:
            self._items.append((msg, droppable))
            return Put.QUEUED
        if droppable:
            return Put.DROPPED
        for i, (_, old_droppable) in enumerate(self._items):
            if old_droppable:
                del self._items[i]
                self._items.append((msg, droppable))
                return Put.DISPLACED
        return Put.FULL

    def get(self) -> dict[str, Any] | None:
        return self._items.popleft()[0] if self._items else None
