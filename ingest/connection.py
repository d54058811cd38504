"""One client's stream: WebSocket in, JetStream out, results back through a bounded queue.

Tasks per connection, all owned here: the reader (this coroutine), one writer draining the
``SendQueue``, and the NATS subscription callback that only enqueues. Everything is torn down in
``finally`` whatever ended the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats
from aiohttp import WSCloseCode, WSMsgType, web
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NotFoundError

from common import metrics, subjects
from common.audio import TARGET_RATE, StreamResampler
from common.messages import (
    Result,
    SessionError,
    SessionFlushed,
    SpeechStarted,
    Transcript,
    UtteranceEnd,
    result_decoder,
)
from common.settings import Settings
from ingest import protocol as p
from ingest.auth import Gatekeeper
from ingest.finals import FinalOrderer
from ingest.outbox import Closing, Outbox
from ingest.rate_limit import RateLimiter, RateLimitOptions
from ingest.session_store import Admit, ResumeError, SessionRecord, SessionStore, hash_token
from ingest.viewer_tokens import viewer_token

log = logging.getLogger(__name__)

STORE_UPDATE_EVERY_S = 1.0  # activity and metrics reach the session store at most this often
MAX_PENDING_PUBLISHES = 64  # per session: unacknowledged audio publishes before reading pauses
REPAIR_AFTER_S = 2.0  # finals still missing this long after session_flushed are read from the stream


@dataclass
class EdgeContext:
    """What every connection of one edge shares."""

    settings: Settings
    nc: NATS
    js: JetStreamContext
    store: SessionStore
    edge_id: str
    gate: Gatekeeper
    started_at: float = field(default_factory=time.time)
    draining: bool = False
    connections: set[Connection] = field(default_factory=set)
    workers: dict[str, list[str]] = field(default_factory=dict)  # live worker ids by role
    store_ok: bool = True  # the session store answered the last heartbeat
    totals: dict[str, int] = field(default_factory=dict)  # this edge's counters for /v1/metrics

    def count(self, name: str, n: int = 1) -> None:
        self.totals[name] = self.totals.get(name, 0) + n


class Connection:
    def __init__(
        self, ctx: EdgeContext, ws: web.WebSocketResponse, sample_rate: int,
        transport: asyncio.Transport | None = None,
    ) -> None:
        self.ctx = ctx
        self.ws = ws
        self.transport = transport  # aborted when a client that stopped reading must go
        self.settings = ctx.settings
        self.sample_rate = sample_rate
        self.conn_id = uuid.uuid4().hex  # this connection, as the session's owner in the store
        self.session_id = uuid.uuid4().hex
        self.resume_token = secrets.token_urlsafe(32)  # given to the client once, stored hashed
        self.record = SessionRecord(
            session_id=self.session_id,
            edge_id=ctx.edge_id,
            resume_token_hash=hash_token(self.resume_token),
            owner=self.conn_id,
            sample_rate=sample_rate,
        )
        self.subject = subjects.audio(self.session_id, self.settings.audio_shards)
        self.resampler = StreamResampler(sample_rate, TARGET_RATE)
        self.limiter = _rate_limiter(self.settings, sample_rate)
        self._flood_warned = False
        self.orderer = FinalOrderer()
        self._wake_flush = asyncio.Event()
        self._pending: deque[asyncio.Future[PubAck]] = deque()
        self._seq = 0
        self._offset = 0  # bytes of 16 kHz audio published
        self._final_utterances: set[str] = set()  # released finals, to drop their late partials
        self.started = time.monotonic()
        self._stored_at = 0.0
        self._messages_seen = 0
        self._subs: list[Any] = []
        self._replay_buffer: list[Result] | None = None  # results held back while resuming
        self._skip_upto_seq = 0  # finals the client already has (its last_seq on reconnect)
        self._end_state = "interrupted"
        self._publish_lock = asyncio.Lock()  # seq order on the bus = order of publish calls
        self._drain_target: int | None = None  # finals to deliver before closing for a drain
        self.counts = {"errors_sent": 0, "chunks": 0}
        self.out: Outbox | None = None  # created when the session is admitted

    def __repr__(self) -> str:
        return (
            f"<Connection {self.session_id} bytes={self.record.audio_bytes_received} "
            f"finals={self.record.transcripts_sent} queued={len(self.out) if self.out else 0}>"
        )

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        admitted = await self.ctx.store.admit(self.record)
        if admitted is not Admit.OK:
            metrics.SESSIONS_REJECTED.labels(admitted.value).inc()
            metrics.CLIENT_ERRORS.labels(p.CAPACITY).inc()
            await self.ws.send_json(p.error(p.CAPACITY, "Service at capacity, please try again"))
            await self.ws.close(code=p.CLOSE_CAPACITY, message=b"At capacity")
            return
        metrics.SESSIONS_TOTAL.inc()
        metrics.ACTIVE_SESSIONS.inc()
        self.ctx.connections.add(self)
        self.out = Outbox(self.ws, self.transport, max_queue=self.settings.max_send_queue_size,
                          slow_threshold=self.settings.slow_send_threshold, count=self.ctx.count,
                          label=self.session_id)
        close = Closing(p.CLOSE_NORMAL, "")
        try:
            await self._subscribe()
            self.record.state = "active"
            await self.ctx.store.update(self.record)
            self._out.send(
                {**p.session_started(self.session_id, self.resume_token, self.ctx.edge_id, self.sample_rate),
                 "viewer_token": viewer_token(self.settings, self.session_id)},
                droppable=False,
            )
            log.info("session %s started (sample_rate=%d)", self.session_id, self.sample_rate,
                     extra={"session_id": self.session_id})
            close = await self._read_loop()
        except (TimeoutError, ConnectionError) as exc:
            log.warning("session %s: bus error: %r", self.session_id, exc, extra={"session_id": self.session_id})
            self._client_error(p.INTERNAL, "Audio bus unavailable, please reconnect")
            close = Closing(p.CLOSE_INTERNAL, "Internal error")
        finally:
            # The bookkeeping must finish even if aiohttp cancels this handler (a dropped client):
            # otherwise the session would never be released.
            await asyncio.shield(self._close_and_release(self.out, close))

    async def _close_and_release(self, out: Outbox, close: Closing) -> None:
        try:
            await out.close(close)
        finally:
            await self._unsubscribe()
            for fut in self._pending:
                fut.cancel()
            self.ctx.connections.discard(self)
            metrics.ACTIVE_SESSIONS.dec()
            self.record.state = self._end_state
            await self.ctx.store.update(self.record)
            await self.ctx.store.release(self.session_id, self.conn_id, self._end_state)
            log.info(
                "session %s ended in %.2fs: close=%d %s audio=%.1fs finals=%d partials=%d dropped=%d",
                self.session_id, time.monotonic() - self.started, close.code, close.reason or "-",
                self.record.audio_bytes_received / (2 * self.sample_rate), self.record.transcripts_sent,
                out.partials_sent, out.dropped,
                extra={"session_id": self.session_id},
            )

    async def _subscribe(self) -> None:
        nc = self.ctx.nc
        self._subs = [
            await nc.subscribe(subjects.results(self.session_id), cb=self._on_result),
            await nc.subscribe(subjects.takeover(self.session_id), cb=self._on_takeover),
        ]

    async def _unsubscribe(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        self._subs = []

    async def _on_takeover(self, msg: Msg) -> None:
        if msg.data.decode() != self.conn_id:
            log.info("session %s resumed on another connection: closing this one", self.session_id,
                     extra={"session_id": self.session_id})
            self._end_state = "active"  # the session goes on elsewhere
            self._out.fail(Closing(p.CLOSE_NORMAL, "Session resumed on another connection"))

    # --- client -> bus ----------------------------------------------------------------------

    async def _read_loop(self) -> Closing:
        idle = self.settings.idle_timeout_seconds
        loop = asyncio.get_running_loop()
        last_message = loop.time()
        while True:
            if self._out.fatal is not None:
                return self._out.fatal
            try:
                # Our own deadline: aiohttp restarts its receive timeout on every pong, so a client
                # that only answers pings would never be idle.
                async with asyncio.timeout_at(last_message + idle):
                    msg = await self.ws.receive()
            except TimeoutError:
                return Closing(p.CLOSE_NORMAL, f"Idle timeout: no audio or keepalive for {idle:g} s")
            last_message = loop.time()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return Closing(p.CLOSE_NORMAL, "Client closed")
            if msg.type == WSMsgType.ERROR:
                return self._frame_error(msg.data)
            t0 = time.perf_counter()
            self._messages_seen += 1
            try:
                if msg.type == WSMsgType.BINARY:
                    command: p.Command = p.parse_binary(msg.data, self.settings.max_chunk_bytes)
                else:
                    command = p.parse_text(msg.data, self.settings.max_chunk_bytes)
                done = await self._handle(command)
            except p.ProtocolError as exc:
                self._client_error(exc.code, exc.message)
                done = None
            except (TimeoutError, ConnectionError):
                raise
            except Exception:  # a bug of ours: tell the client, keep the session and the log
                log.exception("session %s: failed to handle a message", self.session_id,
                              extra={"session_id": self.session_id})
                self._client_error(p.INTERNAL, "Internal error handling this message")
                done = None
            metrics.REQUEST_LATENCY.observe(time.perf_counter() - t0)
            if done is not None:
                return done

    def _frame_error(self, exc: BaseException) -> Closing:
        code = getattr(exc, "code", None)
        if code == WSCloseCode.MESSAGE_TOO_BIG:
            self._count_error(p.CHUNK_TOO_LARGE)  # the socket already told the client (EdgeWebSocket)
            return Closing(p.CLOSE_TOO_BIG, "Frame too large")
        log.info("session %s: websocket error %r", self.session_id, exc, extra={"session_id": self.session_id})
        return Closing(p.CLOSE_NORMAL, "WebSocket protocol error")

    async def _handle(self, command: p.Command) -> Closing | None:
        match command:
            case p.Audio(pcm=pcm):
                await self._audio(pcm)
            case p.KeepAlive():
                pass
            case p.Finalize():
                await self._publish("finalize", b"")
            case p.End():
                return await self._end()
            case p.Reconnect():
                await self._resume(command)
        return None

    async def _audio(self, pcm: bytes) -> None:
        await self._pace(len(pcm))
        pcm16k = self.resampler.process(pcm)
        self.record.audio_bytes_received += len(pcm)
        self.record.last_activity_at = time.time()
        await self._store_now_and_then()
        self.counts["chunks"] += 1
        metrics.CHUNKS_RECEIVED.inc()
        metrics.BYTES_RECEIVED.inc(len(pcm))
        if pcm16k:
            await self._publish("audio", pcm16k)

    async def _pace(self, nbytes: int) -> None:
        """Audio faster than max_realtime_factor × real time: stop reading this socket for a while
        (TCP pushes back on the client) instead of buffering; tell a persistent flooder once."""
        if self.limiter is None:
            return
        wait = self.limiter.admit(nbytes, time.monotonic())
        if wait <= 0:
            self._flood_warned = False
            return
        if self.limiter.flooding(time.monotonic()) and not self._flood_warned:
            self._flood_warned = True
            metrics.RATE_LIMITED.inc()
            self._client_error(
                p.RATE_LIMITED,
                f"Audio arrives faster than {self.settings.max_realtime_factor:g}x real time; "
                "it is being slowed down, send it at the pace it is spoken",
            )
        metrics.THROTTLED_SECONDS.inc(wait)
        await asyncio.sleep(wait)

    async def _end(self) -> Closing:
        tail = self.resampler.flush()
        if tail:
            await self._publish("audio", tail)
        await self._publish("end", b"")
        self._end_state = "closed"
        self.record.state = "closing"
        await self.ctx.store.update(self.record)
        await self._wait_acks()
        try:
            await asyncio.wait_for(self._await_all_finals(), self.settings.end_flush_timeout_seconds)
        except TimeoutError:
            log.warning(
                "session %s: finals incomplete after %.0fs (released %d, expected %s)",
                self.session_id, self.settings.end_flush_timeout_seconds, self.orderer.released,
                self.orderer.expected_total, extra={"session_id": self.session_id},
            )
        # Ended on purpose: from now on the session cannot be resumed.
        self.record.state = "closed"
        await self.ctx.store.update(self.record)
        self._out.send({"type": "session_ended", "metrics": self.session_metrics()}, droppable=False)
        return Closing(p.CLOSE_NORMAL, "Session ended")

    async def _await_all_finals(self) -> None:
        """Waits until every final the VAD worker announced was sent; after REPAIR_AFTER_S
        without progress, reads what the live subscription may have missed from the stream."""
        while not self.orderer.complete and self._out.fatal is None:
            self._wake_flush.clear()
            try:
                await asyncio.wait_for(self._wake_flush.wait(), REPAIR_AFTER_S)
            except TimeoutError:
                await self._repair_from_stream()

    async def _repair_from_stream(self) -> None:
        """Reads finals the live subscription missed from the RESULTS stream."""
        try:
            if self.orderer.expected_total is None:
                flushed = await self.ctx.js.get_last_msg(subjects.RESULTS_STREAM,
                                                         subjects.result_flushed(self.session_id))
                if flushed.data:
                    self._handle_result(result_decoder.decode(flushed.data))
        except NotFoundError:
            pass
        if self.orderer.missing:
            for final in await self._stored_finals():
                self._handle_result(final)

    async def _stored_finals(self) -> list[Result]:
        """Every final of this session kept in the RESULTS stream, in stream order."""
        out: list[Result] = []
        seq = 0
        while True:
            try:
                stored = await self.ctx.js.get_msg(subjects.RESULTS_STREAM, seq=seq + 1, next=True,
                                                   subject=subjects.result_final(self.session_id))
            except NotFoundError:
                return out
            seq = stored.seq or seq + 1
            if stored.data:
                out.append(result_decoder.decode(stored.data))

    # --- resume -----------------------------------------------------------------------------

    async def _resume(self, command: p.Reconnect) -> None:
        if self._messages_seen != 1:
            raise p.ProtocolError(p.INVALID_MESSAGE, "reconnect must be the first message of a connection")
        if not subjects.valid_session_id(command.previous_session_id):
            raise p.ProtocolError(p.RESUME_FAILED, "Unknown session or wrong resume token")
        try:
            record = await self.ctx.store.resume(command.previous_session_id, command.resume_token, self.conn_id)
            if record.sample_rate != self.sample_rate:
                await self.ctx.store.release(record.session_id, self.conn_id, "interrupted")
                raise ResumeError(f"Reconnect with the session's sample_rate={record.sample_rate}, "
                                  f"not {self.sample_rate}")
        except ResumeError as exc:
            metrics.SESSIONS_RESUMED.labels("refused").inc()
            raise p.ProtocolError(p.RESUME_FAILED, exc.reason) from None
        # The fresh session of this connection was never used: give its place back.
        await self._unsubscribe()
        await self.ctx.store.release(self.session_id, self.conn_id, "closed")
        previous_sent = record.transcripts_sent
        self.session_id, self.record = record.session_id, record
        self.subject = subjects.audio(self.session_id, self.settings.audio_shards)
        self._skip_upto_seq = command.last_seq
        self.record.transcripts_sent = command.last_seq
        self._replay_buffer = []
        await self._subscribe()
        await self.ctx.nc.publish(subjects.takeover(self.session_id), self.conn_id.encode())
        audio_bytes = await self._continue_audio_position(record)
        stored = await self._stored_finals()
        self._out.send({
            "type": "session_recovered",
            "previous_session_id": self.session_id,
            "previous_metrics": {"audio_bytes_received": audio_bytes, "transcripts_sent": previous_sent},
            "message": f"Previous session recovered. {previous_sent} transcripts completed.",
        }, droppable=False)
        live, self._replay_buffer = self._replay_buffer, None
        for result in [*stored, *live]:
            self._handle_result(result)
        metrics.SESSIONS_RESUMED.labels("ok").inc()
        await self.ctx.store.update(self.record)
        log.info("session %s resumed (client had %d finals, %d stored)", self.session_id, command.last_seq,
                 self.orderer.seq, extra={"session_id": self.session_id})

    async def _continue_audio_position(self, record: SessionRecord) -> int:
        """Continues the session's audio seq and offset after what the AUDIO stream holds; returns
        the audio bytes the service has, at the session's original sample rate."""
        try:
            last = await self.ctx.js.get_last_msg(subjects.AUDIO_STREAM, self.subject)
        except NotFoundError:
            return 0
        headers = last.headers or {}
        self._seq = int(headers.get(subjects.H_SEQ, 0))
        self._offset = int(headers.get(subjects.H_OFFSET, 0)) + len(last.data or b"")
        stored_bytes = self._offset * record.sample_rate // TARGET_RATE
        record.audio_bytes_received = max(record.audio_bytes_received, stored_bytes)
        return record.audio_bytes_received

    async def _store_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._stored_at >= STORE_UPDATE_EVERY_S:
            self._stored_at = now
            await self.ctx.store.update(self.record)

    async def _publish(self, kind: str, payload: bytes) -> None:
        async with self._publish_lock:
            self._seq += 1
            headers = {
                subjects.H_MSG_ID: f"{self.session_id}.{self._seq}",
                subjects.H_KIND: kind,
                subjects.H_SEQ: str(self._seq),
                subjects.H_OFFSET: str(self._offset),
                subjects.H_SENT_AT: f"{time.time():.6f}",
            }
            self._offset += len(payload)
            future = await self.ctx.js.publish_async(self.subject, payload, headers=headers)
            self._pending.append(future)
        while len(self._pending) > MAX_PENDING_PUBLISHES or (self._pending and self._pending[0].done()):
            await self._ack(self._pending.popleft())

    async def drain(self, timeout: float) -> None:
        """The edge is shutting down: cut the open utterance, deliver every final of the session so
        far (bounded by ``timeout``), then close with 1012 so the client resumes on another edge."""
        try:
            # With no audio sent, no final can be pending: close straight away.
            if self._offset:
                async with asyncio.timeout(timeout):
                    await self._wait_for_drained_finals()
        except (TimeoutError, ConnectionError) as exc:
            log.warning("session %s: drain incomplete (%r); closing anyway", self.session_id, exc,
                        extra={"session_id": self.session_id})
        self._end_state = "interrupted"
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(self.ws.close(code=p.CLOSE_DRAINING, message=b"Edge draining, reconnect"), 5)

    async def _wait_for_drained_finals(self) -> None:
        await self._publish("drain", b"")
        await self._wait_acks()
        while self._drain_target is None or self.orderer.released < self._drain_target:
            if self._out.fatal is not None or self.ws.closed:
                return
            self._wake_flush.clear()
            await self._wake_flush.wait()
        await self._out.drained()

    async def _ack(self, future: asyncio.Future[PubAck]) -> None:
        try:
            await asyncio.wait_for(future, self.settings.publish_timeout_seconds)
        except TimeoutError:
            raise ConnectionError("JetStream did not acknowledge audio in time") from None
        except Exception as exc:
            raise ConnectionError(f"JetStream refused audio: {exc}") from exc

    async def _wait_acks(self) -> None:
        while self._pending:
            await self._ack(self._pending.popleft())

    # --- bus -> client ----------------------------------------------------------------------

    async def _on_result(self, msg: Msg) -> None:
        try:
            result = result_decoder.decode(msg.data)
        except msgspec.DecodeError:
            log.error("session %s: undecodable result on %s", self.session_id, msg.subject)
            return
        self._handle_result(result)

    def _handle_result(self, result: Result) -> None:
        if self._replay_buffer is not None:
            self._replay_buffer.append(result)
            return
        if isinstance(result, Transcript) and result.published_at:
            metrics.STAGE_ASR_TO_EDGE.observe(max(0.0, time.time() - result.published_at))
        match result:
            case Transcript(is_final=True):
                for seq, final in self.orderer.add(result):
                    self._final_utterances.add(final.utterance_id)
                    if seq <= self._skip_upto_seq:
                        continue  # the client had it before it reconnected
                    self.record.transcripts_sent += 1
                    self._stored_at = 0.0  # store the new count soon
                    if final.speech_end_at:
                        metrics.FINAL_LATENCY.observe(max(0.0, time.time() - final.speech_end_at))
                    self._out.send(
                        p.transcript(is_final=True, seq=seq, utterance_id=final.utterance_id,
                                     text=final.text, start_s=final.start_s, end_s=final.end_s),
                        droppable=False,
                    )
                self._poke_flush()
            case Transcript():
                if result.utterance_id in self._final_utterances or not result.text:
                    return
                self._out.send(
                    p.transcript(is_final=False, utterance_id=result.utterance_id, text=result.text,
                                 start_s=result.start_s, end_s=result.end_s),
                    droppable=True,
                )
            case SpeechStarted():
                self._out.send({"type": "speech_started", "utterance_id": result.utterance_id,
                            "start_s": round(result.start_s, 3)}, droppable=True)
            case UtteranceEnd():
                self._out.send({"type": "utterance_end", "utterance_id": result.utterance_id,
                            "end_s": round(result.end_s, 3)}, droppable=True)
            case SessionFlushed(ended=False):
                self._drain_target = result.finals_total
                self._poke_flush()
            case SessionFlushed():
                self.orderer.expected_total = result.finals_total
                self._poke_flush()
            case SessionError():
                self._client_error(result.code, result.message)

    @property
    def _out(self) -> Outbox:
        assert self.out is not None, "the outbox exists from admission on"
        return self.out

    def _poke_flush(self) -> None:
        self._wake_flush.set()

    def _client_error(self, code: str, message: str) -> None:
        self._count_error(code)
        self._out.send(p.error(code, message), droppable=False)

    def _count_error(self, code: str) -> None:
        metrics.CLIENT_ERRORS.labels(code).inc()
        self.ctx.count(f"error.{code}")
        self.counts["errors_sent"] += 1

    def session_metrics(self) -> dict[str, Any]:
        return {
            "audio_bytes_received": self.record.audio_bytes_received,
            "audio_seconds": round(self.record.audio_bytes_received / (2 * self.sample_rate), 3),
            "chunks_received": self.counts["chunks"],
            "transcripts_sent": self.record.transcripts_sent,
            "partials_sent": self._out.partials_sent,
            "partials_dropped": self._out.dropped,
            "errors_sent": self.counts["errors_sent"],
            "duration_seconds": round(time.monotonic() - self.started, 3),
        }


def _rate_limiter(settings: Settings, sample_rate: int) -> RateLimiter | None:
    if not settings.max_realtime_factor:
        return None
    per_second = settings.max_realtime_factor * sample_rate * 2
    options = RateLimitOptions(
        bytes_per_second=per_second,
        burst_bytes=settings.rate_limit_burst_seconds * sample_rate * 2,
        grace_seconds=settings.rate_limit_grace_seconds,
    )
    return RateLimiter(options, time.monotonic())


