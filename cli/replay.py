"""``asr replay SESSION_ID…``: feed recorded audio back through the pipeline as new sessions.

Each recorded session's messages (audio, finalize, drain, end; an ``end`` is added when the
recording has none) are published into stream AUDIO under a NEW session id, in the recorded
order, with new ``Nats-Msg-Id``s, ``Asr-Replay: <original id>`` and, with ``--set``,
``Asr-Options: {"endpointing_ms": …}`` for the VAD worker. ``--speed 1`` keeps the recorded
pace (the gaps between the edge's ``Asr-Sent-At``); ``--speed max`` publishes as fast as
JetStream acknowledges, at most :data:`MAX_IN_FLIGHT` publishes unacknowledged, and the pool
works through them at its pace. The new session's finals are collected from
``results.<new>.*`` (live) and from the RESULTS stream (gaps), until its ``flushed`` marker and
every final it counts have arrived (and, up to ``revision_end_wait_ms``, the revisions they
announced); the transcript is read back from RESULTS as revised.

Replays never pass through an edge, so they hold no live capacity; ``replay_max_concurrent``
(or ``--concurrency``) bounds how many one run feeds at once.

``--set model=…`` is refused: the recognition is done by the deployment's ASR pool, which runs
one model; compare models by replaying against a second stack started with that model.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import PubAck

from cli import compare, nats_access, recordings
from cli.progress import Progress
from cli.sessions import parse_duration
from cli.transcript_formats import EXTENSIONS, FORMATS, Final, delivered, render
from common import subjects, tasks
from common.audio import TARGET_RATE, AudioFormatError, pcm_duration_s, read_audio
from common.messages import Revision, SessionFlushed, Transcript, result_decoder
from common.settings import Settings, SettingsError, replace

FILE_CHUNK_MS = 100  # an audio file given to `asr replay` is fed in chunks of this length
MAX_IN_FLIGHT = 64  # unacknowledged audio publishes per replayed session at --speed max
REPAIR_EVERY_S = 2.0  # without a live result this long, read the RESULTS stream for missed finals
PROGRESS_EVERY_S = 0.5
REPLAY_SETTINGS = ("endpointing_ms",)  # what the VAD worker takes per session from Asr-Options
MODEL_REFUSED = (
    "--set model is not supported: a replay is recognised by the deployment's own ASR pool, which runs "
    "one model; to compare models, start a second stack with ASR_MODEL=… and replay against it with --nats-url."
)


class ReplayFailed(recordings.RecordingError):
    pass


def parse_sets(pairs: list[str], settings: Settings) -> dict[str, int]:
    """``KEY=VALUE`` pairs -> the Asr-Options object, validated like the setting itself. KEY is the
    setting's name, or its environment variable's (``ASR_ENDPOINTING_MS``, as the docs write it)."""
    options: dict[str, int] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().lower().removeprefix("asr_")
        if not sep or not key:
            raise recordings.RecordingError(f"--set {pair!r} is not KEY=VALUE; use e.g. --set endpointing_ms=800.")
        if key == "model":
            raise recordings.RecordingError(MODEL_REFUSED)
        if key not in REPLAY_SETTINGS:
            raise recordings.RecordingError(
                f"--set {key} is not a setting a replay can change; use one of: {', '.join(REPLAY_SETTINGS)}."
            )
        try:
            options[key] = int(value)
        except ValueError:
            raise recordings.RecordingError(f"--set {key}={value!r} must be a whole number.") from None
    try:
        replace(settings, **options)
    except SettingsError as exc:
        raise recordings.RecordingError(" ".join(exc.problems)) from None
    return options


def parse_speed(text: str) -> float:
    """``max`` -> 0 (unpaced); else a positive factor of the recorded pace."""
    if text.strip().lower() == "max":
        return 0.0
    try:
        speed = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a speed; use 1 (recorded pace), 2, … or max") from None
    if speed <= 0:
        raise argparse.ArgumentTypeError(f"speed must be positive or max, got {text!r}")
    return speed


@dataclass(frozen=True, slots=True)
class Replayed:
    source_id: str
    replay_id: str
    finals: list[Final]
    audio_s: float
    wall_s: float


@dataclass(frozen=True, slots=True)
class Job:
    """One replay to run: a recording under one set of VAD options."""

    source_id: str
    messages: list[recordings.AudioMessage]
    options: dict[str, int]


def file_messages(pcm: bytes, chunk_ms: int = FILE_CHUNK_MS) -> list[recordings.AudioMessage]:
    """An audio file as if a client had streamed it live: chunks of ``chunk_ms``, then ``end``."""
    size = TARGET_RATE * 2 * chunk_ms // 1000
    messages = [
        recordings.AudioMessage("audio", i + 1, start, pcm_duration_s(start), pcm[start : start + size])
        for i, start in enumerate(range(0, len(pcm), size))
    ]
    return _with_end(messages)


def _with_end(messages: list[recordings.AudioMessage]) -> list[recordings.AudioMessage]:
    if not messages:
        return [recordings.AudioMessage("end", 1, 0, 0.0, b"")]
    if messages[-1].kind == "end":
        return messages
    last = messages[-1]
    return [*messages, recordings.AudioMessage("end", last.seq + 1, last.offset + len(last.pcm), last.sent_at, b"")]


async def _feed(
    js: JetStreamContext, settings: Settings, job: Job, replay_id: str, speed: float,
    on_fed: Callable[[float], None],
) -> None:
    subject = subjects.audio(replay_id, settings.audio_shards)
    options = json.dumps(job.options, separators=(",", ":")) if job.options else ""
    loop = asyncio.get_running_loop()
    started = loop.time()
    messages = _with_end(job.messages)
    first_sent = messages[0].sent_at
    pending: deque[asyncio.Future[PubAck]] = deque()
    offset = 0
    for seq, msg in enumerate(messages, 1):
        if speed:
            await asyncio.sleep(max(0.0, started + (msg.sent_at - first_sent) / speed - loop.time()))
        headers = {
            subjects.H_MSG_ID: f"{replay_id}.{seq}", subjects.H_KIND: msg.kind, subjects.H_SEQ: str(seq),
            subjects.H_OFFSET: str(offset), subjects.H_SENT_AT: f"{time.time():.6f}",
            subjects.H_REPLAY: _replay_of(job.source_id),
        }
        if options:
            headers[subjects.H_OPTIONS] = options
        pending.append(await js.publish_async(subject, msg.pcm, headers=headers))
        offset += len(msg.pcm)
        on_fed(pcm_duration_s(offset))
        while len(pending) > MAX_IN_FLIGHT or (pending and pending[0].done()):
            await asyncio.wait_for(pending.popleft(), settings.publish_timeout_seconds)
    while pending:
        await asyncio.wait_for(pending.popleft(), settings.publish_timeout_seconds)


async def replay_one(
    nc: NATS, js: JetStreamContext, settings: Settings, job: Job, speed: float, progress: Progress,
    timeout_s: float,
) -> Replayed:
    """Feeds one recording as a new session and waits for all of its finals, and up to
    ``revision_end_wait_ms`` for the revisions its finals announced; the finals come out as
    revised (read back from RESULTS, where revisions are stored)."""
    replay_id = uuid.uuid4().hex
    t0 = time.monotonic()
    finals: dict[int, Transcript] = {}
    revisions_due: set[int] = set()  # finals whose announced revision has not come
    flushed: SessionFlushed | None = None
    last_progress = time.monotonic()

    def fed(audio_s: float) -> None:
        nonlocal last_progress
        last_progress = time.monotonic()
        progress.fed(replay_id, audio_s)

    def take(result: object) -> None:
        nonlocal flushed, last_progress
        if isinstance(result, Transcript) and result.is_final and result.final_index not in finals:
            finals[result.final_index] = result
            if result.revising:
                revisions_due.add(result.final_index - 1)
            last_progress = time.monotonic()
        elif isinstance(result, Revision):
            revisions_due.discard(result.final_index)
        elif isinstance(result, SessionFlushed) and result.ended:
            flushed = result
            last_progress = time.monotonic()

    def complete() -> bool:
        return flushed is not None and all(i in finals for i in range(1, flushed.finals_total + 1))

    sub = await nc.subscribe(subjects.results(replay_id))
    feeder = asyncio.create_task(_feed(js, settings, job, replay_id, speed, fed), name=f"replay-feed-{replay_id}")
    try:
        while not complete():
            if feeder.done():
                feeder.result()  # a publish failed: raise it
            try:
                msg = await sub.next_msg(timeout=REPAIR_EVERY_S)
            except (TimeoutError, nats.errors.TimeoutError):
                stored, stored_flushed = await recordings.read_results(js, replay_id)
                for result in [*stored, *([stored_flushed] if stored_flushed else [])]:
                    take(result)
                if not complete() and time.monotonic() - last_progress > timeout_s:
                    raise ReplayFailed(
                        f"the replay of session {job.source_id} (as {replay_id}) got no result for "
                        f"{timeout_s:.0f} s (replay_timeout_seconds): check that VAD and ASR workers are running."
                    ) from None
                continue
            try:
                take(result_decoder.decode(msg.data))
            except msgspec.DecodeError:
                continue  # not a result of ours (nothing else should publish there)
        await feeder
        wait_until = time.monotonic() + settings.revision_end_wait_ms / 1000
        while revisions_due and (left := wait_until - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError, nats.errors.TimeoutError, msgspec.DecodeError):
                take(result_decoder.decode((await sub.next_msg(timeout=left)).data))
    finally:
        await tasks.stop(feeder)
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
    stored, _ = await recordings.read_results(js, replay_id)  # as revised
    finals.update({final.final_index: final for final in stored})
    done = delivered(finals.values())
    progress.done(len(done))
    audio_s = pcm_duration_s(sum(len(m.pcm) for m in job.messages))
    return Replayed(job.source_id, replay_id, done, audio_s, time.monotonic() - t0)


# --- the command ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session_ids", nargs="*", metavar="SESSION_ID",
                        help="recorded sessions to replay, or audio files (WAV, mp3, m4a, ogg, flac, video)")
    parser.add_argument("--since", type=parse_duration, default=None, metavar="DURATION",
                        help="replay every recorded (non-replay) session started within this long, e.g. 1h")
    parser.add_argument("--speed", type=parse_speed, default=0.0, metavar="1|max",
                        help="1: the recorded pace; max: as fast as the pool allows (default max)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help=f"a VAD setting for the replay: {', '.join(REPLAY_SETTINGS)} (model: see docs/replay.md)")
    parser.add_argument("--format", choices=FORMATS, default="text", help="transcript format (default text)")
    parser.add_argument("-o", "--output-dir", type=Path, default=None, metavar="DIR",
                        help="write each transcript to DIR/<session>.<ext> (and compare.json) instead of stdout")
    parser.add_argument("--compare", action="store_true",
                        help="compare transcript A (live, or a replay with --baseline-set) with B (the replay "
                             "with --set): word difference and final latency, as a table")
    parser.add_argument("--baseline-set", dest="baseline_sets", action="append", default=None,
                        metavar="KEY=VALUE", help="with --compare: A is a replay with these settings, not the live "
                                                  "transcript (give --baseline-set '' for the deployment's defaults)")
    parser.add_argument("--json", action="store_true", help="with --compare: print the comparison as JSON")
    parser.add_argument("--concurrency", type=int, default=None, metavar="N",
                        help="sessions fed at once (default: the replay_max_concurrent setting)")
    parser.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                        help="progress bar on stderr (auto: when stderr is a terminal)")
    nats_access.add_arguments(parser)


async def _select(js: JetStreamContext, args: argparse.Namespace) -> list[str]:
    if args.session_ids:
        return list(dict.fromkeys(args.session_ids))
    if not await recordings.recording_enabled(js):
        raise recordings.RecordingError(
            "this deployment runs with record_audio off: no session was recorded, so none can be replayed."
        )
    rows = await recordings.list_sessions(js, args.since)
    chosen = [r.session_id for r in rows if r.audio_kept and not r.replay_of]
    if not chosen:
        raise recordings.RecordingError(f"no recorded session started within the last {args.since:.0f} s.")
    return chosen


class _Runner:
    """Runs the replays of one command with bounded concurrency and draws the progress bar."""

    def __init__(self, nc: NATS, js: JetStreamContext, settings: Settings, args: argparse.Namespace,
                 total_audio_s: float, total: int, stderr: TextIO) -> None:
        self.nc, self.js, self.settings, self.args, self.stderr = nc, js, settings, args, stderr
        self.progress = Progress(total_audio_s, total)
        self.slots = asyncio.Semaphore(args.concurrency or settings.replay_max_concurrent)
        self.show = args.progress == "always" or (args.progress == "auto" and stderr.isatty())
        self.started = time.monotonic()

    async def one(self, job: Job) -> Replayed:
        async with self.slots:
            return await replay_one(self.nc, self.js, self.settings, job, self.args.speed, self.progress,
                                    self.settings.replay_timeout_seconds)

    async def all(self, jobs: list[Job]) -> list[Replayed | BaseException]:
        drawer = asyncio.create_task(self._draw(), name="replay-progress") if self.show else None
        try:
            return list(await asyncio.gather(*(self.one(j) for j in jobs), return_exceptions=True))
        finally:
            if drawer is not None:
                await tasks.stop(drawer)
                self.stderr.write("\r\x1b[K" + self.progress.line(time.monotonic() - self.started) + "\n")
                self.stderr.flush()

    async def _draw(self) -> None:
        while True:
            self.stderr.write("\r\x1b[K" + self.progress.line(time.monotonic() - self.started))
            self.stderr.flush()
            await asyncio.sleep(PROGRESS_EVERY_S)


def _finals(n: int) -> str:
    return f"{n} final" if n == 1 else f"{n} finals"


def _summary(results: list[Replayed], failures: list[str], wall_s: float) -> str:
    lines = [f"  {r.source_id} -> {r.replay_id}: {_finals(len(r.finals))}, {r.audio_s:.1f} s of audio "
             f"in {r.wall_s:.1f} s" for r in results]
    lines += [f"  failed: {f}" for f in failures]
    audio = sum(r.audio_s for r in results)
    speed = f" ({audio / wall_s:.1f}x real time)" if wall_s > 0 and audio else ""
    lines.append(
        f"replayed {len(results)} session(s): {audio:.1f} s of audio in {wall_s:.1f} s{speed}, "
        f"{_finals(sum(len(r.finals) for r in results))}" + (f"; {len(failures)} failed" if failures else "")
    )
    return "\n".join(lines) + "\n"


def _write_transcripts(args: argparse.Namespace, results: list[Replayed], out: TextIO) -> None:
    for r in results:
        text = render(r.replay_id, r.finals, args.format)
        if args.output_dir is not None:
            path = args.output_dir / f"{Path(r.source_id).stem}.{EXTENSIONS[args.format]}"
            path.write_text(text)
            out.write(f"{path}\n")
        elif args.format == "json":
            doc = json.loads(text)
            out.write(json.dumps({"replay_of": r.source_id, **doc}, ensure_ascii=False) + "\n")
        else:
            if len(results) > 1:
                out.write(f"== {r.source_id} (replay {r.replay_id}) ==\n")
            out.write(text)


def _replay_of(source: str) -> str:
    """The Asr-Replay header: the session id, or ``file:<name>`` (header-safe) for an audio file."""
    if not _is_file(source):
        return source
    return "file:" + re.sub(r"[^A-Za-z0-9._-]", "_", Path(source).name)


def _is_file(source: str) -> bool:
    """An existing file is replayed as audio, never looked up as a session."""
    return Path(source).is_file()


async def _source(js: JetStreamContext, source: str) -> list[recordings.AudioMessage]:
    """A recorded session's messages, or an audio file (anything FFmpeg decodes) cut into chunks."""
    if _is_file(source):
        try:
            pcm = await asyncio.to_thread(read_audio, source)
        except (AudioFormatError, OSError) as exc:
            raise recordings.RecordingError(str(exc)) from None
        return file_messages(pcm)
    return await recordings.recorded_audio(js, source)


async def _live_side(js: JetStreamContext, session_id: str) -> compare.Side:
    finals, flushed = await recordings.read_results(js, session_id)
    if not finals and flushed is None:
        raise recordings.RecordingError(
            f"the live transcript of session {session_id} is no longer kept (results_retention_seconds); "
            "compare two replays instead with --baseline-set."
        )
    return compare.Side(session_id, delivered(finals))


def _label(options: dict[str, int] | None) -> str:
    if options is None:
        return "live transcript"
    settings = ", ".join(f"{k}={v}" for k, v in options.items()) or "the deployment's settings"
    return f"replay with {settings}"


def run(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr

    async def body(nc: NATS, js: JetStreamContext, settings: Settings) -> int:
        if args.concurrency is not None and args.concurrency < 1:
            raise recordings.RecordingError(f"--concurrency must be at least 1, got {args.concurrency}.")
        if not args.session_ids and args.since is None:
            raise recordings.RecordingError("name the sessions to replay (SESSION_ID…) or choose them with --since 1h.")
        if (args.baseline_sets is not None or args.json) and not args.compare:
            raise recordings.RecordingError("--baseline-set and --json go with --compare.")
        options = parse_sets(args.sets, settings)
        baseline = None if args.baseline_sets is None else parse_sets([s for s in args.baseline_sets if s], settings)
        if args.output_dir is not None:
            args.output_dir.mkdir(parents=True, exist_ok=True)
        ids = await _select(js, args)
        recorded = {sid: await _source(js, sid) for sid in ids}
        files = [sid for sid in ids if _is_file(sid)]
        if files and args.compare and baseline is None:
            raise recordings.RecordingError(
                f"{files[0]} is a file and has no live transcript to compare with; add --baseline-set."
            )
        live = {sid: await _live_side(js, sid) for sid in ids} if args.compare and baseline is None else {}
        jobs = [Job(sid, msgs, options) for sid, msgs in recorded.items()]
        if args.compare and baseline is not None:
            jobs += [Job(sid, msgs, baseline) for sid, msgs in recorded.items()]
        total_audio = sum(pcm_duration_s(sum(len(m.pcm) for m in j.messages)) for j in jobs)
        runner = _Runner(nc, js, settings, args, total_audio, len(jobs), err)
        outcomes = await runner.all(jobs)
        done = [o for o in outcomes if isinstance(o, Replayed)]
        failures = []
        for job, outcome in zip(jobs, outcomes, strict=True):
            if isinstance(outcome, recordings.RecordingError):
                failures.append(str(outcome))
            elif isinstance(outcome, BaseException):
                failures.append(f"{job.source_id}: {outcome!r}")
        if args.compare:
            _report(args, ids, outcomes, live, options, baseline, out)
        else:
            _write_transcripts(args, done, out)
        err.write(_summary(done, failures, time.monotonic() - runner.started))
        return 1 if failures else 0

    return nats_access.run(args, body, err)


def _report(
    args: argparse.Namespace, ids: list[str], outcomes: list[Replayed | BaseException],
    live: dict[str, compare.Side], options: dict[str, int], baseline: dict[str, int] | None, out: TextIO,
) -> None:
    # outcomes: B (--set) of every session in order, then A (--baseline-set) of every session
    n = len(ids)
    b_runs = {r.source_id: r for r in outcomes[:n] if isinstance(r, Replayed)}
    a_runs = {r.source_id: r for r in outcomes[n:] if isinstance(r, Replayed)}
    rows: list[compare.Row] = []
    a_lat: list[float] = []
    b_lat: list[float] = []
    for sid in ids:
        if sid not in b_runs or (baseline is not None and sid not in a_runs):
            continue  # its replay failed: listed in the summary
        b = compare.Side(b_runs[sid].replay_id, b_runs[sid].finals)
        a = live[sid] if baseline is None else compare.Side(a_runs[sid].replay_id, a_runs[sid].finals)
        rows.append(compare.compare(sid, a, b))
        a_lat += a.latencies
        b_lat += b.latencies
    total = compare.overall(rows, a_lat, b_lat)
    a_label, b_label = _label(baseline), _label(options)
    doc = compare.report_json(a_label, b_label, rows, total)
    if args.output_dir is not None:
        (args.output_dir / "compare.json").write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        out.write(compare.table(a_label, b_label, rows, total))
