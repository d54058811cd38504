"""One client's stream: the thin shell that wires a WebSocket to the engines and the bus.

Policy lives in the engines beside it: ``protocol`` (what a client message means),
``rate_limit`` (pacing), ``audio_publisher`` (audio onto the bus, acknowledged, through outages),
``delivery`` (what the client is sent and when: order, skip, pacing, gaps, targets),
``outbox`` (the bounded queue and the writer), ``stored_results`` (the durable path back).
A ``Wire`` translates at the two ends only: client frames into native commands as they are read,
native messages into the client's as the writer sends them (``NativeWire``, docs/protocol.md,
is the identity; ``ingest.deepgram`` is Deepgram's live API). Everything between is shared.

Tasks per connection, all owned here: the reader (this coroutine), the outbox's writer, and a
watcher that acts on the delivery engine's gap actions. The NATS subscription callbacks only feed
the engine. Everything is torn down in ``finally`` whatever ended the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from typing import Any, Protocol

import msgspec
import nats
from aiohttp import WSCloseCode, WSMsgType, web
from nats.aio.msg import Msg

from common import logs, metrics, subjects, tasks
from common.audio import TARGET_RATE, StreamResampler
from common.messages import Result, SessionFlushed, Transcript, TranscriptionFailed, result_decoder
from ingest import protocol as p
from ingest import stored_results
from ingest.audio_batch import AudioBatch
from ingest.audio_publisher import AudioPublisher, BusUnavailable
from ingest.context import STORE_ERRORS, EdgeContext
from ingest.delivery import Delivery, DeliveryOptions, GiveUp, Repair
from ingest.edge_settings import EdgeSettings
from ingest.idle_deadline import IdleDeadline
from ingest.outbox import Closing, Outbox
from ingest.rate_limit import RateLimiter, RateLimitOptions
from ingest.session_store import Admit, ResumeError, SessionRecord, hash_token
from ingest.viewer_tokens import viewer_token

log = logging.getLogger(__name__)

STORE_UPDATE_EVERY_S = 1.0  # activity, position and metrics reach the session store at most this often
WATCH_EVERY_S = 0.25  # how often the watcher asks the delivery engine about gaps


class Wire(Protocol):
    """A wire format on top of the native session: what a client frame means (a native command)
    and what the client gets for each native server message (zero or more messages of its own).
    The session logic never sees anything but native commands and messages."""

    def parse(self, data: bytes | str, max_chunk_bytes: int) -> p.Command:
        """A binary (``bytes``) or text (``str``) frame as a command; ``p.ProtocolError`` if bad."""
        ...

    def render(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """The messages the client is sent for one native message, in order ([] suppresses it)."""
        ...


class NativeWire:
    """docs/protocol.md: the native wire is the identity."""

    def parse(self, data: bytes | str, max_chunk_bytes: int) -> p.Command:
        if isinstance(data, bytes):
            return p.parse_binary(data, max_chunk_bytes)
        return p.parse_text(data, max_chunk_bytes)

    def render(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        return [message]


class Connection:
    def __init__(
        self, ctx: EdgeContext, ws: web.WebSocketResponse, sample_rate: int,
        transport: asyncio.Transport | None = None, *, wire: Wire | None = None, options_header: str = "",
    ) -> None:
        self.ctx = ctx
        self.ws = ws
        self.wire: Wire = wire or NativeWire()
        self.options_header = options_header  # per-session VAD overrides on every audio message, or ""
        self.transport = transport  # aborted when a client that stopped reading must go
        self.settings = s = ctx.settings
        self.sample_rate = sample_rate
        self.conn_id = uuid.uuid4().hex  # this connection, as the session's owner in the store
        self.resume_token = secrets.token_urlsafe(32)  # given to the client once, stored hashed
        self.record = SessionRecord(
            session_id=uuid.uuid4().hex,
            edge_id=ctx.edge_id,
            resume_token_hash=hash_token(self.resume_token),
            owner=self.conn_id,
            sample_rate=sample_rate,
        )
        self.log = logs.for_session(log, self.session_id)
        self.resampler = StreamResampler(sample_rate, TARGET_RATE)
        self.limiter = _rate_limiter(s, sample_rate)
        self._flood_warned = False
        self.delivery_options = DeliveryOptions(
            repair_after_s=s.final_repair_after_seconds, give_up_after_s=s.final_gap_timeout_seconds,
            max_waiting_finals=s.max_waiting_finals,
        )
        self.delivery = Delivery(self.delivery_options)
        self.publisher = self._publisher_for(self.session_id)
        self.cursor = stored_results.FinalsCursor(ctx.js, self.session_id)
        self.started = time.monotonic()
        self._stored_at = 0.0
        self._probed_at = time.monotonic()
        self._messages_seen = 0
        self._subs: list[Any] = []
        self._held: list[Result] | None = None  # results held back while a resume positions delivery
        self._newest_takeover = 0  # highest takeover epoch announced while resuming
        self._end_state = "interrupted"
        self._ending_since: float | None = None  # `end` published: waiting for the VAD's flush
        self._progress = asyncio.Event()  # set whenever delivery moves (finals released, targets)
        self.counts = {"errors_sent": 0, "chunks": 0, "bytes": 0}
        self.out: Outbox | None = None  # created when the session is admitted
        self._watcher: asyncio.Task[None] | None = None

    @property
    def session_id(self) -> str:
        return self.record.session_id

    def __repr__(self) -> str:
        return (f"<Connection {self.session_id} stored={self.publisher.stored_offset} "
                f"{self.delivery!r} queued={len(self.out) if self.out else 0}>")

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        admitted = await self.ctx.store.admit(self.record)
        if admitted is not Admit.OK:
            metrics.SESSIONS_REJECTED.labels(admitted.value).inc()
            metrics.CLIENT_ERRORS.labels(p.CAPACITY).inc()
            for message in self.wire.render(p.error(p.CAPACITY, "Service at capacity, please try again")):
                await self.ws.send_json(message)
            await self.ws.close(code=p.CLOSE_CAPACITY, message=b"At capacity")
            return
        metrics.SESSIONS_TOTAL.inc()
        metrics.ACTIVE_SESSIONS.inc()
        self.ctx.connections.add(self)
        self.out = Outbox(self.ws, self.transport, max_queue=self.settings.max_send_queue_size,
                          slow_threshold=self.settings.slow_send_threshold, count=self.ctx.count,
                          label=self.session_id, render=self.wire.render)
        self.out.on_sent = self._pump
        close = Closing(p.CLOSE_NORMAL, "")
        try:
            self._subs = await self._subscribe(self.session_id)
            self.record.state = "active"
            await self._store_update()
            self._watcher = asyncio.create_task(self._watch(), name=f"watch-{self.session_id}")
            self._out.send(
                {**p.session_started(self.session_id, self.resume_token, self.ctx.edge_id, self.sample_rate),
                 "viewer_token": viewer_token(self.settings, self.session_id)},
                droppable=False,
            )
            self.log.info("started (sample_rate=%d)", self.sample_rate)
            close = await self._read_loop()
        except (BusUnavailable, nats.errors.Error) as exc:
            self.log.warning("bus unavailable: %s", exc)
            self._client_error(p.INTERNAL, "Audio bus unavailable, please reconnect")
            close = Closing(p.CLOSE_INTERNAL, "Internal error")
        finally:
            # The bookkeeping must finish even if aiohttp cancels this handler (a dropped client):
            # otherwise the session would never be released.
            await asyncio.shield(self._close_and_release(self.out, close))

    async def _close_and_release(self, out: Outbox, close: Closing) -> None:
        try:
            if self._watcher is not None:
                await tasks.stop(self._watcher)
            await out.close(close)
        finally:
            await self._unsubscribe(self._subs)
            self.publisher.abandon()
            self.ctx.connections.discard(self)
            metrics.ACTIVE_SESSIONS.dec()
            self.record.state = self._end_state
            await self._store_update()  # best effort: the release below must happen regardless
            await self.ctx.release(self.session_id, self.conn_id, self._end_state)
            self.log.info(
                "ended in %.2fs: close=%d %s audio=%.1fs finals=%d partials=%d dropped=%d",
                time.monotonic() - self.started, close.code, close.reason or "-",
                self.record.audio_bytes_received / (2 * self.sample_rate), self.delivery.sent_finals,
                out.partials_sent, out.dropped,
            )

    async def _subscribe(self, session_id: str) -> list[Any]:
        nc = self.ctx.nc
        return [
            await nc.subscribe(subjects.results(session_id), cb=self._on_result),
            await nc.subscribe(subjects.takeover(session_id), cb=self._on_takeover),
        ]

    @staticmethod
    async def _unsubscribe(subs: list[Any]) -> None:
        for sub in subs:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        subs.clear()

    async def _on_takeover(self, msg: Msg) -> None:
        epoch_text, _, owner = msg.data.decode().partition(" ")
        if owner == self.conn_id:
            return
        if self._held is not None:  # resuming: judge it once our own epoch is known
            self._newest_takeover = max(self._newest_takeover, int(epoch_text))
            return
        self._taken_over(int(epoch_text))

    def _taken_over(self, epoch: int) -> None:
        if epoch > self.record.epoch:
            self.log.info("resumed on another connection (epoch %d > %d): closing this one", epoch, self.record.epoch)
            self._end_state = "active"  # the session goes on elsewhere
            self._out.fail(Closing(p.CLOSE_NORMAL, "Session resumed on another connection"))

    # --- client -> bus ----------------------------------------------------------------------

    async def _read_loop(self) -> Closing:
        idle = self.settings.idle_timeout_seconds
        # Our own deadline: aiohttp restarts its receive timeout on every pong, so a client that
        # only answers pings would never be idle.
        with IdleDeadline(idle) as deadline:
            while True:
                if self._out.fatal is not None:
                    return self._out.fatal
                try:
                    msg = await deadline.receive(self.ws.receive)
                except TimeoutError:
                    return Closing(p.CLOSE_NORMAL, f"Idle timeout: no audio or keepalive for {idle:g} s")
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    await self._send_held()
                    return Closing(p.CLOSE_NORMAL, "Client closed")
                if msg.type == WSMsgType.ERROR:
                    return self._frame_error(msg.data)
                t0 = time.perf_counter()
                self._messages_seen += 1
                try:
                    command = self.wire.parse(msg.data, self.settings.max_chunk_bytes)
                    done = await self._handle(command)
                except p.ProtocolError as exc:
                    self._client_error(exc.code, exc.message)
                    done = None
                except (BusUnavailable, nats.errors.Error):
                    raise
                except Exception:  # a bug of ours: tell the client, keep the session and the log
                    self.log.exception("failed to handle a message")
                    self._client_error(p.INTERNAL, "Internal error handling this message")
                    done = None
                metrics.REQUEST_LATENCY.observe(time.perf_counter() - t0)
                if done is not None:
                    return done

    async def _send_held(self) -> None:
        """The client closed its socket: the audio it sent last, held to be joined with chunks that
        will not come, is stored now (best effort: the bus may be down; the stored offset says
        what a resume starts from either way). Done here, as the close arrives, so it lands before
        the client can reconnect and resume on another connection."""
        with contextlib.suppress(nats.errors.Error, OSError, ConnectionError):
            await self.publisher.send_held()

    def _frame_error(self, exc: BaseException) -> Closing:
        code = getattr(exc, "code", None)
        if code == WSCloseCode.MESSAGE_TOO_BIG:
            self._count_error(p.CHUNK_TOO_LARGE)  # the socket already told the client (EdgeWebSocket)
            return Closing(p.CLOSE_TOO_BIG, "Frame too large")
        self.log.info("websocket error %r", exc)
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
        self.record.last_activity_at = time.time()
        self.counts["chunks"] += 1
        self.counts["bytes"] += len(pcm)
        metrics.CHUNKS_RECEIVED.inc()
        metrics.BYTES_RECEIVED.inc(len(pcm))
        if pcm16k:
            await self.publisher.publish_audio(pcm16k, self._audio_subject)
            self._note_stored_audio()
        await self._store_now_and_then()

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

    @property
    def _audio_subject(self) -> str:
        return subjects.audio(self.session_id, self.settings.bus.audio_shards)

    async def _publish(self, kind: str, payload: bytes) -> None:
        await self.publisher.publish(kind, payload, self._audio_subject)
        self._note_stored_audio()

    def _note_stored_audio(self) -> None:
        """Only audio JetStream acknowledged counts as received (what a resume may promise)."""
        stored = self.publisher.stored_offset * self.sample_rate // TARGET_RATE
        self.record.audio_bytes_received = max(self.record.audio_bytes_received, stored - stored % 2)

    async def _end(self) -> Closing:
        tail = self.resampler.flush()
        if tail:
            await self.publisher.publish_audio(tail, self._audio_subject)
        await self._publish("end", b"")
        self._end_state = "closed"
        self.record.state = "closing"
        await self.publisher.flush()
        self._note_stored_audio()
        await self._store_update()
        self._ending_since = time.monotonic()
        try:
            await asyncio.wait_for(self._until(lambda: self.delivery.complete), self.settings.end_flush_timeout_seconds)
        except TimeoutError:
            self.log.warning("finals incomplete after %.0fs (released %d, expected %s)",
                             self.settings.end_flush_timeout_seconds, self.delivery.released,
                             self.delivery.expected_total)
        if not self.delivery.revisions_settled:  # the last final but one is being revised
            try:
                await asyncio.wait_for(self._until(lambda: self.delivery.revisions_settled),
                                       self.settings.revision_end_wait_ms / 1000)
            except TimeoutError:
                self.log.info("no revision of the last final but one within %d ms; ending without it",
                              self.settings.revision_end_wait_ms)
        await self._out.drained()
        # Ended on purpose: from now on the session cannot be resumed.
        self.record.state = "closed"
        await self._store_update()
        self._out.send({"type": "session_ended", "metrics": self.session_metrics()}, droppable=False)
        return Closing(p.CLOSE_NORMAL, "Session ended")

    async def _until(self, condition: Any) -> None:
        """Waits until ``condition()`` holds or the connection is ending."""
        while not condition() and self._out.fatal is None and not self.ws.closed:
            self._progress.clear()
            await self._progress.wait()

    async def drain(self, timeout: float) -> None:
        """The edge is shutting down: cut the open utterance, deliver every final of the session so
        far (bounded by ``timeout``), then close with 1012 so the client resumes on another edge."""
        try:
            # With no audio sent, no final can be pending: close straight away.
            if self.publisher.handed_in:
                async with asyncio.timeout(timeout):
                    await self._publish("drain", b"")
                    await self.publisher.flush()
                    await self._until(lambda: self.delivery.drained and not self.delivery.ready)
                    await self._out.drained()
        except (TimeoutError, ConnectionError, nats.errors.Error) as exc:
            self.log.warning("drain incomplete (%r); closing anyway", exc)
        self._end_state = "interrupted"
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(self.ws.close(code=p.CLOSE_DRAINING, message=b"Edge draining, reconnect"), 5)

    # --- resume -----------------------------------------------------------------------------

    async def _resume(self, command: p.Reconnect) -> None:
        if self._messages_seen != 1:
            raise p.ProtocolError(p.INVALID_MESSAGE, "reconnect must be the first message of a connection")
        previous = command.previous_session_id
        if not subjects.valid_session_id(previous):
            raise p.ProtocolError(p.RESUME_FAILED, "Unknown session or wrong resume token")
        if previous == self.session_id:
            raise p.ProtocolError(p.RESUME_FAILED, "A connection cannot resume its own session")
        # Listen before taking the session over: a newer takeover must reach us, and results must
        # be held until delivery is positioned.
        self._held = []
        subs = await self._subscribe(previous)
        try:
            record = await self.ctx.store.resume(previous, command.resume_token, self.conn_id,
                                                 replaces=self.session_id, sample_rate=self.sample_rate)
        except (ResumeError, *STORE_ERRORS) as exc:
            self._held = None
            await self._unsubscribe(subs)
            metrics.SESSIONS_RESUMED.labels("refused").inc()
            reason = exc.reason if isinstance(exc, ResumeError) else "Session store unavailable, please try again"
            raise p.ProtocolError(p.RESUME_FAILED, reason) from None
        # This connection's fresh session gave its place to the resumed one (one step, in the store).
        fresh_subs, self._subs = self._subs, subs
        await self._unsubscribe(fresh_subs)
        self.record = record
        self.log = logs.for_session(log, self.session_id)
        self._out.label = self.session_id
        await self.ctx.nc.publish(subjects.takeover(self.session_id), f"{record.epoch} {self.conn_id}".encode())
        self.publisher = self._publisher_for(self.session_id)
        seq, offset = await stored_results.audio_position(self.ctx.js, self.session_id, self.settings.bus.audio_shards)
        self.publisher.continue_at(seq, offset)
        self._note_stored_audio()
        self.cursor = stored_results.FinalsCursor(self.ctx.js, self.session_id)
        stored = await self.cursor.read_new()
        self.delivery = Delivery(self.delivery_options)
        missed = self.delivery.resume(stored, anchor_index=record.final_index_released,
                                      anchor_seq=record.transcripts_sent, last_seq=command.last_seq,
                                      now=time.monotonic())
        # The stored position lags the dead connection by up to one watch tick; the finals stream
        # does not, so the count comes from delivery as positioned on it.
        completed = self.delivery.seq
        self._out.send({
            "type": "session_recovered",
            "previous_session_id": self.session_id,
            "previous_metrics": {"audio_bytes_received": self.record.audio_bytes_received,
                                 "transcripts_sent": completed},
            "message": f"Previous session recovered. {completed} transcripts completed.",
        }, droppable=False)
        for revision in missed:  # revisions of finals the client has, which it may have missed
            self._out.send(revision, droppable=True)
        held, self._held = self._held, None
        for result in held:
            self._deliver(result, live=True)
        self._pump()
        self._taken_over(self._newest_takeover)  # a newer reconnect won while this one resumed
        metrics.SESSIONS_RESUMED.labels("ok").inc()
        await self._store_update()
        self.log.info("resumed (epoch %d; client had seq %d, position %d/%d, %d finals stored)", record.epoch,
                      command.last_seq, record.transcripts_sent, record.final_index_released, len(stored))

    def _publisher_for(self, session_id: str) -> AudioPublisher:
        s = self.settings
        batch = (AudioBatch(s.audio_batch_ms * TARGET_RATE // 1000 * 2, s.audio_batch_ms / 1000)
                 if s.audio_batch_ms else None)
        return AudioPublisher(self.ctx.nc, self.ctx.pipe, session_id, window=s.max_pending_publishes,
                              ack_timeout_s=s.bus.publish_timeout_seconds,
                              outage_timeout_s=s.bus.bus_outage_timeout_seconds,
                              options_header=self.options_header, batch=batch)

    # --- bus -> client ----------------------------------------------------------------------

    async def _on_result(self, msg: Msg) -> None:
        try:
            result = result_decoder.decode(msg.data)
        except msgspec.DecodeError:
            self.log.error("undecodable result on %s", msg.subject)
            return
        if self._held is not None:
            self._held.append(result)
            return
        self._deliver(result, live=True)

    def _deliver(self, result: Result, *, live: bool) -> None:
        if isinstance(result, Transcript) and result.published_at and live:
            metrics.STAGE_ASR_TO_EDGE.observe(max(0.0, time.time() - result.published_at))
        released = self.delivery.add(result, time.monotonic(), live=live)
        for message in released.now:
            self._out.send(message, droppable=True)
        for final in released.finals:
            if final.speech_end_at:
                metrics.FINAL_LATENCY.observe(max(0.0, time.time() - final.speech_end_at))
        if released.finals or isinstance(result, SessionFlushed | TranscriptionFailed):
            self._stored_at = 0.0  # store the new position soon
        self._pump()

    def _pump(self) -> None:
        """Moves queued finals into the client's queue as far as it has room (pacing a backlog)."""
        out = self._out
        if out.fatal is not None:
            return
        for message in self.delivery.take(out.room):
            if message["type"] == "error":
                self._count_error(message["code"])
            out.send(message, droppable=False)
        if self.delivery.live_backlog > self.settings.max_send_queue_size:
            metrics.SLOW_CLIENT_CLOSES.inc()
            self.ctx.count("slow_client_closes")
            self.log.info("client too slow (%d live finals waiting): closing with 1008", self.delivery.live_backlog)
            out.fail(Closing(p.CLOSE_TOO_SLOW, "Client too slow"))
        self.record.transcripts_sent = self.delivery.seq
        self.record.final_index_released = self.delivery.released
        self._progress.set()

    async def _watch(self) -> None:
        """Acts on the delivery engine's gap actions; probes how far the stored finals go; reads
        the VAD's flush back when it did not arrive live after `end`."""
        loop = asyncio.get_running_loop()
        while True:
            # On the same grid of the loop's clock for every connection: the edge wakes once a
            # tick for all its sessions instead of once per session (docs/benchmarks.md, "The
            # sessions' watchers on one grid").
            await asyncio.sleep(WATCH_EVERY_S - loop.time() % WATCH_EVERY_S)
            try:
                await self._watch_once()
            except BusUnavailable as exc:
                self.log.warning("bus unavailable: %s", exc)
                self._client_error(p.INTERNAL, "Audio bus unavailable, please reconnect")
                self._out.fail(Closing(p.CLOSE_INTERNAL, "Internal error"))
                return
            except (TimeoutError, nats.errors.Error) as exc:
                self.log.warning("results stream unavailable: %s", exc)

    async def _watch_once(self) -> None:
        if self._held is not None:
            return  # a resume is repositioning delivery
        await self.publisher.settle_overdue()
        self._note_stored_audio()
        await self._store_now_and_then()  # the position moves with finals even when no audio comes
        now = time.monotonic()
        probe = self.settings.final_probe_seconds
        if probe and self.publisher.offset and now - self._probed_at >= probe:
            self._probed_at = now
            self.delivery.note_stored(await stored_results.last_final_index(self.ctx.js, self.session_id), now)
        ending = self._ending_since is not None and now - self._ending_since >= self.settings.final_repair_after_seconds
        if ending and self.delivery.expected_total is None:
            flushed = await stored_results.flushed(self.ctx.js, self.session_id)
            if flushed is not None and flushed.ended:
                self._deliver(flushed, live=False)
        for action in self.delivery.due(now):
            match action:
                case Repair():
                    for stored in await self.cursor.read_new():  # finals, and revisions of finals
                        self._deliver(stored, live=False)
                case GiveUp(final_index=index):
                    await self._give_up(index)

    async def _give_up(self, index: int) -> None:
        timeout = self.settings.final_gap_timeout_seconds
        failure = TranscriptionFailed(
            session_id=self.session_id, final_index=index, code=p.TRANSCRIPTION_FAILED,
            message=f"No transcript for this utterance within {timeout:g} s; it is skipped",
        )
        if await stored_results.declare_failed(self.ctx.js, failure):
            metrics.FINALS_FAILED.labels("edge_timeout").inc()
            self.log.warning("final %d missing for %.0f s: declared failed", index, timeout)
        for stored in await self.cursor.read_new():  # the failure, or the transcript that beat it
            self._deliver(stored, live=False)

    # --- bookkeeping ------------------------------------------------------------------------

    async def _store_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._stored_at >= STORE_UPDATE_EVERY_S:
            self._stored_at = now
            await self._store_update()

    async def _store_update(self) -> None:
        try:
            await self.ctx.store.update(self.record)
        except STORE_ERRORS as exc:
            self.log.warning("session store update failed: %s", exc)

    @property
    def _out(self) -> Outbox:
        assert self.out is not None, "the outbox exists from admission on"
        return self.out

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
            "transcripts_sent": self.delivery.seq,
            "partials_sent": self._out.partials_sent,
            "partials_dropped": self._out.dropped,
            "errors_sent": self.counts["errors_sent"],
            "duration_seconds": round(time.monotonic() - self.started, 3),
        }


def _rate_limiter(settings: EdgeSettings, sample_rate: int) -> RateLimiter | None:
    if not settings.max_realtime_factor:
        return None
    per_second = settings.max_realtime_factor * sample_rate * 2
    options = RateLimitOptions(
        bytes_per_second=per_second,
        burst_bytes=settings.rate_limit_burst_seconds * sample_rate * 2,
        grace_seconds=settings.rate_limit_grace_seconds,
    )
    return RateLimiter(options, time.monotonic())
