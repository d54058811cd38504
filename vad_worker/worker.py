"""The VAD worker: owns audio shards, runs each session's audio through its Segmenter in a
bounded executor, and publishes ASR jobs and VAD events.

Per shard, one task fetches batches from the shard's durable consumer (in order), groups them by
session, runs each session's chunks in the executor (vad_worker.handoff: the work of every
shard in one turn of the event loop leaves as one executor job), and publishes what came out.
Each session's checkpoint (common.continuity) is written at most every ``vad_checkpoint_seconds``
and when it ends, and only then is the audio it covers acknowledged (vad_worker.unsaved). Before
it publishes and before it acknowledges it checks that it still holds the shard's lease
(vad_worker.shards); a shard handed over saves everything first.

A session this worker has no state for (new, or carried on after another owner, a restart, a
failed batch or an idle eviction) is loaded from its checkpoint: the open utterance's audio is
re-read from the AUDIO stream and re-segmented (only finals come out of that), and audio the
consumer has not delivered in order (a crashed owner's batch still waiting for its ack wait) is
read from the stream too, so the session goes on at once with the same numbering and time base.

A batch that meets a transient bus error is dropped from memory (not acknowledged): its sessions
are rebuilt from their checkpoints on the next message, after a bounded backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from common import bus, continuity, health, logs, metrics, presence, streams, subjects, tasks
from common.bus_timing import TIMING
from common.messages import AsrJob, SessionFlushed, SpeechStarted, UtteranceEnd, encode
from common.pull import Credit, Puller
from common.retry import TRANSIENT, Backoff
from vad_worker import shards as shard_leases
from vad_worker.handoff import Handoff
from vad_worker.segmenter import Event, FinalReady, PartialReady, SegmenterOptions, SpeculativeReady
from vad_worker.segmenter import SpeechStarted as VadSpeechStarted
from vad_worker.segmenter import UtteranceEnded as VadUtteranceEnded
from vad_worker.seq_order import Chunk
from vad_worker.session import SessionVad, parse_overrides, segmenter_options
from vad_worker.unsaved import Unsaved
from vad_worker.vad_settings import VadSettings

log = logging.getLogger(__name__)

# Each shard keeps one pull request standing (common.pull): audio is delivered as it is stored,
# with no request per batch. Asked again when used up or expired; lost if silent past 2 heartbeats
# (its size, expiry and heartbeat: TIMING.vad_pull_*, common.bus_timing).
# How long one pass of a shard's loop waits for audio. Audio that arrives is handed over at once
# whatever the wait; the wait bounds how late a quiet shard's loop sees a stop or a lost lease.
IDLE_FETCH_S = 3.0  # a quiet shard; its loop notices a stop within this (HANDOVER_TIMEOUT_S is 5)
HOLE_FETCH_S = 1.0  # while a session waits for a message missing from its order (_catch_up)
MIN_FETCH_S = 0.01
SWEEP_EVERY_S = 5.0
HANDOVER_TIMEOUT_S = 5.0  # a shard loop stopping (hand-over, lost lease) finishes its batch within this
ROLE = "vad"


class ShardLost(Exception):
    """This worker may no longer process the shard (its lease deadline passed)."""

    def __init__(self, shard: int) -> None:
        super().__init__(f"shard {shard}: lease no longer held")
        self.shard = shard


class Fenced(Exception):
    """Someone else wrote the session's checkpoint: this worker's state of it is stale."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id}: checkpoint written by another owner")
        self.session_id = session_id


RETRYABLE: tuple[type[BaseException], ...] = (*TRANSIENT, Fenced)


class VadWorker:
    def __init__(self, settings: VadSettings) -> None:
        self.settings = settings
        self.worker_id = settings.effective_worker_id
        self.options: SegmenterOptions = segmenter_options(settings)
        # webrtcvad holds the GIL: more threads do not add throughput (benchmarks/RESULTS.md); scale
        # with processes (asr dev --vad-workers N). The pool keeps the CPU work off the event loop.
        self.executor = ThreadPoolExecutor(settings.vad_thread_pool_size, thread_name_prefix="vad")
        self.handoff = Handoff(self.executor)  # every shard's work of one loop turn in one executor job
        self.sessions: dict[str, SessionVad] = {}
        self.nc: NATS | None = None
        self._dropping: set[str] = set()  # kinds of best-effort job whose queue does not answer
        self.js: JetStreamContext | None = None
        self.checkpoints: KeyValue | None = None
        self.leases: shard_leases.ShardLeases | None = None
        self._shard_tasks: dict[int, asyncio.Task[None]] = {}
        self._shard_stop: dict[int, asyncio.Event] = {}
        self._manager: asyncio.Task[None] | None = None
        self._managing = False  # the shard manager loop runs (readiness)
        self._stopping = False
        # In-memory state of a session silent this long is dropped (its checkpoint stays).
        self.evict_after_s = settings.idle_timeout_seconds * 2 + 10
        self.checkpoint_every_s = settings.vad_checkpoint_seconds

    def __repr__(self) -> str:
        return f"<VadWorker {self.worker_id} shards={sorted(self._shard_tasks)} sessions={len(self.sessions)}>"

    @property
    def ready(self) -> bool:
        """Connected, not stopping, and the shard manager runs (not down between restarts)."""
        return bool(self.nc and self.nc.is_connected and not self._stopping and self._managing)

    async def run(self, stop: asyncio.Event) -> None:
        s, b = self.settings, self.settings.bus
        self.nc, self.js = await bus.connect_jetstream(b, f"vad-{self.worker_id}")
        js = self.js
        workers_kv = await streams.when_ready(lambda: presence.bucket(js), b)
        self.checkpoints = await streams.when_ready(
            lambda: continuity.bucket(js, float(b.audio_retention_seconds), b.stream_replicas), b)
        self.leases = shard_leases.ShardLeases(
            await streams.when_ready(lambda: shard_leases.bucket(js, b.stream_replicas), b),
            shard_leases.token_for(self.worker_id), b.audio_shards)
        beat = asyncio.create_task(presence.heartbeat(workers_kv, js, ROLE, self.worker_id), name="heartbeat")
        self._manager = asyncio.create_task(self._supervise(self._manage_shards),
                                            name="shards")
        try:
            async with health.serve(health.worker_app(lambda: self.ready), s.host, s.vad_http_port):
                log.info("vad worker %s ready (%d shards, %d VAD threads)", self.worker_id,
                         b.audio_shards, s.vad_thread_pool_size)
                await stop.wait()
        finally:
            # Stop taking work, let each shard finish its batch (checkpointed), then hand shards back.
            self._stopping = True
            await tasks.stop(self._manager)
            await self._stop_shards(set(self._shard_tasks), timeout=HANDOVER_TIMEOUT_S)
            with contextlib.suppress(*TRANSIENT):
                await asyncio.wait_for(self.leases.release_all(), 5.0)
            await tasks.stop(beat)
            await bus.close(self.nc)
            self.executor.shutdown(wait=True, cancel_futures=True)

    async def _supervise(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Runs the shard manager; restarts it (logged, with backoff) if it ever fails."""
        backoff = Backoff(1.0, 30.0)
        while True:
            self._managing = True
            try:
                await loop()
            except Exception:
                log.exception("shard manager failed; restarting it")
            finally:
                self._managing = False
            await backoff.wait()

    async def _manage_shards(self) -> None:
        assert self.leases is not None and self.js is not None
        leases = self.leases
        measured_at = -math.inf
        while True:
            try:
                live = max(1, len((await presence.live_workers(self.js)).get(ROLE, [])))
            except TRANSIENT as exc:
                log.warning("reading live VAD workers failed: %s", exc)
                live = 0
            gained, lost = await leases.refresh(live) if live else (set(), set())
            await self._stop_shards(lost, timeout=1.0)
            for shard, task in list(self._shard_tasks.items()):
                if task.done():  # a shard loop ended: it restarts below while the lease is held
                    self._shard_tasks.pop(shard)
                    self._shard_stop.pop(shard, None)
                    if not task.cancelled() and task.exception() is not None:
                        log.error("shard %d loop stopped: %r", shard, task.exception())
            if live:
                give = leases.surplus(live)
                if give:
                    log.info("handing over shards %s (%d live VAD workers)", sorted(give), live)
                    await self._stop_shards(give, timeout=HANDOVER_TIMEOUT_S)
                    for shard in give:
                        await leases.release(shard)
            for shard in sorted(leases.owned):  # every held shard has a running loop
                if leases.holds(shard) and shard not in self._shard_tasks:
                    self._shard_stop[shard] = asyncio.Event()
                    self._shard_tasks[shard] = asyncio.create_task(self._consume(shard), name=f"shard-{shard}")
            if gained or lost:
                log.info("shards owned: %s", sorted(self._shard_tasks))
            metrics.VAD_SHARDS.set(len(self._shard_tasks))
            if time.monotonic() >= measured_at + metrics.PENDING_EVERY_S:
                measured_at = time.monotonic()
                await self._measure_pending()
            await asyncio.sleep(TIMING.lease_refresh_s)

    async def _measure_pending(self) -> None:
        assert self.js is not None
        pending = 0
        for shard in list(self._shard_tasks):
            try:
                info = await self.js.consumer_info(subjects.AUDIO_STREAM, subjects.vad_consumer(shard))
            except TRANSIENT:
                return
            pending += (info.num_pending or 0) + (info.num_ack_pending or 0)
        metrics.VAD_PENDING.set(pending)

    async def _stop_shards(self, shards: set[int], timeout: float) -> None:
        """Lets the shards' loops finish their batch (they check their stop event), then cancels."""
        for shard in shards:
            if shard in self._shard_stop:
                self._shard_stop.pop(shard).set()
        stopping = [self._shard_tasks.pop(s) for s in shards if s in self._shard_tasks]
        if stopping:
            await asyncio.wait(stopping, timeout=timeout)
            await tasks.stop(*stopping)

    # --- one shard ----------------------------------------------------------------------------

    async def _consume(self, shard: int) -> None:
        assert self.js is not None and self.leases is not None
        stop = self._shard_stop[shard]
        mine: set[str] = set()
        unsaved: Unsaved[Msg] = Unsaved()
        backoff = Backoff()
        last_sweep = time.monotonic()
        assert self.nc is not None
        puller = Puller(self.nc, subjects.AUDIO_STREAM, subjects.vad_consumer(shard),
                        Credit(batch=TIMING.vad_pull_batch, expires_s=TIMING.vad_pull_expires_s,
                               heartbeat_s=TIMING.vad_pull_heartbeat_s))
        holes = False  # a session of this shard waits for a missing message (_catch_up)
        try:
            await puller.open()
            while not stop.is_set() and not self._stopping:
                if not self.leases.holds(shard):
                    log.warning("shard %d: lease not renewed in time; stopping it", shard)
                    return
                try:
                    wait = fetch_wait(time.monotonic(), unsaved.next_due(self.checkpoint_every_s), holes)
                    msgs = await puller.next_batch(TIMING.vad_pull_batch, wait)
                    if msgs:
                        await self._process_batch(shard, msgs, mine, unsaved)
                    holes = await self._catch_up(shard, mine, unsaved)
                    await self._save_due(shard, mine, unsaved, time.monotonic() - self.checkpoint_every_s)
                    backoff.reset()
                except ShardLost:
                    log.warning("shard %d: lease not renewed in time; its unsaved audio is left unacknowledged",
                                shard)
                    return
                except RETRYABLE as exc:
                    # Nothing unsaved is acknowledged: forget the sessions' state, they are rebuilt
                    # from their checkpoints and the stream.
                    delay = backoff.next_delay()
                    log.warning("shard %d: %s (%s); retrying in %.1f s", shard, type(exc).__name__, exc, delay)
                    self._evict(mine)
                    unsaved.clear()
                    holes = False
                    await asyncio.sleep(delay)
                if time.monotonic() - last_sweep > SWEEP_EVERY_S:
                    last_sweep = time.monotonic()
                    self._evict_idle(mine, unsaved)
            # Stopping (hand-over, shutdown): what was processed is saved for the next owner.
            if unsaved and self.leases.holds(shard):
                with contextlib.suppress(ShardLost, *RETRYABLE):
                    await self._save_due(shard, mine, unsaved, math.inf)
        finally:
            await puller.close()  # what it holds but was not processed goes back to the consumer
            self._evict(mine)

    def _evict(self, mine: set[str]) -> None:
        for session_id in mine:
            self.sessions.pop(session_id, None)
        mine.clear()
        metrics.VAD_SESSIONS.set(len(self.sessions))

    def _evict_idle(self, mine: set[str], unsaved: Unsaved[Msg]) -> None:
        """Drops the memory of sessions silent for ``evict_after_s``; they are NOT ended: their
        checkpoint stays, and their next audio carries on numbering and time."""
        cutoff = time.monotonic() - self.evict_after_s
        for session_id in [s for s in mine if self.sessions[s].last_seen < cutoff and s not in unsaved]:
            logs.for_session(log, session_id).info(
                "silent for %.0f s: dropping its VAD state from memory (checkpoint kept)", self.evict_after_s)
            self.sessions.pop(session_id)
            mine.discard(session_id)
        metrics.VAD_SESSIONS.set(len(self.sessions))

    async def _process_batch(self, shard: int, msgs: list[Msg], mine: set[str], unsaved: Unsaved[Msg]) -> None:
        assert self.leases is not None
        now = time.time()
        groups: dict[str, list[Chunk]] = {}
        options: dict[str, str] = {}
        metrics.VAD_BATCH_SIZE.observe(len(msgs))
        malformed: list[Msg] = []
        good: list[tuple[str, Msg]] = []
        for msg in msgs:
            session_id = msg.subject.rsplit(".", 1)[-1]
            chunk = _chunk(msg.headers, msg.data, msg.metadata.sequence.stream, msg.subject)
            if chunk is None:
                malformed.append(msg)
                continue
            good.append((session_id, msg))
            with contextlib.suppress(KeyError, ValueError):
                metrics.VAD_STAGE_LATENCY.observe(max(0.0, now - float((msg.headers or {})[subjects.H_SENT_AT])))
            groups.setdefault(session_id, []).append(chunk)
            if msg.headers and subjects.H_OPTIONS in msg.headers:
                options.setdefault(session_id, msg.headers[subjects.H_OPTIONS])
        await self._process_groups(shard, groups, options, mine, unsaved)
        # A message is acknowledged once its session's checkpoint covers it (_save_due).
        for session_id, msg in good:
            unsaved.hold(session_id, msg)
        await asyncio.gather(*(msg.ack() for msg in malformed))

    async def _catch_up(self, shard: int, mine: set[str], unsaved: Unsaved[Msg]) -> bool:
        """Sessions waiting for a missing message (a hole in their seqs) look at the stream again;
        true if one still waits."""
        waiting: dict[str, list[Chunk]] = {sid: [] for sid in mine if self.sessions[sid].order.waiting}
        if not waiting:
            return False
        await self._process_groups(shard, waiting, {}, mine, unsaved)
        return any(self.sessions[sid].order.waiting for sid in waiting if sid in self.sessions)

    async def _save_due(self, shard: int, mine: set[str], unsaved: Unsaved[Msg], before: float) -> None:
        """Writes the checkpoints of the sessions processed since their last one, if that was
        before ``before`` (monotonic) or they ended, then acknowledges the audio they cover: only
        now is it safe to forget, its jobs stored and where the session stands recorded."""
        due: list[SessionVad] = []
        for sid in unsaved.due(before):
            if sid in self.sessions:
                due.append(self.sessions[sid])
            else:  # no state to save (cannot happen): left unacknowledged, JetStream redelivers it
                unsaved.saved(sid)
        if not due:
            return
        assert self.leases is not None
        if not self.leases.holds(shard):
            raise ShardLost(shard)
        # Concurrently, one key each.
        await asyncio.gather(*(self._save(state) for state in due))
        acks = [msg for state in due for msg in unsaved.saved(state.session_id)]
        await asyncio.gather(*(msg.ack() for msg in acks))
        for state in due:
            if state.ended:
                self.sessions.pop(state.session_id, None)
                mine.discard(state.session_id)
        metrics.VAD_SESSIONS.set(len(self.sessions))

    async def _process_groups(self, shard: int, groups: dict[str, list[Chunk]], options: dict[str, str],
                              mine: set[str], unsaved: Unsaved[Msg]) -> None:
        """Runs each session's new chunks through its state and publishes; the sessions' checkpoints
        are due from now on."""
        assert self.leases is not None and self.nc is not None
        work: list[tuple[SessionVad, asyncio.Future[list[Event]]]] = []
        for session_id, chunks in groups.items():
            state = self.sessions.get(session_id)
            replay: list[Chunk] = []
            if state is None:
                state, replay = await self._load(shard, session_id, options.get(session_id))
                self.sessions[session_id] = state
                mine.add(session_id)
            live = await self._in_order(shard, state, chunks)
            state.flush_due = not state.ended  # publish SessionFlushed once, when `end` is processed
            state.last_seen = time.monotonic()
            metrics.VAD_AUDIO_SECONDS.inc(sum(len(c.pcm) for c in live) / 32000)

            def feed(state: SessionVad = state, replay: list[Chunk] = replay, live: list[Chunk] = live) -> list[Event]:
                return (state.replay(replay) if state.resumed_from else []) + state.process(live)

            work.append((state, self.handoff.run(feed)))
        t0 = time.perf_counter()
        results = await asyncio.gather(*(fut for _, fut in work))
        metrics.VAD_SECONDS.observe(time.perf_counter() - t0)
        if not self.leases.holds(shard):
            raise ShardLost(shard)
        rung = ring_again = False
        for (state, _), events in zip(work, results, strict=True):
            if state.missing_bytes:
                logs.for_session(log, state.session_id).warning(
                    "%.2f s of audio missing from the stream, counted as silence", state.missing_bytes / 32000)
                state.missing_bytes = 0
            if await self._publish(state, events):
                # Its jobs are stored (each publish was acknowledged): wake the idle ASR workers at
                # the batch's first jobs; for later ones, once after the loop (a worker woken by the
                # first ring may have polled and parked before they were stored).
                if rung:
                    ring_again = True
                else:
                    await self.nc.publish(subjects.JOBS_DOORBELL, b"")
                    rung = True
            if state.ended and state.flush_due:
                await self._flushed(state)
            elif state.drained:
                state.drained = False
                assert self.nc is not None
                drained = SessionFlushed(session_id=state.session_id, finals_total=state.segmenter.finals_emitted,
                                         audio_s=state.segmenter.samples_seen / state.sample_rate, ended=False)
                await self.nc.publish(subjects.result_event(state.session_id), encode(drained))
        if ring_again:
            await self.nc.publish(subjects.JOBS_DOORBELL, b"")
        for state, _ in work:  # their results are out: where they stand is to be recorded
            if state.ended:
                unsaved.ended(state.session_id)
            else:
                unsaved.processed(state.session_id)
        if not self.leases.holds(shard):
            raise ShardLost(shard)

    # --- continuity ---------------------------------------------------------------------------

    async def _load(self, shard: int, session_id: str, options: str | None) -> tuple[SessionVad, list[Chunk]]:
        """The session's state from its checkpoint (a fresh one for a new session), and the audio
        to re-feed: from the checkpoint's resume position up to its last processed message."""
        assert self.checkpoints is not None
        try:
            entry = await self.checkpoints.get(session_id)
        except NotFoundError:
            overrides = parse_overrides(options, session_id)
            return SessionVad(session_id, self.options, self.settings.vad_aggressiveness,
                              continuity.VadCheckpoint(options=overrides), replayable=False,
                              context_seconds=self.settings.acoustic_context_seconds,
                              context_max_snr_db=self.settings.acoustic_context_max_snr_db,
                              reorder_wait_s=self.settings.vad_reorder_wait_seconds,
                              revise=self.settings.revise_finals), []
        assert entry.value is not None and entry.revision is not None
        cp = continuity.decode(entry.value)
        replay: list[Chunk] = []
        if cp.resume_stream_seq and not cp.ended:
            # Up to the highest position processed: the stream may hold them out of seq order.
            read = await self._read(shard, session_id, cp.resume_stream_seq,
                                    lambda c: c.stream_seq > max(cp.last_stream_seq, cp.resume_stream_seq))
            replay = sorted({c.seq: c for c in read if c.seq <= cp.last_seq}.values(), key=lambda c: c.seq)
        replayable = any(c.stream_seq == cp.resume_stream_seq for c in replay)
        if cp.resume_stream_seq and not cp.ended and not replayable:
            logs.for_session(log, session_id).warning(
                "the open utterance's audio is no longer in the stream; carrying on after it")
        state = SessionVad(session_id, self.options, self.settings.vad_aggressiveness, cp, replayable=replayable,
                           context_seconds=self.settings.acoustic_context_seconds,
                           context_max_snr_db=self.settings.acoustic_context_max_snr_db,
                           reorder_wait_s=self.settings.vad_reorder_wait_seconds,
                           revise=self.settings.revise_finals)
        state.revision = entry.revision
        logs.for_session(log, session_id).info(
            "carried on from its checkpoint: final %d, utterance %d, seq %d, %.2f s%s", cp.finals, cp.utterances,
            cp.last_seq, cp.samples / 16000, f", re-reading {len(replay)} messages" if replayable else "")
        return state, replay if replayable else []

    async def _in_order(self, shard: int, state: SessionVad, chunks: list[Chunk]) -> list[Chunk]:
        """The batch's new messages of the session, in seq order and without gaps
        (vad_worker.seq_order). When they do not continue the session (the consumer skipped some:
        a crashed owner's batch is redelivered only after the ack wait; or the edge published some
        again after a bus outage, so they were stored after newer ones), the stream, which is the
        record of what the edge sent, is read on to its end; a message still missing is waited
        for up to ``vad_reorder_wait_seconds``, what follows it waits too, and after that the hole
        counts as silence."""
        order = state.order
        if state.ended:
            return []
        direct = order.in_order(chunks)
        if direct is not None:
            return direct
        order.add(chunks)
        read = await self._read(shard, state.session_id, order.read_from(), lambda c: False)
        order.add(read, read_to=max((c.stream_seq for c in read), default=0))
        taken = order.take(time.monotonic())
        if taken.waiting_for:
            logs.for_session(log, state.session_id).info("message %d not in the stream yet; waiting for it",
                                                         taken.waiting_for)
        for seq in taken.skipped:
            logs.for_session(log, state.session_id).warning(
                "message %d never reached the stream; going on without it", seq)
        return taken.ready

    async def _read(self, shard: int, session_id: str, from_stream_seq: int,
                    past: Callable[[Chunk], bool]) -> list[Chunk]:
        """The session's messages in the AUDIO stream from ``from_stream_seq`` on, until one is ``past``."""
        assert self.js is not None
        subject = f"audio.{shard}.{session_id}"
        out: list[Chunk] = []
        seq = max(1, from_stream_seq)
        while True:
            try:
                raw: RawStreamMsg = await self.js.get_msg(subjects.AUDIO_STREAM, seq=seq, next=True, subject=subject)
            except NotFoundError:
                return out
            assert raw.seq is not None
            seq = raw.seq + 1
            chunk = _chunk(raw.headers, raw.data or b"", raw.seq, subject)
            if chunk is None:
                continue
            if past(chunk):
                return out
            out.append(chunk)

    async def _save(self, state: SessionVad) -> None:
        """Writes the session's checkpoint with compare-and-set (see common.continuity)."""
        assert self.checkpoints is not None
        data = continuity.encode(state.checkpoint())
        sid = state.session_id
        try:
            if state.revision:
                state.revision = await self.checkpoints.update(sid, data, last=state.revision)
            else:
                state.revision = await self.checkpoints.create(sid, data)
        except KeyWrongLastSequenceError:
            # Ours if a previous write timed out after succeeding; else someone else owns it now.
            try:
                entry = await self.checkpoints.get(sid)
            except NotFoundError:
                raise Fenced(sid) from None
            if entry.revision is None or continuity.decode(entry.value or b"") != continuity.decode(data):
                raise Fenced(sid) from None
            state.revision = entry.revision

    # --- results ------------------------------------------------------------------------------

    async def _flushed(self, state: SessionVad) -> None:
        assert self.js is not None
        flushed = SessionFlushed(session_id=state.session_id, finals_total=state.segmenter.finals_emitted,
                                 audio_s=state.segmenter.samples_seen / state.sample_rate)
        await self.js.publish(subjects.result_flushed(state.session_id), encode(flushed),
                              headers={subjects.H_MSG_ID: f"{state.session_id}.flushed"})

    async def _best_effort(self, subject: str, job: AsrJob, kind: str) -> bool:
        """A partial or speculative job, if its queue takes it. A queue that is missing (a memory
        stream lost with a restart of a lone nats-server, until the reconnect re-creates it) drops
        the job, never the batch: finals must not wait on best-effort work."""
        assert self.js is not None
        try:
            await self.js.publish(subject, encode(job))
        except (TimeoutError, nats.errors.Error) as exc:
            if kind not in self._dropping:
                self._dropping.add(kind)
                log.warning("%s jobs are dropped: their queue does not answer (%s)", kind, type(exc).__name__)
            return False
        if kind in self._dropping:
            self._dropping.discard(kind)
            log.info("%s jobs are queued again", kind)
        metrics.VAD_JOBS.labels(kind).inc()
        return True

    async def _publish(self, state: SessionVad, events: list[Event]) -> bool:
        """Publishes the session's events; True if an ASR job was among them."""
        assert self.nc is not None and self.js is not None
        jobs = False
        sid = state.session_id
        metrics.VAD_FRAMES.inc(state.frames)
        state.frames = 0
        overflow = state.segmenter.overflow_bytes - state.overflow_reported
        if overflow:
            if not state.overflow_reported:  # once per session, not per frame
                logs.for_session(log, sid).warning(
                    "utterance over vad_max_buffer_bytes=%d, keeping the most recent audio",
                    self.settings.vad_max_buffer_bytes)
            state.overflow_reported += overflow
            metrics.VAD_OVERFLOW_BYTES.inc(overflow)
        for event in events:
            match event:
                case VadSpeechStarted():
                    msg = SpeechStarted(session_id=sid, utterance_id=_utt(event.utterance_index),
                                        start_s=event.start_s)
                    await self.nc.publish(subjects.result_event(sid), encode(msg))
                case VadUtteranceEnded():
                    end = UtteranceEnd(session_id=sid, utterance_id=_utt(event.utterance_index),
                                       end_s=event.end_s)
                    await self.nc.publish(subjects.result_event(sid), encode(end))
                case PartialReady():
                    job = AsrJob(session_id=sid, utterance_id=_utt(event.utterance_index), is_final=False,
                                 audio=event.audio, start_s=event.start_s, end_s=event.end_s,
                                 created_at=time.time())
                    jobs |= await self._best_effort(subjects.partial_job(sid), job, "partial")
                case SpeculativeReady():
                    # Best effort like a partial (latest only, skipped when stale), taken before partials.
                    job = AsrJob(session_id=sid, utterance_id=_utt(event.utterance_index), is_final=False,
                                 speculative=True, audio=event.audio, start_s=event.start_s, end_s=event.end_s,
                                 final_index=event.final_index, context_audio=event.context,
                                 created_at=time.time())
                    jobs |= await self._best_effort(subjects.speculative_job(sid), job, "speculative")
                    logs.for_session(log, sid).debug("final %d speculated %.2f-%.2fs",
                                                     event.final_index, event.start_s, event.end_s)
                case FinalReady():
                    now = time.time()
                    job = AsrJob(session_id=sid, utterance_id=_utt(event.utterance_index), is_final=True,
                                 audio=event.audio, start_s=event.start_s, end_s=event.end_s,
                                 context_audio=event.context, previous_audio=event.previous,
                                 final_index=event.final_index, reason=event.reason, created_at=now,
                                 speech_end_at=now)
                    # The id makes a final re-emitted by a new owner (after a crash) harmless.
                    await self.js.publish(subjects.FINAL_JOBS, encode(job),
                                          headers={subjects.H_MSG_ID: f"{sid}.f{event.final_index}"})
                    jobs = True
                    metrics.VAD_JOBS.labels("final").inc()
                    logs.for_session(log, sid).info("final %d (%s) %.2f-%.2fs",
                                                    event.final_index, event.reason, event.start_s, event.end_s)
        return jobs


def _chunk(headers: dict[str, str] | None, data: bytes, stream_seq: int, subject: str) -> Chunk | None:
    headers = headers or {}
    try:
        return Chunk(int(headers[subjects.H_SEQ]), headers[subjects.H_KIND], data, stream_seq,
                     int(headers.get(subjects.H_OFFSET, -1)))
    except (KeyError, ValueError):
        log.error("dropping malformed audio message on %s", subject)
        return None


def _utt(index: int) -> str:
    return f"u{index}"


def fetch_wait(now: float, next_due: float | None, waiting: bool) -> float:
    """Seconds a shard's next fetch may wait for audio: ``IDLE_FETCH_S``, ``HOLE_FETCH_S`` while a
    session waits for a missing message, and never past the first checkpoint that falls due
    (``next_due``, monotonic), so a quiet session's audio is saved and acknowledged on time."""
    wait = HOLE_FETCH_S if waiting else IDLE_FETCH_S
    if next_due is not None:
        wait = min(wait, next_due - now)
    return max(MIN_FETCH_S, wait)
