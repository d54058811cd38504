"""A session's way onto the bus: audio and control messages into JetStream, in order, acknowledged.

Publishes are pipelined (``ingest.jetstream_pipe``) with at most ``window`` unacknowledged; when the
window is full, ``publish`` waits for the oldest acknowledgement, so the connection stops reading
its socket and TCP pushes back on the client instead of the edge buffering without bound.

A short bus outage (nats-server restarting, a cluster node failing over) is ridden out: when an
acknowledgement does not come, every unacknowledged message is published again, in order, with
its original ``Nats-Msg-Id`` (JetStream drops the copies it already stored), until
``outage_timeout_s`` has passed since the outage began; only then does ``BusUnavailable`` end the
session. ``stored_offset`` is the audio JetStream has acknowledged, which is all the service may
promise a resuming client.

Small chunks are joined into one message (``ingest.audio_batch``, the ``audio_batch_ms`` setting):
``publish_audio`` holds them until enough audio is held, or until the oldest has waited that long
(a timer owned by the publisher sends it then). Anything else published, and ``flush``, sends
what is held first, so the bus sees the session's audio and control messages in the order they
came.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

import nats
from nats.aio.client import Client as NATS

from common import logs, metrics, subjects
from ingest.audio_batch import AudioBatch
from ingest.jetstream_pipe import JetStreamPipe

log = logging.getLogger(__name__)

RETRY_EVERY_S = 0.5  # during an outage, publish the unacknowledged messages again this often


class BusUnavailable(ConnectionError):
    """JetStream did not take the session's audio for ``waited_s`` seconds."""

    def __init__(self, waited_s: float, pending: int) -> None:
        super().__init__(f"JetStream did not acknowledge audio for {waited_s:.1f} s ({pending} messages pending)")
        self.waited_s = waited_s
        self.pending = pending


@dataclass(slots=True)
class _Pending:
    subject: str
    payload: bytes
    headers: dict[str, str]
    end_offset: int  # session audio bytes (16 kHz) once this message is stored
    future: asyncio.Future[int]  # the stream sequence it was stored at
    sent_at: float  # monotonic time of the (latest) publish


class AudioPublisher:
    def __init__(
        self, nc: NATS, pipe: JetStreamPipe, session_id: str, *, window: int, ack_timeout_s: float,
        outage_timeout_s: float, seq: int = 0, offset: int = 0, options_header: str = "",
        batch: AudioBatch | None = None,
    ) -> None:
        self.nc, self.pipe = nc, pipe
        self.window = window
        self.ack_timeout_s = ack_timeout_s
        self.outage_timeout_s = outage_timeout_s
        self.session_id = session_id
        self.options_header = options_header  # per-session VAD overrides (JSON), or ""
        self.seq = seq  # last message sequence handed out
        self.offset = offset  # session audio bytes handed out
        self.stored_offset = offset  # session audio bytes JetStream acknowledged
        self.outages = 0
        self._pending: deque[_Pending] = deque()
        self._lock = asyncio.Lock()  # seq order on the bus = order of publish calls
        self._abandoned = False
        self._batch = batch  # audio held to be joined with the next chunks (None: every chunk goes out)
        self._subject = ""  # where held audio goes
        self._timer: asyncio.TimerHandle | None = None  # sends held audio once it is due
        self._sender: asyncio.Task[None] | None = None  # the timer's send, while it runs
        self._send_error: BaseException | None = None  # what the timer's send ran into, raised to the reader

    def __repr__(self) -> str:
        return f"<AudioPublisher {self.session_id} seq={self.seq} pending={len(self._pending)}>"

    def continue_at(self, seq: int, offset: int) -> None:
        """A resumed session carries on after what the AUDIO stream holds."""
        self.seq, self.offset, self.stored_offset = seq, offset, offset

    @property
    def handed_in(self) -> int:
        """Session audio bytes given to this publisher: published, or held to be joined."""
        return self.offset + (self._batch.held if self._batch is not None else 0)

    async def publish_audio(self, payload: bytes, subject: str) -> None:
        """Publishes a chunk of audio, or holds it to join it with the next ones (``AudioBatch``)."""
        if self._batch is None:
            await self.publish("audio", payload, subject)
            return
        self._raise_send_error()
        async with self._lock:
            self._subject = subject
            out = self._batch.add(payload, time.monotonic())
            if out is not None:
                self._disarm()
                await self._publish_locked("audio", out, subject)
            elif self._timer is None:
                self._arm()

    async def publish(self, kind: str, payload: bytes, subject: str) -> None:
        """Publishes ``payload`` as a message of ``kind``, after any audio held."""
        self._raise_send_error()
        async with self._lock:
            await self._send_held()
            await self._publish_locked(kind, payload, subject)

    async def send_held(self) -> None:
        """Publishes the audio held now, without waiting for its acknowledgement (the client closed
        its socket right after its last chunk: what it sent is stored, as it would be one by one)."""
        async with self._lock:
            await self._send_held(settle=False)

    def _on_due(self) -> None:
        self._timer = None
        if self._sender is None and not self._abandoned:
            self._sender = asyncio.create_task(self._send_due(), name=f"audio-batch-{self.session_id}")

    async def _send_due(self) -> None:
        try:
            async with self._lock:
                if self._batch is not None and self._batch.due(time.monotonic()):
                    await self._send_held(settle=False)
        except (nats.errors.Error, OSError, ConnectionError) as exc:
            self._send_error = exc  # the reader's next publish raises it
        finally:
            self._sender = None
        if self._timer is None and not self._abandoned:
            self._arm()  # audio that came while it waited for the lock

    def _arm(self) -> None:
        """Sets the timer for the audio held, if any."""
        deadline = self._batch.deadline() if self._batch is not None else None
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_later(max(0.0, deadline - time.monotonic()), self._on_due)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _raise_send_error(self) -> None:
        if self._send_error is not None:
            exc, self._send_error = self._send_error, None
            raise exc

    async def _send_held(self, *, settle: bool = True) -> None:
        """Under the lock: publishes the audio held, if any."""
        if self._batch is None or not self._batch.held:
            return
        self._disarm()
        await self._publish_locked("audio", self._batch.take(), self._subject, settle=settle)

    async def _publish_locked(self, kind: str, payload: bytes, subject: str, *, settle: bool = True) -> None:
        self.seq += 1
        headers = {
            subjects.H_MSG_ID: f"{self.session_id}.{self.seq}",
            subjects.H_KIND: kind,
            subjects.H_SEQ: str(self.seq),
            subjects.H_OFFSET: str(self.offset),
            subjects.H_SENT_AT: f"{time.time():.6f}",
        }
        if self.options_header:
            headers[subjects.H_OPTIONS] = self.options_header
        self.offset += len(payload)
        future = await self._send(subject, payload, headers)
        if kind == "audio":
            metrics.AUDIO_MESSAGES_PUBLISHED.inc()
        self._pending.append(_Pending(subject, payload, headers, self.offset, future, time.monotonic()))
        while settle and (len(self._pending) > self.window or self._head_due()):
            await self._settle_oldest()

    async def settle_overdue(self) -> None:
        """Settles acknowledgements that are due (called now and then when no audio arrives, so a
        message lost in an outage is published again even if the client sends nothing more)."""
        if self._lock.locked():
            return
        async with self._lock:
            while self._head_due():
                await self._settle_oldest()

    def _head_due(self) -> bool:
        """The oldest publish is answered, or overdue (its ack may have been lost in an outage)."""
        if not self._pending:
            return False
        head = self._pending[0]
        return head.future.done() or time.monotonic() - head.sent_at >= self.ack_timeout_s

    async def flush(self) -> None:
        """Returns once everything published so far, and the audio held, is stored."""
        self._raise_send_error()
        async with self._lock:
            await self._send_held(settle=False)
            while self._pending:
                await self._settle_oldest()

    def abandon(self) -> None:
        """The session's connection is closing: stop waiting for acknowledgements. Audio still
        held (the connection ended other than by the client's close, before it was due) was never
        acknowledged, so a resuming client sends it again (it resumes from ``stored_offset``)."""
        self._abandoned = True
        self._disarm()
        if self._sender is not None:
            self._sender.cancel()
        if self._batch is not None:
            self._batch.take()
        for pending in self._pending:
            pending.future.cancel()
        self._pending.clear()

    async def _send(self, subject: str, payload: bytes, headers: dict[str, str]) -> asyncio.Future[int]:
        return await self.pipe.send(subject, payload, headers)

    async def _settle_oldest(self) -> None:
        if self._abandoned:
            raise _closed()
        head = self._pending[0]
        try:
            if not head.future.done():  # usually it is (see _head_due): no timer, no extra loop turn
                await asyncio.wait_for(asyncio.shield(head.future), self.ack_timeout_s)
            head.future.result()
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error, OSError) as exc:
            await self._ride_out(exc)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._abandoned and not (task is not None and task.cancelling()):
                raise _closed() from None  # abandon() cancelled the future we waited on
            raise
        if self._abandoned:
            raise _closed()
        done = self._pending.popleft()
        self.stored_offset = done.end_offset

    async def _ride_out(self, first: BaseException) -> None:
        """The oldest message was not acknowledged: publish every pending one again until the
        oldest is stored, or give up after ``outage_timeout_s``."""
        self.outages += 1
        metrics.BUS_OUTAGES.inc()
        began = time.monotonic()
        logs.for_session(log, self.session_id).warning(
            "JetStream did not acknowledge audio (%r); publishing %d messages again", first, len(self._pending))
        while True:
            waited = time.monotonic() - began
            if waited >= self.outage_timeout_s:
                raise BusUnavailable(waited, len(self._pending))
            if self.nc.is_connected:
                try:
                    for pending in self._pending:
                        if not pending.future.done() or pending.future.cancelled() or pending.future.exception():
                            pending.future.cancel()
                            pending.future = await self._send(pending.subject, pending.payload, pending.headers)
                            pending.sent_at = time.monotonic()
                    head = self._pending[0].future
                    await asyncio.wait_for(asyncio.shield(head), min(self.ack_timeout_s, RETRY_EVERY_S * 4))
                    head.result()
                    logs.for_session(log, self.session_id).info("JetStream took the audio again after %.1f s",
                                                                time.monotonic() - began)
                    return
                except (TimeoutError, nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                    logs.for_session(log, self.session_id).debug("still no acknowledgement: %r", exc)
            await asyncio.sleep(RETRY_EVERY_S)


def _closed() -> ConnectionError:
    return ConnectionError("the session's connection closed while its audio was being stored")
