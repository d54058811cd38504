"""The VAD worker: owns audio shards, runs each session's audio through its Segmenter in a
bounded thread pool, and publishes ASR jobs and VAD events.

Per shard, one task fetches batches from the shard's durable consumer (in order), groups them by
session, runs the sessions of a batch concurrently in the executor (each session sequentially),
publishes what came out, and only then acknowledges the audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from common import bus, health, metrics, presence, subjects, tasks
from common.messages import AsrJob, SessionFlushed, SpeechStarted, UtteranceEnd, encode
from common.settings import Settings
from vad_worker import shards as shard_leases
from vad_worker.segmenter import Event, FinalReady, PartialReady, SegmenterOptions
from vad_worker.segmenter import SpeechStarted as VadSpeechStarted
from vad_worker.segmenter import UtteranceEnded as VadUtteranceEnded
from vad_worker.session import Chunk, SessionVad, segmenter_options

log = logging.getLogger(__name__)

BATCH = 512
FETCH_TIMEOUT_S = 1.0
ROLE = "vad"


class VadWorker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.worker_id = settings.effective_worker_id
        self.options: SegmenterOptions = segmenter_options(settings)
        self.executor = ThreadPoolExecutor(settings.vad_thread_pool_size, thread_name_prefix="vad")
        self.sessions: dict[str, SessionVad] = {}
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self._shard_tasks: dict[int, asyncio.Task[None]] = {}
        self._stopping = False
        self.session_ttl_s = settings.idle_timeout_seconds * 2 + 10

    def __repr__(self) -> str:
        return f"<VadWorker {self.worker_id} shards={sorted(self._shard_tasks)} sessions={len(self.sessions)}>"

    @property
    def ready(self) -> bool:
        return bool(self.nc and self.nc.is_connected and not self._stopping)

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        self.nc, self.js = await bus.connect_jetstream(s, f"vad-{self.worker_id}")
        workers_kv = await presence.bucket(self.js)
        shards_kv = await shard_leases.bucket(self.js, s.stream_replicas)
        leases = shard_leases.ShardLeases(shards_kv, self.worker_id, s.audio_shards)
        beat = asyncio.create_task(presence.heartbeat(workers_kv, ROLE, self.worker_id), name="heartbeat")
        manager = asyncio.create_task(self._manage_shards(leases, workers_kv), name="shards")
        try:
            async with health.serve(health.worker_app(lambda: self.ready), s.host, s.vad_http_port):
                log.info("vad worker %s ready (%d shards, %d VAD threads)", self.worker_id,
                         s.audio_shards, s.vad_thread_pool_size)
                await stop.wait()
        finally:
            # Stop taking work, let each shard finish its batch (bounded), then hand shards back.
            self._stopping = True
            await tasks.stop(manager)
            await self._stop_shards(set(self._shard_tasks), timeout=5.0)
            await leases.release_all()
            await tasks.stop(beat)
            await bus.close(self.nc)
            self.executor.shutdown(wait=True, cancel_futures=True)

    async def _manage_shards(self, leases: shard_leases.ShardLeases, workers_kv: KeyValue) -> None:
        while True:
            try:
                live = len((await presence.live_workers(workers_kv)).get(ROLE, []))
                gained, lost = await leases.refresh(live)
            except (TimeoutError, nats.errors.Error) as exc:
                log.warning("shard lease refresh failed: %s", exc)
                gained, lost = set(), set()
            await self._stop_shards(lost, timeout=1.0)
            for shard in gained:
                self._shard_tasks[shard] = asyncio.create_task(self._consume(shard), name=f"shard-{shard}")
            for shard, task in list(self._shard_tasks.items()):
                if task.done():  # a shard loop failed: give it back so it restarts with fresh state
                    del self._shard_tasks[shard]
                    if not task.cancelled() and task.exception():
                        log.error("shard %d stopped: %r", shard, task.exception())
                    leases.owned.pop(shard, None)
            if gained or lost:
                log.info("shards owned: %s", sorted(self._shard_tasks))
            metrics.VAD_SHARDS.set(len(self._shard_tasks))
            await self._measure_pending()
            await asyncio.sleep(shard_leases.REFRESH_S)

    async def _measure_pending(self) -> None:
        assert self.js is not None
        pending = 0
        for shard in list(self._shard_tasks):
            try:
                info = await self.js.consumer_info(subjects.AUDIO_STREAM, subjects.vad_consumer(shard))
            except (TimeoutError, nats.errors.Error):
                return
            pending += (info.num_pending or 0) + (info.num_ack_pending or 0)
        metrics.VAD_PENDING.set(pending)

    async def _stop_shards(self, shards: set[int], timeout: float) -> None:
        """Lets the shards' loops finish their batch (they check ``_stopping``), then cancels."""
        stopping = [self._shard_tasks.pop(s) for s in shards if s in self._shard_tasks]
        if stopping:
            await asyncio.wait(stopping, timeout=timeout)
            await tasks.stop(*stopping)

    # --- one shard ----------------------------------------------------------------------------

    async def _consume(self, shard: int) -> None:
        assert self.js is not None
        sub = await self.js.pull_subscribe_bind(durable=subjects.vad_consumer(shard),
                                                stream=subjects.AUDIO_STREAM)
        mine: set[str] = set()
        last_sweep = time.monotonic()
        try:
            while not self._stopping:
                try:
                    msgs = await sub.fetch(BATCH, timeout=FETCH_TIMEOUT_S)
                except (TimeoutError, nats.errors.TimeoutError):
                    msgs = []
                if msgs:
                    await self._process_batch(msgs, mine)
                if time.monotonic() - last_sweep > 5.0:
                    last_sweep = time.monotonic()
                    await self._expire_idle(mine)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            for session_id in mine:
                self.sessions.pop(session_id, None)
            metrics.VAD_SESSIONS.set(len(self.sessions))

    async def _process_batch(self, msgs: list[Msg], mine: set[str]) -> None:
        assert self.nc is not None
        now = time.time()
        groups: dict[str, list[Chunk]] = {}
        metrics.VAD_BATCH_SIZE.observe(len(msgs))
        for msg in msgs:
            headers = msg.headers or {}
            session_id = msg.subject.rsplit(".", 1)[-1]
            try:
                chunk = Chunk(int(headers[subjects.H_SEQ]), headers[subjects.H_KIND], msg.data)
                metrics.VAD_STAGE_LATENCY.observe(max(0.0, now - float(headers[subjects.H_SENT_AT])))
            except (KeyError, ValueError):
                log.error("dropping malformed audio message on %s", msg.subject)
                continue
            groups.setdefault(session_id, []).append(chunk)
            metrics.VAD_AUDIO_SECONDS.inc(len(msg.data) / 32000)
        loop = asyncio.get_running_loop()
        work: list[tuple[SessionVad, Awaitable[list[Event]]]] = []
        for session_id, chunks in groups.items():
            state = self.sessions.get(session_id)
            if state is None:
                state = SessionVad(session_id, self.options, self.settings.vad_aggressiveness)
                self.sessions[session_id] = state
                mine.add(session_id)
            state.last_seen = time.monotonic()
            work.append((state, loop.run_in_executor(self.executor, state.process, chunks)))
        t0 = time.perf_counter()
        results = await asyncio.gather(*(fut for _, fut in work))
        metrics.VAD_SECONDS.observe(time.perf_counter() - t0)
        for (state, _), events in zip(work, results, strict=True):
            await self._publish(state, events)
            if state.ended:
                await self._flushed(state, mine)
            elif state.drained:
                state.drained = False
                drained = SessionFlushed(session_id=state.session_id, finals_total=state.segmenter.finals_emitted,
                                         audio_s=state.segmenter.samples_seen / state.sample_rate, ended=False)
                await self.nc.publish(subjects.result_event(state.session_id), encode(drained))
        metrics.VAD_SESSIONS.set(len(self.sessions))
        # Only now is the audio safe to forget: its jobs are stored in JetStream.
        await asyncio.gather(*(msg.ack() for msg in msgs))

    async def _expire_idle(self, mine: set[str]) -> None:
        cutoff = time.monotonic() - self.session_ttl_s
        loop = asyncio.get_running_loop()
        for session_id in [s for s in mine if self.sessions[s].last_seen < cutoff]:
            state = self.sessions[session_id]
            log.info("session %s idle for %.0fs without end: closing its VAD state", session_id,
                     self.session_ttl_s, extra={"session_id": session_id})
            events = await loop.run_in_executor(self.executor, state.expire)
            await self._publish(state, events)
            await self._flushed(state, mine)

    async def _flushed(self, state: SessionVad, mine: set[str]) -> None:
        assert self.js is not None
        flushed = SessionFlushed(session_id=state.session_id, finals_total=state.segmenter.finals_emitted,
                                 audio_s=state.segmenter.samples_seen / state.sample_rate)
        await self.js.publish(subjects.result_flushed(state.session_id), encode(flushed),
                              headers={subjects.H_MSG_ID: f"{state.session_id}.flushed"})
        self.sessions.pop(state.session_id, None)
        mine.discard(state.session_id)

    async def _publish(self, state: SessionVad, events: list[Event]) -> None:
        assert self.nc is not None and self.js is not None
        sid = state.session_id
        metrics.VAD_FRAMES.inc(state.frames)
        state.frames = 0
        overflow = state.segmenter.overflow_bytes - state.overflow_reported
        if overflow:
            if not state.overflow_reported:  # once per session, not per frame
                log.warning("session %s: utterance over vad_max_buffer_bytes=%d, keeping the most recent audio",
                            sid, self.settings.vad_max_buffer_bytes, extra={"session_id": sid})
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
                    await self.js.publish(subjects.partial_job(sid), encode(job))
                    metrics.VAD_JOBS.labels("partial").inc()
                case FinalReady():
                    now = time.time()
                    job = AsrJob(session_id=sid, utterance_id=_utt(event.utterance_index), is_final=True,
                                 audio=event.audio, start_s=event.start_s, end_s=event.end_s,
                                 final_index=event.final_index, reason=event.reason, created_at=now,
                                 speech_end_at=now)
                    await self.js.publish(subjects.FINAL_JOBS, encode(job),
                                          headers={subjects.H_MSG_ID: f"{sid}.f{event.final_index}"})
                    metrics.VAD_JOBS.labels("final").inc()
                    log.info("session %s final %d (%s) %.2f-%.2fs", sid, event.final_index, event.reason,
                             event.start_s, event.end_s, extra={"session_id": sid})


def _utt(index: int) -> str:
    return f"u{index}"
