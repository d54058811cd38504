"""A long-lived pull from a JetStream consumer: one standing request, messages as they come.

nats-py's ``fetch`` asks the server again for every batch: at a few messages a second per
consumer (a quiet shard of the VAD's audio) that is a pull request and a status reply for each
message, a third of the messages through nats-server for that consumer (docs/benchmarks.md). A
``Puller`` keeps one request of ``batch`` messages standing for ``expires_s``; the server
delivers each message to the puller's inbox as soon as it is stored, and the puller asks again
only when the request is used up, expired (408), refused (a 409 status such as "Server
Shutdown", or a 503 for a consumer that does not exist), lost with the connection (a reconnect),
or silent for longer than its idle heartbeat allows.

``Credit`` is the pure part: what the standing request still owes and when to ask. ``Puller`` is
its shell: the inbox subscription, the buffer, ``next_batch`` and ``close``. Messages buffered
but not yet handed out when the puller closes are nak'ed, so the consumer's next puller (a shard's
next owner) gets them at once instead of after the ack wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import deque
from dataclasses import dataclass

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger(__name__)

STATUS_HEADER = "Status"


@dataclass
class Credit:
    """What the one standing pull request still owes, and when to ask again (pure).

    ``owed`` is 0 when no request stands. A request ends when it has delivered ``batch``
    messages, when the server says it expired (asked again at once) or refused it (asked again
    after ``retry_s``, so a missing consumer is not asked in a loop), or when nothing (message or
    idle heartbeat) came for ``2 * heartbeat_s + slack_s``: then it is taken as lost.
    """

    batch: int = 512
    expires_s: float = 30.0
    heartbeat_s: float = 5.0
    slack_s: float = 1.0
    retry_s: float = 1.0
    owed: int = 0
    heard_at: float = -math.inf  # last message, heartbeat or status while a request stood
    retry_at: float = -math.inf  # after a refusal, not before this

    def should_ask(self, now: float) -> bool:
        if self.owed and now - self.heard_at > 2 * self.heartbeat_s + self.slack_s:
            self.owed = 0  # lost: the server forgot it (restart) or its replies did not reach us
        return self.owed == 0 and now >= self.retry_at

    def next_check(self, now: float) -> float:
        """Seconds until ``should_ask`` may change without anything arriving."""
        if self.owed:
            return max(0.0, self.heard_at + 2 * self.heartbeat_s + self.slack_s - now)
        return max(0.0, self.retry_at - now)

    def request(self, now: float) -> dict[str, int]:
        """The pull request to send now (JetStream's JSON, durations in ns)."""
        self.owed = self.batch
        self.heard_at = now
        return {"batch": self.batch, "expires": int(self.expires_s * 1e9),
                "idle_heartbeat": int(self.heartbeat_s * 1e9)}

    def delivered(self, now: float) -> None:
        self.owed = max(0, self.owed - 1)
        self.heard_at = now

    def heartbeat(self, now: float) -> None:
        self.heard_at = now

    def expired(self) -> None:
        """The server ended the request at its expiry: ask again now."""
        self.owed = 0

    def refused(self, now: float) -> None:
        """The server refused or dropped the request: ask again after ``retry_s``."""
        self.owed = 0
        self.retry_at = now + self.retry_s


def status_of(msg: Msg) -> str | None:
    """The JetStream status code of a message on the inbox (``"100"`` heartbeat, ``"408"``
    expired, ``"409"`` refused, ...), or None for a stream message."""
    if msg.headers and not msg.data:
        return msg.headers.get(STATUS_HEADER)
    return None


class Puller:
    """Messages of one durable pull consumer, over one standing request at a time.

    ``open`` (or ``async with``) subscribes its inbox; ``next_batch`` hands messages out;
    ``close`` ends it.
    """

    def __init__(self, nc: NATS, stream: str, durable: str, credit: Credit | None = None) -> None:
        self.nc = nc
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self.credit = credit or Credit()
        self._buffer: deque[Msg] = deque()
        self._wake = asyncio.Event()
        self._sub: Subscription | None = None
        self._inbox = ""
        self._reconnects = 0
        self._refusal = ""  # the last refusal logged

    def __repr__(self) -> str:
        return f"<Puller {self.subject} owed={self.credit.owed} buffered={len(self._buffer)}>"

    async def open(self) -> None:
        self._reconnects = self.nc.stats.get("reconnects", 0)
        self._inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(self._inbox, cb=self._received)

    async def __aenter__(self) -> Puller:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _received(self, msg: Msg) -> None:
        now = time.monotonic()
        status = status_of(msg)
        if status is None:
            self._buffer.append(msg)
            self.credit.delivered(now)
            self._refusal = ""
        elif status == "100":
            self.credit.heartbeat(now)
        elif status == "408":
            self.credit.expired()
        else:  # 409 (e.g. "Server Shutdown"), 503 (no such consumer), ...
            refusal = f"{status} {(msg.headers or {}).get('Description', '')}"
            if refusal != self._refusal:  # once per kind, not once per retry
                log.warning("pull on %s refused: %s; asking again every %.0f s", self.subject, refusal,
                            self.credit.retry_s)
                self._refusal = refusal
            self.credit.refused(now)
        self._wake.set()

    async def _ask_if_needed(self) -> None:
        reconnects = self.nc.stats.get("reconnects", 0)
        if reconnects != self._reconnects:  # a new connection: the server may have lost the request
            self._reconnects = reconnects
            self.credit.expired()
        now = time.monotonic()
        standing = self.credit.owed > 0
        if self.credit.should_ask(now):
            if standing:
                log.warning("pull on %s: nothing (not even a heartbeat) for %.0f s; asking again", self.subject,
                            now - self.credit.heard_at)
            await self.nc.publish(self.subject, json.dumps(self.credit.request(now)).encode(), reply=self._inbox)

    async def next_batch(self, limit: int, wait: float) -> list[Msg]:
        """Up to ``limit`` messages: those already here at once, else the first to come within
        ``wait`` seconds (then everything that came with it); [] if none came."""
        assert self._sub is not None, "open the Puller first"
        deadline = time.monotonic() + wait
        while not self._buffer:
            await self._ask_if_needed()
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            self._wake.clear()
            # Wake for a message, a status, or when the request may be asked again or lost.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(),
                                       min(left, max(0.01, self.credit.next_check(time.monotonic()))))
        out = [self._buffer.popleft() for _ in range(min(limit, len(self._buffer)))]
        await self._ask_if_needed()
        return out

    async def close(self) -> None:
        """Stops the inbox (the server drops a request nobody listens to) and naks what was
        delivered but not handed out, so it is redelivered at once."""
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
            self._sub = None
        left, self._buffer = list(self._buffer), deque()
        with contextlib.suppress(nats.errors.Error):
            await asyncio.gather(*(msg.nak() for msg in left))
