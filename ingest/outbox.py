"""Everything one client is sent: a bounded queue, one writer task, and the slow-client verdict.

Results arrive from the bus in bursts and are only queued here (never awaited); the writer sends
them in order. When the queue is full, partials are dropped first and a final displaces a queued
partial. A client whose socket keeps pushing back (``slow_send_threshold`` full-queue events while
the writer is stuck in a send) or whose queue holds only finals is closed with 1008; one that does
not read even its close frame is reset after ``CLOSE_GRACE_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from common import logs, metrics, tasks
from ingest import protocol as p
from ingest.send_queue import Put, SendQueue

log = logging.getLogger(__name__)

CLOSE_GRACE_S = 5.0  # a client being closed has this long to read its close frame before a reset

_json = msgspec.json.Encoder()


def _identity(msg: dict[str, Any]) -> list[dict[str, Any]]:
    return [msg]


@dataclass(frozen=True, slots=True)
class Closing:
    """How the session ends: WebSocket close code and reason."""

    code: int
    reason: str


class Outbox:
    def __init__(
        self, ws: web.WebSocketResponse, transport: asyncio.Transport | None, *, max_queue: int,
        slow_threshold: int, count: Callable[[str], None], label: str,
        render: Callable[[dict[str, Any]], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.ws = ws
        self.render = render or _identity  # the wire format: native message -> what the client gets
        self.transport = transport
        self.queue = SendQueue(max_queue)
        self.slow_threshold = slow_threshold
        self.count = count  # the edge's counters for /v1/metrics
        self.label = label  # session id, for logs
        self.fatal: Closing | None = None  # set once the connection must end
        self.partials_sent = 0
        self.dropped = 0
        self._wake = asyncio.Event()
        self._emptied = asyncio.Event()  # set each time the writer has sent all it had
        self._full_events = 0  # full-queue events while a send was stuck, since the last good send
        self._sending = False  # the writer is inside ws.send_str (the socket may be pushing back)
        self.on_sent: Callable[[], None] | None = None  # called after each message leaves the queue
        self._writer = asyncio.create_task(self._write(), name=f"writer-{label}")
        self._closer: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self.queue)

    @property
    def room(self) -> int:
        """Messages the queue takes before it is full."""
        return self.queue.maxsize - len(self.queue)

    def send(self, msg: dict[str, Any], *, droppable: bool) -> None:
        """Queues ``msg``; never waits. Droppable messages (partials, VAD events) go first."""
        if self.fatal is not None:
            return
        outcome = self.queue.put(msg, droppable=droppable)
        self._wake.set()
        if outcome is Put.QUEUED:
            return
        if outcome in (Put.DROPPED, Put.DISPLACED):
            metrics.MESSAGES_DROPPED.labels(msg["type"] if outcome is Put.DROPPED else "displaced").inc()
            self.count("messages_dropped")
            self.dropped += 1
        # Only a full queue while the socket is not taking our last frame says the client is slow;
        # a burst of results that arrives before the writer got its turn does not.
        if self._sending:
            self._full_events += 1
        if outcome is Put.FULL or self._full_events >= self.slow_threshold:
            metrics.SLOW_CLIENT_CLOSES.inc()
            self.count("slow_client_closes")
            logs.for_session(log, self.label).info("client too slow (%d full-queue events): closing with 1008",
                                                   self._full_events)
            self.fail(Closing(p.CLOSE_TOO_SLOW, "Client too slow"))

    def fail(self, closing: Closing) -> None:
        """Ends the connection now, from any task (the reader sees the socket close)."""
        if self.fatal is not None:
            return
        self.fatal = closing
        self._wake.set()
        self._closer = asyncio.create_task(self._close_now(closing), name=f"closer-{self.label}")

    async def drained(self) -> None:
        """Returns once everything queued was sent (or the connection is ending)."""
        while len(self.queue) and self.fatal is None and not self.ws.closed:
            self._emptied.clear()
            await self._emptied.wait()

    async def close(self, closing: Closing) -> None:
        """Delivers what is queued (bounded), stops the writer, closes the socket."""
        if self.fatal is None and not self.ws.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drained(), 5.0)
        await tasks.stop(self._writer)
        if self._closer is not None:
            await asyncio.wait({self._closer}, timeout=CLOSE_GRACE_S + 1)
            await tasks.stop(self._closer)
        final = self.fatal or closing
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(self.ws.close(code=final.code, message=final.reason.encode()[:120]), 5.0)

    async def _close_now(self, closing: Closing) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_GRACE_S
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(self.ws.close(code=closing.code, message=closing.reason.encode()), CLOSE_GRACE_S)
        # The close frame may still sit in our send buffer behind frames the client has not read:
        # give it the rest of the grace period to leave, then reset the connection (a client that
        # stopped reading never lets it drain; a no-op if the connection is already gone).
        if self.transport is not None:
            # asyncio offers no event for "this transport's buffer is empty": poll it.
            while self.transport.get_write_buffer_size() and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            self.transport.abort()

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.fatal is not None:
                return  # the closer task ends the connection
            while (msg := self.queue.get()) is not None:
                frames = self.render(msg)
                for frame in frames:
                    self._sending = True
                    try:
                        await self.ws.send_str(_json.encode(frame).decode())
                    except ConnectionError:
                        return
                    finally:
                        self._sending = False
                self._full_events = 0
                if frames:  # counted as the native message it was; a suppressed one is not sent
                    metrics.MESSAGES_SENT.labels(msg["type"]).inc()
                    if msg["type"] == "transcript" and not msg["is_final"]:
                        self.partials_sent += 1
                if self.on_sent is not None:
                    self.on_sent()
            self._emptied.set()
