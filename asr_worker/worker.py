"""The ASR worker: takes jobs (finals first), runs faster-whisper in a bounded executor, publishes
transcripts.

Finals come from a durable work queue and are acknowledged only after their transcript is stored
in the RESULTS stream: a worker killed mid-job loses nothing, JetStream redelivers the job.
Partials come from a latest-only queue, are skipped when stale, and go out on core NATS.
After publishing a final, the worker queues a decode of the previous final together with it
(`asr_worker.revisions`), served on CPU by a child process at a low priority
(`asr_worker.background_reviser`), else by a slot when no final waits, and stores a `Revision` of
that final in RESULTS (best effort). A final whose predecessor had no words alone is decoded again
with that audio in front before it is published (`revisions.carries_previous`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from asr_worker import speculation
from asr_worker.asr_settings import AsrSettings
from asr_worker.background_reviser import BackgroundReviser
from asr_worker.prompt import next_prompt
from asr_worker.revisions import PendingRevision, RevisionQueue, carries_previous, revision_outcome, why_not_revise
from asr_worker.transcriber import SAMPLE_RATE, RecognisedWord, Recognition, Transcriber, TranscriberOptions
from common import bus, health, logs, metrics, presence, stream_usage, streams, subjects, tasks
from common.bus_timing import TIMING
from common.messages import (
    AsrJob,
    Revision,
    Transcript,
    TranscriptionFailed,
    Word,
    encode,
    job_decoder,
    result_decoder,
)
from common.retry import TRANSIENT, Backoff

log = logging.getLogger(__name__)

ROLE = "asr"
# The job queues, in the order they are served: finals, finals decoded ahead (speculative), partials.
JOB_QUEUES = ((subjects.JOBS_FINAL_STREAM, subjects.FINAL_CONSUMER),
              (subjects.JOBS_SPECULATIVE_STREAM, subjects.SPECULATIVE_CONSUMER),
              (subjects.JOBS_PARTIAL_STREAM, subjects.PARTIAL_CONSUMER))
FINAL_POLL_S = 0.03
PARTIAL_POLL_S = 0.02
# After a round of polls finds every queue empty, the worker parks until the VAD's doorbell rings
# (it rings after storing jobs) or this long, for jobs that come without a ring: a final
# redelivered after a worker died (already final_ack_wait_s late), a VAD worker of an older
# version. Each look is three pull requests that nats-server answers on expiry: at 0.5 s, the idle
# ASR processes were the bus's busiest clients after the VAD worker. A final this worker put back
# for another try is looked for when its retry is due (`park_wait`).
PARK_S = 2.0
RETRY_DELAY_S = 1.0  # a failed final's next try (nak delay)
RETRY_SLACK_S = 0.1  # looked for this long after it is due
# A final decoded before its predecessor was stored looks for it whenever a final of its session is
# published (a subscription rings), and at least this often.
PREDECESSOR_POLL_S = 0.5


def _observed(kind: str, rec: Recognition) -> Recognition:
    """``rec``, counted in the inference and audio metrics of ``kind``."""
    metrics.ASR_INFERENCE.labels(kind).observe(rec.inference_s)
    metrics.ASR_AUDIO_SECONDS.labels(kind).inc(rec.audio_s)
    return rec


def transcriber_options(settings: AsrSettings) -> TranscriberOptions:
    return TranscriberOptions(
        model=settings.model,
        device=settings.device,
        compute_type=settings.compute_type,
        beam_size=settings.beam_size,
        cpu_threads=settings.cpu_threads,
        num_workers=settings.asr_concurrency,
        language=settings.language or None,
        word_timestamps=settings.word_timestamps,
        window_s=settings.encoder_window_seconds,
    )


class AsrWorker:
    def __init__(self, settings: AsrSettings, transcriber: Transcriber) -> None:
        self.settings = settings
        self.transcriber = transcriber
        self.worker_id = settings.effective_worker_id
        self.executor = ThreadPoolExecutor(settings.asr_concurrency, thread_name_prefix="asr")
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self.speculations: speculation.SpeculationStore | None = None  # None: speculative_finals off
        self._decoder_id = speculation.decoder_id(transcriber_options(settings))
        self._jobs: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._pulling = False  # the fetch loop runs (readiness)
        self._retry_at = 0.0  # time.monotonic() when the last final this worker put back is due again
        self.revisions = RevisionQueue.from_settings(settings)
        # Revisions in a low-priority child process (CPU workers), or in this worker's slots (None).
        self.reviser = (BackgroundReviser(dataclasses.replace(transcriber_options(settings), num_workers=1),
                                          settings.revision_nice)
                        if settings.revise_finals and settings.revision_nice >= 0 and settings.device == "cpu"
                        else None)
        self._doorbell = asyncio.Event()  # rung by the VAD after storing jobs, and by a queued revision
        self.parks = 0
        """Rounds of polls that found every job queue empty, each followed by a park."""
        self._revision_bell = asyncio.Event()  # rung by a queued revision (background reviser)
        self._revising: PendingRevision | None = None  # the background reviser's revision in hand
        self.counts = {"final": 0, "partial": 0, "stale": 0, "failed": 0}

    def __repr__(self) -> str:
        return f"<AsrWorker {self.worker_id} running={len(self._jobs)} {self.counts}>"

    @property
    def ready(self) -> bool:
        return bool(self.nc and self.nc.is_connected and not self._stopping and self._pulling)

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        self.nc, self.js = await bus.connect_jetstream(s.bus, f"asr-{self.worker_id}")
        js = self.js
        kv = await streams.when_ready(lambda: presence.bucket(js), s.bus)
        if s.speculative_finals:
            # ensure_streams (bus.connect_jetstream) created the bucket: bind to it as it is.
            self.speculations = speculation.SpeculationStore(
                await streams.when_ready(lambda: speculation.bucket(js), s.bus), s.speculation_wait_ms / 1000, self.nc)
        beat = asyncio.create_task(presence.heartbeat(kv, js, ROLE, self.worker_id), name="heartbeat")
        puller = asyncio.create_task(self._supervised_pull(), name="pull")
        gauges = asyncio.create_task(self._measure_pending(), name="pending")
        reviser = asyncio.create_task(self._serve_revisions(), name="revisions") if self.reviser else None
        try:
            async with health.serve(health.worker_app(lambda: self.ready), s.host, s.asr_http_port):
                log.info("asr worker %s ready (model %s on %s, %d slot(s)%s)", self.worker_id, s.model,
                         s.device, s.asr_concurrency,
                         f", revisions in a process at nice {s.revision_nice}" if self.reviser else "")
                await stop.wait()
        finally:
            # Stop taking jobs; finish the running ones within a bound. An unfinished final is
            # not acknowledged, so JetStream hands it to another worker.
            self._stopping = True
            await tasks.stop(puller, gauges, *([reviser] if reviser else []))
            if self._jobs:
                await asyncio.wait(self._jobs, timeout=20.0)
            await tasks.stop(*self._jobs)
            in_hand = [self._revising] if self._revising is not None else []
            await self._abandon(in_hand + self.revisions.drain(), "stopped")
            await tasks.stop(beat)
            await bus.close(self.nc)
            self.executor.shutdown(wait=True, cancel_futures=True)
            if self.reviser is not None:
                self.reviser.shutdown()

    async def _pull(self) -> None:
        """Fetches jobs into free slots: finals first, then speculative finals, then this worker's
        queued revisions (unless its background reviser takes them: then no partial while it has
        work), then partials; parks while all are empty (``PARK_S``).
        Transient bus errors (a reconnect, a 503 while JetStream recovers) are retried with bounded
        backoff; the loop never ends on them."""
        assert self.js is not None
        assert self.nc is not None
        slots = asyncio.Semaphore(self.settings.asr_concurrency)
        subs: list[JetStreamContext.PullSubscription] | None = None
        backoff = Backoff()
        doorbell = self._doorbell
        bell = await self.nc.subscribe(subjects.JOBS_DOORBELL, cb=bus.setter(doorbell))
        try:
            while True:
                await slots.acquire()
                try:
                    if subs is None:
                        subs = [await self.js.pull_subscribe_bind(durable=consumer, stream=stream)
                                for stream, consumer in JOB_QUEUES]
                    finals, speculative, partials = subs
                    doorbell.clear()  # a ring from now on may be for a job these polls miss
                    polled_at = time.monotonic()
                    msg = await _fetch_one(finals, FINAL_POLL_S) or await _fetch_one(speculative, PARTIAL_POLL_S)
                    revision = None if msg is not None or self.reviser else await self._next_revision()
                    if msg is None and revision is None and not self._background_revisions():
                        msg = await _fetch_one(partials, PARTIAL_POLL_S)
                    backoff.reset()
                except TRANSIENT as exc:
                    slots.release()
                    delay = backoff.next_delay()
                    log.warning("fetching jobs failed (%s: %s); retrying in %.1f s", type(exc).__name__, exc, delay)
                    await asyncio.sleep(delay)
                    continue
                if revision is not None:
                    self._spawn(self._run_revision(revision), Slot(slots), "revision")
                    continue
                if msg is None:
                    slots.release()
                    self.parks += 1
                    # Every queue was empty: no polling until jobs are stored (idle cost ~0).
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(doorbell.wait(), park_wait(time.monotonic(), polled_at, self._retry_at))
                    continue
                slot = Slot(slots)
                self._spawn(self._handle(msg, slot), slot, "job")
        finally:
            # Unsubscribe so that draining the connection does not wait on fetch inboxes.
            for sub in (*(subs or ()), bell):
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()

    def _spawn(self, job: Coroutine[Any, Any, None], slot: Slot, name: str) -> None:
        """Runs ``job`` as an owned task that gives ``slot`` back when it ends."""
        self._spawn_owned(job, name).add_done_callback(lambda _: slot.release())

    async def _supervised_pull(self) -> None:
        """Runs the fetch loop; a failure other than a transient one is logged and the loop restarted
        (while it is down, /readyz says not ready)."""
        backoff = Backoff(1.0, 30.0)
        while True:
            self._pulling = True
            try:
                await self._pull()
            except Exception:
                log.exception("job fetch loop failed; restarting it")
            finally:
                self._pulling = False
            await backoff.wait()

    async def _measure_pending(self) -> None:
        assert self.js is not None
        consumers = dict(zip(("final", "speculative", "partial"), JOB_QUEUES, strict=True))
        while True:
            for kind, (stream, consumer) in consumers.items():
                try:
                    info = await self.js.consumer_info(stream, consumer)
                    metrics.ASR_PENDING.labels(kind).set(info.num_pending or 0)
                except (TimeoutError, nats.errors.Error) as exc:
                    log.debug("consumer info of %s failed: %s", consumer, exc)
            await stream_usage.measure(self.js)
            await asyncio.sleep(metrics.PENDING_EVERY_S)

    async def _handle(self, msg: Msg, slot: Slot) -> None:
        try:
            job = job_decoder.decode(msg.data)
        except msgspec.DecodeError:
            log.error("dropping undecodable job on %s", msg.subject)
            await msg.term()
            return
        kind = "final" if job.is_final else "speculative" if job.speculative else "partial"
        age = time.time() - job.created_at
        metrics.ASR_QUEUE_WAIT.labels(kind).observe(max(0.0, age))
        if not job.is_final and age * 1000 > self.settings.partial_max_age_ms:
            self.counts["stale"] += 1
            metrics.ASR_JOBS.labels(kind, "stale").inc()
            await msg.ack()
            return
        if job.speculative and await self._superseded(job):
            metrics.ASR_JOBS.labels(kind, "superseded").inc()
            await msg.ack()
            return
        keepalive = asyncio.create_task(_in_progress(msg)) if job.is_final else None
        decoded = True
        try:
            like_final = job.is_final or job.speculative
            wants_revision = job.is_final and bool(job.previous_audio) and self.settings.revise_finals
            last, stored_index, last_seq = await self._last_final(job.session_id) if like_final and (
                self.settings.context_chars or wants_revision) else (None, 0, 0)
            prompt = last.context if last is not None and self.settings.context_chars else ""
            rec, decoded = await self._recognise(job, prompt, slot)
            carried_s = 0.0
            if wants_revision:
                if stored_index < job.final_index - 1:
                    # Another worker is still decoding the predecessor (typically a slow noisy one).
                    # The edge hands finals over in index order, so this one waits for it at no cost
                    # to the client, without a slot, and is published knowing it.
                    slot.release()
                    last, stored_index = await self._stored_predecessor(job, last_seq, last, stored_index)
                    if last is not None and self.settings.context_chars:
                        prompt = last.context
                if carries_previous(job, last, stored_index, rec.text, self.settings):
                    assert last is not None
                    await slot.take()
                    rec, carried_s = await self._carry(job, last, rec)
            skipped = why_not_revise(job, last, stored_index, self.settings) if wants_revision else "off"
            revising = not skipped
            if wants_revision and not revising:
                self._not_revised(job, skipped)
            if revising and job.reason == "end" and self.reviser is None:
                # The session's last final: the edge ends the session once it is delivered, so the
                # revision of the final before it goes first, in this slot, unless a final waits.
                assert last is not None
                await slot.take()  # a final that took a speculative decode gave its slot back
                pending = PendingRevision(last, job.previous_audio, job.audio, time.monotonic(), rec.text)
                if await self._finals_waiting():
                    await self._abandon([pending], "busy")
                else:
                    await self._run_revision(pending)
                revising = False
            await self._publish(job, rec, prompt, revising=revising, carried=(last, carried_s))
        except Exception:
            self.counts["failed"] += 1
            metrics.ASR_JOBS.labels(kind, "failed").inc()
            logs.for_session(log, job.session_id).exception("%s job %s failed", kind, job.utterance_id)
            if job.is_final:
                with contextlib.suppress(nats.errors.Error):  # if the bus is gone, ack_wait redelivers
                    if _deliveries(msg) >= TIMING.final_max_deliver:
                        await self._give_up(job, msg)
                    else:
                        await msg.nak(delay=RETRY_DELAY_S)  # another try, possibly on another worker
                        self._retry_at = time.monotonic() + RETRY_DELAY_S
            return
        finally:
            if keepalive is not None:
                keepalive.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keepalive
        await msg.ack()
        self.counts["final" if job.is_final else "partial"] += 1
        metrics.ASR_JOBS.labels(kind, "ok" if rec.text else "empty").inc()
        metrics.ASR_AUDIO_SECONDS.labels(kind).inc(rec.audio_s)
        if decoded:  # a final that took its speculative decode ran no model
            metrics.ASR_INFERENCE.labels(kind).observe(rec.inference_s)
            if rec.audio_s > 0:
                metrics.ASR_RTF.labels(kind).observe(rec.inference_s / rec.audio_s)
        if job.is_final:
            # Transcript text is personal data (dictation): in INFO logs only when asked for.
            text_level = logging.INFO if self.settings.log_transcripts else logging.DEBUG
            session_log = logs.for_session(log, job.session_id)
            session_log.info("final %d %6.2fs%s, %d chars", job.final_index, rec.inference_s,
                             "" if decoded else " (decoded ahead)", len(rec.text))
            session_log.log(text_level, "final %d text: %r", job.final_index, rec.text)
            if revising:
                assert last is not None
                self._queue_revision(PendingRevision(last, job.previous_audio, job.audio, time.monotonic(),
                                                     rec.text))

    def _not_revised(self, job: AsrJob, skipped: str) -> None:
        metrics.ASR_JOBS.labels("revision", skipped).inc()
        logs.for_session(log, job.session_id).info("final %d revision: %s", job.final_index - 1, skipped)

    async def _stored_predecessor(self, job: AsrJob, after_seq: int, last: Transcript | None,
                                  stored_index: int) -> tuple[Transcript | None, int]:
        """Final ``job``'s predecessor, still being decoded elsewhere when ``job`` was fetched: reads
        the session's finals stored after sequence ``after_seq`` until it is there, at most
        ``revision_max_lag_ms``, looking again whenever a final of the session is published (a
        subscription wakes it) or ``PREDECESSOR_POLL_S`` passed. Returns it (None if it failed for
        good) and its index, or ``last`` and ``stored_index`` unchanged if it did not come in time."""
        assert self.js is not None and self.nc is not None
        index, subject = job.final_index - 1, subjects.result_final(job.session_id)
        waited = time.monotonic()
        deadline = waited + self.settings.revision_max_lag_ms / 1000
        seq = after_seq + 1
        published = asyncio.Event()
        sub = await self.nc.subscribe(subject, cb=bus.setter(published))  # before the first read
        try:
            while (left := deadline - time.monotonic()) > 0:
                published.clear()
                try:
                    raw = await self.js.get_msg(subjects.RESULTS_STREAM, seq=seq, subject=subject, next=True,
                                                direct=True)
                except (NotFoundError, TimeoutError, nats.errors.Error) as exc:  # not stored yet, or a bus error
                    if not isinstance(exc, NotFoundError):
                        logs.for_session(log, job.session_id).debug("reading finals after %d failed: %s", seq, exc)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(published.wait(), min(left, PREDECESSOR_POLL_S))
                    continue
                seq = (raw.seq or seq) + 1
                try:
                    stored = result_decoder.decode(raw.data or b"")
                except msgspec.DecodeError:
                    continue
                if isinstance(stored, (Transcript, TranscriptionFailed)) and stored.final_index == index:
                    logs.for_session(log, job.session_id).info("final %d waited %.0f ms for final %d to be stored",
                                                               job.final_index, (time.monotonic() - waited) * 1000,
                                                               index)
                    return (stored if isinstance(stored, Transcript) else None), index
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        return last, stored_index

    async def _carry(self, job: AsrJob, last: Transcript, alone: Recognition) -> tuple[Recognition, float]:
        """Final ``job`` decoded again with the audio of its predecessor ``last`` (which had no
        words alone) in front, with the prompt ``last`` left; and the seconds of audio put in front
        (0.0 if the pair came out empty: then ``alone`` stands)."""
        prompt = last.context if self.settings.context_chars else ""
        rec = await self._decode("carry", lambda: self.transcriber.transcribe(
            job.previous_audio + job.audio, is_final=True, prompt=prompt))
        metrics.ASR_JOBS.labels("carry", "ok" if rec.text else "empty").inc()
        logs.for_session(log, job.session_id).info("final %d: decoded again with final %d's audio in front (%s)",
                                                   job.final_index, last.final_index, "words" if rec.text else "empty")
        if not rec.text:
            return alone, 0.0
        return rec, len(job.previous_audio) // 2 / SAMPLE_RATE

    async def _decode(self, kind: str, call: Callable[[], Recognition]) -> Recognition:
        """Runs ``call`` (a decode beside a job's own: a revision, a carry) in the executor, counted
        as a busy slot and in the inference and audio metrics of ``kind``."""
        metrics.ASR_BUSY.inc()
        try:
            rec = await asyncio.get_running_loop().run_in_executor(self.executor, call)
        finally:
            metrics.ASR_BUSY.dec()
        return _observed(kind, rec)

    def _queue_revision(self, pending: PendingRevision) -> None:
        """Queues a revision for the background reviser, or for the next free slot that no final
        wants (the fetch loop's doorbell wakes it if it is parked)."""
        pushed = self.revisions.put(pending)
        metrics.ASR_REVISIONS_QUEUED.set(len(self.revisions))
        (self._revision_bell if self.reviser else self._doorbell).set()
        if pushed:
            self._spawn_owned(self._abandon(pushed, "late"), "revision-abandon")

    async def _next_revision(self) -> PendingRevision | None:
        """The oldest queued revision that has not waited too long; those that have are given up."""
        if not self.revisions:  # every fetch round without a final asks: nothing to do most times
            return None
        pending, late = self.revisions.take(time.monotonic())
        metrics.ASR_REVISIONS_QUEUED.set(len(self.revisions))
        if late:
            await self._abandon(late, "late")
        return pending

    def _spawn_owned(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Runs ``work`` as a task owned like the jobs (waited for and cancelled on stop)."""
        task = asyncio.create_task(work, name=name)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)
        return task

    async def _abandon(self, pending: list[PendingRevision], outcome: str) -> None:
        """Publishes an empty outcome for revisions that will not run (an edge ending the session
        stops waiting for them)."""
        for p in pending:
            await self._publish_revision(p, outcome, None)

    def _background_revisions(self) -> bool:
        """Whether revisions wait for or run in the background reviser: this worker then takes no
        partial, so its core is left to the revision (finals still start at once). Revisions came
        before partials when they ran in the slots too; without this, partials at the normal
        priority took the CPU the revision process runs on, and revisions under load waited past
        ``revision_max_lag_ms``."""
        return self.reviser is not None and (self._revising is not None or bool(self.revisions))

    async def _serve_revisions(self) -> None:
        """Starts the background reviser (jobs are taken meanwhile: a worker restarted under load
        serves finals at once), then hands it the queued revisions, oldest first, one at a time
        (those that waited longer than ``revision_max_lag_ms`` are given up)."""
        assert self.reviser is not None
        started = time.monotonic()
        try:
            await asyncio.to_thread(self.reviser.start)
        except Exception:
            log.exception("the revision process did not start; revisions decode in the slots")
            self.reviser.shutdown()
            self.reviser = None
            self._doorbell.set()  # the fetch loop serves the queue now
            return
        log.info("revision process started in %.1f s", time.monotonic() - started)
        while True:
            while (pending := await self._next_revision()) is not None:
                self._revising = pending
                await self._run_revision(pending)
                self._revising = None
            self._doorbell.set()  # partials are fetched again (`_background_revisions`)
            await self._revision_bell.wait()
            self._revision_bell.clear()

    async def _run_revision(self, pending: PendingRevision) -> None:
        """Decodes final ``pending.last`` again with the next final's audio after it, with the
        prompt it had, and publishes its `Revision`: the new text if its words changed, else ""."""
        last = pending.last
        metrics.ASR_QUEUE_WAIT.labels("revision").observe(max(0.0, time.monotonic() - pending.queued_at))
        try:
            if self.reviser is not None:
                rec = _observed("revision", await self.reviser.revise(
                    pending.audio, pending.following, prompt=pending.prompt, following_text=pending.following_text))
            else:
                rec = await self._decode("revision", lambda: self.transcriber.revise(
                    pending.audio, pending.following, prompt=pending.prompt,
                    following_text=pending.following_text))
        except Exception:
            logs.for_session(log, last.session_id).exception("final %d: revision failed", last.final_index)
            await self._publish_revision(pending, "failed", None)
            return
        outcome = revision_outcome(last.text, rec.text)
        await self._publish_revision(pending, outcome, rec if outcome == "ok" else None)

    async def _publish_revision(self, pending: PendingRevision, outcome: str, rec: Recognition | None) -> None:
        """The `Revision` of ``pending.last``: ``rec``'s text and words, or "" (no change, or no
        decode: ``outcome`` says why)."""
        last = pending.last
        words: tuple[RecognisedWord, ...] = rec.words if rec is not None else ()
        revision = Revision(
            session_id=last.session_id, utterance_id=last.utterance_id, final_index=last.final_index,
            text=rec.text if rec is not None else "", start_s=last.start_s, end_s=last.end_s,
            published_at=time.time(),
            words=tuple(Word(w.word, last.start_s + w.start_s, last.start_s + w.end_s, w.probability)
                        for w in words),
        )
        if not await self._send_revision(revision, outcome):
            return
        if rec is not None:
            text_level = logging.INFO if self.settings.log_transcripts else logging.DEBUG
            logs.for_session(log, last.session_id).log(text_level, "final %d revised: %r", last.final_index, rec.text)

    async def _send_revision(self, revision: Revision, outcome: str) -> bool:
        metrics.ASR_JOBS.labels("revision", outcome).inc()
        assert self.js is not None
        try:  # stored, so finals read back from RESULTS carry it (common.revised_finals)
            await self.js.publish(subjects.result_revision(revision.session_id), encode(revision),
                                  headers={subjects.H_MSG_ID: subjects.revision_result_id(revision.session_id,
                                                                                          revision.final_index)})
        except (TimeoutError, nats.errors.Error) as exc:
            logs.for_session(log, revision.session_id).warning("final %d: revision not published: %s",
                                                               revision.final_index, exc)
            return False
        logs.for_session(log, revision.session_id).info("final %d revision: %s", revision.final_index, outcome)
        return True

    async def _finals_waiting(self) -> bool:
        """Whether a final job is stored that no worker has taken yet (an error counts as no)."""
        assert self.js is not None
        try:
            info = await self.js.consumer_info(subjects.JOBS_FINAL_STREAM, subjects.FINAL_CONSUMER)
        except (TimeoutError, nats.errors.Error) as exc:
            log.debug("final consumer info failed: %s", exc)
            return False
        return bool(info.num_pending)

    async def _superseded(self, job: AsrJob) -> bool:
        """The speculative job's final is already being decoded on its own (it got a slot first)."""
        if self.speculations is None:
            return False
        try:
            return await self.speculations.moot(speculation.key(job.session_id, job.final_index))
        except (TimeoutError, nats.errors.Error):
            return False

    async def _recognise(self, job: AsrJob, prompt: str, slot: Slot) -> tuple[Recognition, bool]:
        """The job's recognition, and whether this call decoded it (False: a final took its
        speculative decode). A speculative job is decoded like its final and stored for it. While
        a final waits for a speculation running elsewhere, its slot serves other jobs."""
        store = self.speculations
        name = speculation.key(job.session_id, job.final_index)
        # Hashing the audio is for finals and speculations only, never for plain partials.
        dig = speculation.digest(job, prompt, self._decoder_id) if store and (job.is_final or job.speculative) else ""
        if job.is_final and store is not None:
            try:
                ahead, outcome = await store.take(name, dig, waiting=slot.release)
            except (TimeoutError, nats.errors.Error) as exc:  # the cache is optional: decode
                log.debug("speculation %s unreadable: %s", name, exc)
                ahead, outcome = None, speculation.Outcome.NONE
            metrics.ASR_SPECULATION.labels(outcome.value).inc()
            logs.for_session(log, job.session_id).debug("final %d: speculation %s", job.final_index, outcome.value)
            if ahead is not None:
                return ahead, False
            if outcome is speculation.Outcome.NONE:
                await _optional(store.final_taken(name), name)
            await slot.take()
        speculative = job.speculative and store is not None
        if speculative:
            assert store is not None
            await _optional(store.started(name, dig), name)
        metrics.ASR_BUSY.inc()
        metrics.ASR_BATCH_SIZE.observe(1)
        try:
            rec = await asyncio.get_running_loop().run_in_executor(
                self.executor, lambda: self.transcriber.transcribe(
                    job.audio, is_final=job.is_final or speculative, prompt=prompt, context=job.context_audio)
            )
        except BaseException:
            if speculative:  # a final waiting for this decode should not wait out speculation_wait_ms
                assert store is not None
                await asyncio.shield(_optional(store.failed(name, dig), name))
            raise
        finally:
            metrics.ASR_BUSY.dec()
        if speculative:
            assert store is not None
            await _optional(store.finished(name, dig, rec), name)
            logs.for_session(log, job.session_id).debug("final %d decoded ahead in %.2fs",
                                                        job.final_index, rec.inference_s)
        return rec, True

    async def _give_up(self, job: AsrJob, msg: Msg) -> None:
        """The last delivery of a final failed: store a terminal failure in its place (the client
        gets TRANSCRIPTION_FAILED and the finals after it flow), and take the job off the queue."""
        assert self.js is not None
        failure = TranscriptionFailed(
            session_id=job.session_id, final_index=job.final_index, code="TRANSCRIPTION_FAILED",
            message=f"This utterance could not be transcribed ({TIMING.final_max_deliver} attempts failed)",
            utterance_id=job.utterance_id, start_s=job.start_s, end_s=job.end_s,
        )
        await self.js.publish(subjects.result_final(job.session_id), encode(failure),
                              headers={subjects.H_MSG_ID: subjects.final_result_id(job.session_id, job.final_index)})
        await msg.term()
        metrics.FINALS_FAILED.labels("asr_attempts").inc()
        logs.for_session(log, job.session_id).error("final %d failed %d times: stored as failed",
                                                    job.final_index, TIMING.final_max_deliver)

    async def _publish(self, job: AsrJob, rec: Recognition, prompt: str, *, revising: bool = False,
                       carried: tuple[Transcript | None, float] = (None, 0.0)) -> None:
        """Publishes ``rec`` as the job's transcript. ``carried``: the predecessor and the seconds
        of its audio decoded in front of the job's (`_carry`), if any."""
        assert self.nc is not None and self.js is not None
        context = next_prompt(prompt, rec.text, self.settings.context_chars) if job.is_final else ""
        before, carried_s = carried
        start_s = before.start_s if before is not None and carried_s else job.start_s

        def session_time(t: float) -> float:  # the decoded audio skips the pause between the two
            return start_s + t if t < carried_s else job.start_s + t - carried_s

        result = Transcript(
            session_id=job.session_id, utterance_id=job.utterance_id, is_final=job.is_final,
            text=rec.text, start_s=start_s, end_s=job.end_s, final_index=job.final_index,
            context=context, worker_id=self.worker_id, inference_s=rec.inference_s,
            speech_end_at=job.speech_end_at, published_at=time.time(),
            words=tuple(Word(w.word, session_time(w.start_s), session_time(w.end_s), w.probability)
                        for w in rec.words),
            revising=revising, avg_logprob=rec.avg_logprob if job.is_final else 0.0, carried_s=carried_s,
            reason=job.reason if job.is_final else "",
        )
        if job.is_final:
            msg_id = subjects.final_result_id(job.session_id, job.final_index)
            await self.js.publish(subjects.result_final(job.session_id), encode(result),
                                  headers={subjects.H_MSG_ID: msg_id})
        else:
            await self.nc.publish(subjects.result_partial(job.session_id), encode(result))

    async def _last_final(self, session_id: str) -> tuple[Transcript | None, int, int]:
        """The session's latest stored final (its ``context`` is the next final's prompt; None if
        it failed), the index of that final, and its sequence in the RESULTS stream (0, 0: none
        stored)."""
        assert self.js is not None
        try:
            last = await self.js.get_last_msg(subjects.RESULTS_STREAM, subjects.result_final(session_id),
                                              direct=True)
        except NotFoundError:
            return None, 0, 0
        stored = result_decoder.decode(last.data) if last.data else None
        index = stored.final_index if isinstance(stored, (Transcript, TranscriptionFailed)) else 0
        return stored if isinstance(stored, Transcript) else None, index, last.seq or 0


class Slot:
    """One job's claim on one of the worker's ``asr_concurrency`` decoding slots. A final that
    waits for another worker's speculative decode gives its slot back meanwhile (waiting needs no
    model) and takes one again only if it must decode after all."""

    def __init__(self, slots: asyncio.Semaphore) -> None:
        self._slots = slots
        self.held = True  # acquired by the fetch loop before the job was fetched

    def release(self) -> None:
        if self.held:
            self.held = False
            self._slots.release()

    async def take(self) -> None:
        if not self.held:
            await self._slots.acquire()
            self.held = True


async def _optional(call: Awaitable[object], name: str) -> None:
    """A write to the speculation cache: on a bus error the final is simply decoded again (if the
    "running" entry was written but not its result, the final waits up to speculation_wait_ms)."""
    try:
        await call
    except (TimeoutError, nats.errors.Error) as exc:
        log.warning("speculation %s not stored: %s", name, exc)


def park_wait(now: float, polled_at: float, retry_at: float) -> float:
    """Seconds an idle fetch loop waits for the doorbell after a round of polls that began at
    ``polled_at`` found nothing: ``PARK_S``, or until just past ``retry_at`` (monotonic), when a
    final this worker put back for another try comes due that the round was too early for."""
    if retry_at < polled_at:
        return PARK_S
    return max(RETRY_SLACK_S, min(PARK_S, retry_at - now + RETRY_SLACK_S))


async def _fetch_one(sub: JetStreamContext.PullSubscription, timeout: float) -> Msg | None:
    try:
        msgs = await sub.fetch(1, timeout=timeout)
    except TimeoutError:  # nothing waiting (nats.errors.TimeoutError is one too)
        return None
    return msgs[0] if msgs else None


def _deliveries(msg: Msg) -> int:
    """How many times JetStream has delivered this message (1 on the first try)."""
    try:
        return int(msg.metadata.num_delivered or 1)
    except (ValueError, TypeError, AttributeError):
        return 1


async def _in_progress(msg: Msg) -> None:
    while True:
        await asyncio.sleep(TIMING.final_in_progress_every_s)
        await msg.in_progress()
