"""The idle deadline of a connection's read loop, with one timer per idle period, not per message.

``asyncio.timeout_at`` around every ``receive`` creates a context and moves a timer in the loop's
heap for each message: at 1,000 sessions x 10 chunks/s that was about 4 % of the edge's CPU
(py-spy, `benchmarks.edge_load`). Here the read loop only records when a message arrived; one
timer fires at the earliest possible deadline and either re-arms itself at the real one or, when
the reader has been waiting that long, cancels the wait, which ``receive`` turns into
``TimeoutError`` (the way ``asyncio.timeout`` does: ``Task.cancel`` then ``Task.uncancel``).

Time the service spends handling a message does not count as the client's idleness: the clock
that matters is the time since the last message arrived, while the reader waits for the next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")


class IdleDeadline:
    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self._loop = asyncio.get_running_loop()
        self.last = self._loop.time()  # when the last message arrived (or the deadline started)
        self._waiting: asyncio.Task[object] | None = None  # the task inside receive(), if any
        self._cancelling = 0
        self._expired = False
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(self.last + idle_s, self._check)

    def __enter__(self) -> IdleDeadline:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    async def receive(self, receive: Callable[[], Awaitable[T]]) -> T:
        """``await receive()``; ``TimeoutError`` once nothing has arrived for ``idle_s`` seconds."""
        task = asyncio.current_task()
        assert task is not None
        self._waiting, self._cancelling = task, task.cancelling()
        try:
            result = await receive()
        except asyncio.CancelledError:
            if self._expired and task.uncancel() <= self._cancelling:
                raise TimeoutError(f"nothing received for {self.idle_s:g} s") from None
            raise
        finally:
            self._waiting = None
        self.last = self._loop.time()
        return result

    def _check(self) -> None:
        self._handle = None
        now = self._loop.time()
        if now >= self.last + self.idle_s:
            if self._waiting is not None:
                self._expired = True
                self._waiting.cancel()
                return
            self.last = now  # busy with a message past the deadline: the client gets a full period
        self._handle = self._loop.call_at(self.last + self.idle_s, self._check)
