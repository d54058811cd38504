"""Pipelined JetStream publishes for the edge's audio path: send now, the stored sequence later.

nats-py's ``publish_async`` does the same for any caller, at a price paid on every audio chunk:
a random token (``os.urandom``), a semaphore wait, the reply's JSON parsed into a ``PubAck``
dataclass, and bookkeeping callbacks (together about 6 % of the edge's CPU at 1,000 sessions,
py-spy on ``benchmarks.edge_load``). The edge bounds its unacknowledged publishes per session
itself (``max_pending_publishes``), and needs only to know that JetStream stored the message, so
here one subscription per NATS connection takes every reply, a counter names each request, and a
reply that is a plain acknowledgement is taken without parsing it.

A reply that is not one (an API error, a missing stream) is parsed and raised the way nats-py
raises it: a subclass of ``nats.js.errors.APIError``, or ``NoStreamResponseError``. (nats-py's
own handler lets ``APIError.from_error`` raise inside its callback, so such a future never
resolves and the caller waits out its timeout.) A future the caller gives up
on (cancelled) is forgotten; its reply, if it ever comes, is ignored.

With ``linger_s`` > 0 (the ``publish_linger_ms`` setting) a message is not written at once: the
pipe gathers what every session of the edge sends for up to ``linger_s`` and writes it in one go,
as Kafka's producers do (``linger.ms``). Chunks of a hundred sessions arrive at a hundred
different moments; written one by one, each wakes nats-server, the edge (for its acknowledgement)
and the VAD worker (for its delivery) on its own, and at a few hundred messages a second those
wake-ups, not the bytes, are most of what the bus costs (docs/benchmarks.md, "Figure 4 with
chunks spread as independent clients send them"). The price is up to ``linger_s`` more before
audio is stored. Whatever was handed to ``send`` is written, as it would have been at once: also
when the caller stops waiting for it (a client that closes its socket right after its last chunk
still has that chunk stored; a message sent again after an outage is then written twice with one
``Nats-Msg-Id``, and JetStream keeps one), and what is held when the pipe closes. A write that
fails fails its future, which the caller handles as any failed publish
(``ingest.audio_publisher`` sends the message again).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
from collections import deque
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

_ACK_START = b'{"stream":'  # JetStream's PubAck; an error reply starts with {"error": or has a status
_NO_RESPONDERS = "503"
CLOSE_TIMEOUT_S = 5.0  # longest wait, when the pipe closes, for the writer to write what is held


@dataclass(slots=True)
class _Held:
    """A message gathered to be written with the others at the end of the linger."""

    subject: str
    payload: bytes
    reply: str
    headers: dict[str, str]
    future: asyncio.Future[int]


class JetStreamPipe:
    def __init__(self, nc: NATS, linger_s: float = 0.0) -> None:
        if linger_s < 0:
            raise ValueError(f"linger_s must be 0 or more, not {linger_s}")
        self.nc = nc
        self.linger_s = linger_s
        self._prefix = ""
        self._futures: dict[str, asyncio.Future[int]] = {}
        self._tokens = itertools.count(1)
        self._sub: Subscription | None = None
        self._starting = asyncio.Lock()
        self._held: deque[_Held] = deque()
        self._gathering = asyncio.Event()  # set while messages are held
        self._writer: asyncio.Task[None] | None = None
        self._closing = False

    def __repr__(self) -> str:
        return f"<JetStreamPipe waiting={len(self._futures)} held={len(self._held)}>"

    @property
    def waiting(self) -> int:
        return len(self._futures)

    async def send(self, subject: str, payload: bytes, headers: dict[str, str]) -> asyncio.Future[int]:
        """Publishes (at once, or at the end of the linger); the future gets the stream sequence
        JetStream stored the message at."""
        if self._sub is None:
            await self.start()
        token = str(next(self._tokens))
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._futures[token] = future
        future.add_done_callback(functools.partial(self._forget, token))
        if self.linger_s > 0:
            self._held.append(_Held(subject, payload, self._prefix + token, headers, future))
            self._gathering.set()
            return future
        try:
            await self.nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
        except BaseException:
            future.cancel()
            raise
        return future

    async def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            self._closing = True
            self._gathering.set()  # no more lingering: the writer writes what is held, then ends
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(writer, CLOSE_TIMEOUT_S)  # cancelled if NATS blocks it
        await self._write_held()  # what came meanwhile, as if it had been written at once
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with contextlib.suppress(nats.errors.ConnectionClosedError):  # closed first: nothing to undo
                await sub.unsubscribe()
        for future in list(self._futures.values()):
            future.cancel()

    async def _write_gathered(self) -> None:
        """The writer task (with a linger): waits for a first message, lets the others gather for
        ``linger_s``, then writes them all; nats-py's flusher sends them in one socket write."""
        while not self._closing:
            await self._gathering.wait()
            if not self._closing:
                await asyncio.sleep(self.linger_s)
            self._gathering.clear()
            await self._write_held()

    async def _write_held(self) -> None:
        """Writes the messages held now, oldest first; each leaves the queue as it is written."""
        for _ in range(len(self._held)):
            message = self._held.popleft()
            try:
                await self.nc.publish(message.subject, message.payload, reply=message.reply,
                                      headers=message.headers)
            except Exception as exc:  # the caller decides, as for a direct publish
                if not message.future.done():
                    message.future.set_exception(exc)

    def _forget(self, token: str, _: asyncio.Future[int]) -> None:
        self._futures.pop(token, None)

    async def start(self) -> None:
        """Subscribes to the replies (once; the first send does it if nobody did)."""
        async with self._starting:
            if self._sub is None:
                self._prefix = f"{self.nc.new_inbox()}."
                self._sub = await self.nc.subscribe(self._prefix + "*", cb=self._on_reply)
            if self.linger_s > 0 and self._writer is None:
                self._closing = False
                self._writer = asyncio.create_task(self._write_gathered(), name="jetstream-pipe-writer")

    async def _on_reply(self, msg: Msg) -> None:
        future = self._futures.get(msg.subject[len(self._prefix):])
        if future is None or future.done():
            return
        data = msg.data
        if not msg.headers and data.startswith(_ACK_START) and b'"error"' not in data:
            seq = data.find(b'"seq":')
            future.set_result(int(data[seq + 6:].split(b",", 1)[0].split(b"}", 1)[0]) if seq >= 0 else 0)
            return
        if msg.headers and msg.headers.get("Status") == _NO_RESPONDERS:
            future.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            reply = json.loads(data)
        except ValueError:
            future.set_exception(nats.js.errors.Error(f"unreadable JetStream reply: {data[:200]!r}"))
            return
        if "error" in reply:
            try:  # it raises the error's own class (BadRequestError, ServiceUnavailableError, ...)
                error = nats.js.errors.APIError.from_error(reply["error"])
            except nats.js.errors.Error as exc:
                error = exc
            future.set_exception(error)
        else:
            future.set_result(int(reply.get("seq", 0)))
