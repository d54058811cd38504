"""End-to-end latency of the pipeline against direct faster-whisper on the same audio.

    .venv/bin/python -m benchmarks.pipeline_latency [--sessions 1,4,8] [--rounds 3] [--stagger-ms 0]
        [--baseline-repeats 5] [--out benchmarks/RESULTS.md]

1. Baseline, in this process and before the stack starts: `Transcriber` with the ASR worker's
   default options (tiny.en bundled, int8, cpu_threads=1, beam 1) on each utterance of
   tests/data/three_utterances.wav, cut where the pipeline's own Segmenter (webrtcvad, default
   options) cuts it, with the same prompt the worker gives a final (the session's earlier finals).
2. Pipeline: a private `cli.dev.Stack` (own nats-server, free port, temporary data folder, logs to
   a file). For each concurrency level N, ``--rounds`` times: N WebSocket sessions opened at once,
   each streaming the WAV like a microphone (100 ms chunk k leaves at t0 + (k+1)·100 ms, paced
   against the clock), then ``end``. Latency of a final = arrival − (t0 + its end_s): the time
   after the end of its audio, in real time.

A dated section is appended to the results file (older runs are kept). Nothing here is a test:
the numbers depend on the machine and on whatever else it is running.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import numpy as np
import webrtcvad

from asr_worker.asr_settings import AsrSettings
from asr_worker.prompt import next_prompt
from asr_worker.transcriber import Transcriber
from asr_worker.worker import transcriber_options
from cli.dev import Stack
from common.settings import Settings
from tests.conftest import ONE_SENTENCE, THREE_UTTERANCES, free_port, pcm_of
from tests.helpers import connect, wer
from vad_worker import segmenter
from vad_worker.segmenter import SegmenterOptions
from vad_worker.session import segmenter_options
from vad_worker.vad_settings import VadSettings

WAV = "three_utterances.wav"
CHUNK_MS = 100
BYTES_PER_S = 32000  # PCM s16le 16 kHz mono
SESSION_SLACK_S = 60.0  # a session may take this much longer than its audio before it is abandoned
PAUSE_BETWEEN_ROUNDS_S = 2.0
_WORKER_FINAL = re.compile(r"final \d+ +([\d.]+)s(?: →|,)")  # "final 3   0.41s, 40 chars"


# --- baseline ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Cut:
    start_s: float
    end_s: float
    reason: str
    audio: bytes


@dataclass(slots=True)
class Baseline:
    cuts: list[Cut]
    inference_s: list[list[float]]  # per utterance, one value per repeat
    texts: list[str]

    def all_times(self) -> list[float]:
        return [t for times in self.inference_s for t in times]


def cut_like_the_pipeline(pcm: bytes, options: SegmenterOptions, aggressiveness: int,
                          engine: ModuleType = segmenter) -> list[Cut]:
    """``pcm`` cut as the VAD worker cuts it, in 100 ms chunks. ``engine``: the module whose
    Segmenter cuts, e.g. an earlier vad_worker/segmenter.py loaded to compare with (``options`` is
    passed to it field by field)."""
    if engine is not segmenter:
        options = engine.SegmenterOptions(**{f: getattr(options, f) for f in options.__dataclass_fields__})
    vad = webrtcvad.Vad(aggressiveness)
    seg = engine.Segmenter(options, lambda frame: bool(vad.is_speech(frame, options.sample_rate)))
    step = BYTES_PER_S * CHUNK_MS // 1000
    events = [e for i in range(0, len(pcm), step) for e in seg.push(pcm[i : i + step])] + seg.end()
    return [Cut(e.start_s, e.end_s, e.reason, e.audio) for e in events if isinstance(e, engine.FinalReady)]


def run_baseline(cuts: list[Cut], settings: Settings, repeats: int) -> Baseline:
    transcriber = Transcriber(transcriber_options(AsrSettings.from_settings(settings)))
    transcriber.transcribe(cuts[0].audio, is_final=True)  # warm-up, not counted
    result = Baseline(cuts, [], [])
    context = ""
    for cut in cuts:
        times = []
        for _ in range(repeats):
            rec = transcriber.transcribe(cut.audio, is_final=True, prompt=context)
            times.append(rec.inference_s)
        result.inference_s.append(times)
        result.texts.append(rec.text)
        context = next_prompt(context, rec.text, settings.context_chars)
    return result


# --- pipeline sessions ------------------------------------------------------------------------

@dataclass(slots=True)
class Session:
    t0: float = 0.0
    """time.monotonic() of audio time 0."""
    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    ended_at: float | None = None
    max_send_lag_s: float = 0.0
    """Worst lateness of a chunk against its schedule (the client itself falling behind)."""
    error: str = ""

    def of(self, kind: str, *, final: bool | None = None) -> list[tuple[float, dict[str, Any]]]:
        return [(t, m) for t, m in self.received
                if m["type"] == kind and (final is None or m.get("is_final") is final)]


async def _read(ws: aiohttp.ClientWebSocketResponse, session: Session) -> None:
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            continue
        data = json.loads(msg.data)
        now = time.monotonic()
        session.received.append((now, data))
        if data["type"] == "session_ended":
            session.ended_at = now
            return


async def run_session(http: aiohttp.ClientSession, url: str, pcm: bytes, t0: float, timeout: float) -> Session:
    session = Session(t0=t0)
    step = BYTES_PER_S * CHUNK_MS // 1000
    try:
        async with asyncio.timeout(timeout):
            client = await connect(http, url)
            reader = asyncio.create_task(_read(client.ws, session))
            try:
                for k, i in enumerate(range(0, len(pcm), step)):
                    due = t0 + (k + 1) * CHUNK_MS / 1000
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    session.max_send_lag_s = max(session.max_send_lag_s, time.monotonic() - due)
                    await client.ws.send_bytes(pcm[i : i + step])
                await client.send_json({"type": "end"})
                await reader
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                await client.ws.close()
    except (TimeoutError, aiohttp.ClientError, AssertionError) as exc:
        session.error = f"{type(exc).__name__}: {exc}"[:200]
    return session


async def run_round(url: str, pcm: bytes, n: int, stagger_s: float) -> tuple[list[Session], float]:
    """N sessions streaming at once (session i's audio starts i·stagger_s later); returns them and the
    round's wall time (first t0 to last session_ended)."""
    timeout = len(pcm) / BYTES_PER_S + n * stagger_s + SESSION_SLACK_S
    async with aiohttp.ClientSession() as http:
        t0 = time.monotonic() + 0.5  # room for N connects
        sessions = await asyncio.gather(
            *(run_session(http, url, pcm, t0 + i * stagger_s, timeout) for i in range(n)))
    last = max((s.ended_at for s in sessions if s.ended_at is not None), default=time.monotonic())
    return list(sessions), last - t0


async def warm_up(url: str) -> None:
    """One untimed session so model and connections are warm before the first measured one."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(120):
        client = await connect(http, url)
        await client.stream(pcm_of("one_sentence.wav"))
        await client.send_json({"type": "end"})
        await client.until("session_ended", timeout=60)
        finals = client.finals()
        if not finals or wer(ONE_SENTENCE, finals[0]["text"]) > 0.5:
            raise RuntimeError(f"warm-up session gave {finals!r}")


# --- statistics ------------------------------------------------------------------------------

def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass(slots=True)
class Level:
    n: int
    rounds: int
    sessions: int = 0
    failed: list[str] = field(default_factory=list)
    finals: int = 0
    finals_expected: int = 0
    latency: list[float] = field(default_factory=list)
    utterance_end: list[float] = field(default_factory=list)
    wers: list[float] = field(default_factory=list)
    partials: list[int] = field(default_factory=list)
    first_partial: list[float] = field(default_factory=list)
    worker_inference: list[float] = field(default_factory=list)
    throughput: list[float] = field(default_factory=list)
    send_lag: float = 0.0

    def add_round(self, sessions: list[Session], wall_s: float, audio_s: float) -> None:
        self.sessions += len(sessions)
        self.finals_expected += len(sessions) * len(THREE_UTTERANCES)
        ok_audio = 0.0
        for s in sessions:
            if s.error or s.ended_at is None:
                self.failed.append(s.error or "no session_ended")
            else:
                ok_audio += audio_s
            self.send_lag = max(self.send_lag, s.max_send_lag_s)
            for t, m in s.of("transcript", final=True):
                self.finals += 1
                self.latency.append(t - (s.t0 + m["end_s"]))
                ref = THREE_UTTERANCES[m["seq"] - 1] if m["seq"] <= len(THREE_UTTERANCES) else ""
                self.wers.append(wer(ref, m["text"]) if ref else 1.0)
            for t, m in s.of("utterance_end"):
                self.utterance_end.append(t - (s.t0 + m["end_s"]))
            partials = s.of("transcript", final=False)
            self.partials.append(len(partials))
            first: dict[str, float] = {}
            for t, m in partials:
                first.setdefault(m["utterance_id"], t - (s.t0 + m["start_s"]))
            self.first_partial += first.values()
        self.throughput.append(ok_audio / wall_s if wall_s > 0 else float("nan"))


# --- report ----------------------------------------------------------------------------------

def header(module: str, argv: list[str] | None) -> tuple[str, str, dict[str, str]]:
    """A run's command line, its UTC time and the machine, printed as a benchmark's first lines."""
    command = f".venv/bin/python -m {module} " + shlex.join(sys.argv[1:] if argv is None else argv)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info = machine()
    print(f"{when}\n{command}\n" + "\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    return command, when, info


def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
        commit += " (uncommitted changes)" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    load = os.getloadavg()
    return {
        "cpus": f"{os.cpu_count()} (usable: {len(os.sched_getaffinity(0))})",
        "cpu": cpu,
        "python": platform.python_version(),
        "os": platform.platform(),
        "commit": commit,
        "load": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min, at start)",
    }


def _ms(x: float) -> str:
    return "n/a" if x != x else f"{x * 1000:.0f}"


def render(when: str, command: str, info: dict[str, str], settings: Settings, opts: SegmenterOptions,
           baseline: Baseline, levels: list[Level], notes: list[str]) -> str:
    endpoint_wait_s = (opts.frames(opts.endpointing_ms) - opts.frames(opts.trailing_pad_ms)) * opts.frame_ms / 1000
    direct = baseline.all_times()
    direct_med = statistics.median(direct)
    out = [f"## Run {when}", "", f"Command: `{command}`", ""]
    out += [f"- {k}: {v}" for k, v in info.items()]
    out += [
        f"- settings: defaults (model {settings.model}, {settings.compute_type}, cpu_threads {settings.cpu_threads}, "
        f"beam {settings.beam_size}, asr_concurrency {settings.asr_concurrency}, endpointing_ms "
        f"{settings.endpointing_ms}, trailing pad {opts.trailing_pad_ms} ms, frame {opts.frame_ms} ms, "
        f"partial_interval_ms {settings.partial_interval_ms}); one edge, one VAD worker, one ASR worker",
        "",
        f"### Direct faster-whisper ({len(baseline.inference_s[0])} run(s) per utterance after one warm-up)",
        "",
        "| utterance | cut (s) | audio (s) | mean inference (s) | median (s) | RTF (median) | WER |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, (cut, times, text) in enumerate(zip(baseline.cuts, baseline.inference_s, baseline.texts, strict=True)):
        audio_s = len(cut.audio) / BYTES_PER_S
        ref = THREE_UTTERANCES[i] if i < len(THREE_UTTERANCES) else ""
        out.append(f"| {i + 1} \"{text}\" | {cut.start_s:.2f}–{cut.end_s:.2f} ({cut.reason}) | {audio_s:.2f} | "
                   f"{statistics.mean(times):.3f} | {statistics.median(times):.3f} | "
                   f"{statistics.median(times) / audio_s:.3f} | {wer(ref, text) if ref else 1.0:.2f} |")
    total_audio = sum(len(c.audio) for c in baseline.cuts) / BYTES_PER_S
    out += [
        "",
        f"All utterances: mean {statistics.mean(direct):.3f} s, median {direct_med:.3f} s per utterance; "
        f"RTF {sum(statistics.mean(t) for t in baseline.inference_s) / total_audio:.3f} "
        f"(sum of mean inference / {total_audio:.2f} s of audio).",
        "",
        "### Pipeline (each session streams the 13 s WAV at real time in 100 ms chunks)",
        "",
        "Latencies in ms. *final* = arrival − (t0 + end_s). *− endpointing* subtracts endpointing_ms; "
        f"*after endpoint* subtracts the {endpoint_wait_s * 1000:.0f} ms the endpointer really waits after end_s "
        "(end_s already includes the trailing pad). *utterance_end* = arrival of the VAD's utterance_end event "
        "(same origin). *worker inference* = the ASR worker's own timing of each final (from its log). "
        "*overhead* = p50 final − endpoint wait − direct median inference.",
        "",
        "| sessions | rounds | ok | finals | mean WER | final p50 | p95 | max | p50 − endpointing "
        "| p50 after endpoint | utterance_end p50 | worker inference p50 / max | overhead | overhead ÷ direct |",
        "| " + " | ".join(["---"] * 14) + " |",
    ]
    for lv in levels:
        p50 = pct(lv.latency, 50)
        overhead = p50 - endpoint_wait_s - direct_med
        out.append(
            f"| {lv.n} | {lv.rounds} | {lv.sessions - len(lv.failed)}/{lv.sessions} | {lv.finals}/{lv.finals_expected} "
            f"| {statistics.mean(lv.wers) if lv.wers else float('nan'):.3f} | {_ms(p50)} | {_ms(pct(lv.latency, 95))} "
            f"| {_ms(max(lv.latency, default=float('nan')))} | {_ms(p50 - settings.endpointing_ms / 1000)} "
            f"| {_ms(p50 - endpoint_wait_s)} | {_ms(pct(lv.utterance_end, 50))} "
            f"| {_ms(pct(lv.worker_inference, 50))} / {_ms(max(lv.worker_inference, default=float('nan')))} "
            f"| {_ms(overhead)} | {overhead / direct_med:.1f}× |"
        )
    out += [
        "",
        "*first partial* = arrival of an utterance's first partial − (t0 + the utterance's start_s); by design it "
        f"cannot come before start_s + {settings.partial_interval_ms} ms. *audio s per wall s* = audio of the "
        "completed sessions ÷ (t0 to the last session_ended). *send lag* = the client's worst lateness against "
        "its own schedule.",
        "",
        "| sessions | partials per session (mean, min–max) | first partial p50 | p95 | audio s per wall s "
        "| worst send lag |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for lv in levels:
        out.append(
            f"| {lv.n} | {statistics.mean(lv.partials) if lv.partials else 0:.1f} "
            f"({min(lv.partials, default=0)}–{max(lv.partials, default=0)}) | {_ms(pct(lv.first_partial, 50))} "
            f"| {_ms(pct(lv.first_partial, 95))} | {statistics.mean(lv.throughput):.2f} | {_ms(lv.send_lag)} |"
        )
    for lv in levels:
        for err in sorted(set(lv.failed)):
            notes.append(f"N={lv.n}: {lv.failed.count(err)} session(s) failed: {err}")
    if notes:
        out += ["", *[f"- {n}" for n in notes]]
    return "\n".join(out) + "\n"


def append_results(path: Path, section: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    head = "" if path.exists() else (
        "# Benchmark results\n\nAppended by the scripts in this folder, newest last; see README.md for what "
        "each number means. Numbers from a shared, noisy machine: compare runs of the same day and machine.\n\n"
    )
    with path.open("a") as f:
        f.write(head + ("\n" if not head else "") + section)


# --- main ------------------------------------------------------------------------------------

def _log_size(path: Path) -> int:
    return path.stat().st_size


def _worker_times(path: Path, offset: int) -> list[float]:
    """The ASR worker's inference seconds of the finals it logged after ``offset``."""
    with path.open("rb") as f:
        f.seek(offset)
        return [float(x) for x in _WORKER_FINAL.findall(f.read().decode(errors="replace"))]


async def run_levels(stack: Stack, log_path: Path, levels: list[int], rounds: int, pcm: bytes,
                     stagger_s: float) -> list[Level]:
    url = f"ws://127.0.0.1:{stack.port}/v1/stream"
    await warm_up(url)
    audio_s = len(pcm) / BYTES_PER_S
    results = []
    for n in levels:
        level = Level(n, rounds)
        for r in range(rounds):
            await asyncio.sleep(PAUSE_BETWEEN_ROUNDS_S)
            stack.check_children()
            offset = _log_size(log_path)
            sessions, wall_s = await run_round(url, pcm, n, stagger_s)
            await asyncio.sleep(0.5)  # the worker's log line follows its publish
            level.worker_inference += _worker_times(log_path, offset)
            level.add_round(sessions, wall_s, audio_s)
            print(f"  N={n} round {r + 1}/{rounds}: {wall_s:.1f} s wall, "
                  f"{sum(len(s.of('transcript', final=True)) for s in sessions)} finals, "
                  f"latency p50 so far {_ms(pct(level.latency, 50))} ms, "
                  f"failed {sum(1 for s in sessions if s.error or s.ended_at is None)}", flush=True)
        results.append(level)
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pipeline_latency", description=__doc__.split("\n")[0])
    p.add_argument("--sessions", default="1,4,8", help="comma-separated concurrency levels (default 1,4,8)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per level; samples are pooled (default 3)")
    p.add_argument("--baseline-repeats", type=int, default=5, help="direct runs per utterance (default 5)")
    p.add_argument("--stagger-ms", type=int, default=0,
                   help="start session i this much later than session i-1 (default 0: all at once, the worst "
                        "case: every session ends its utterances at the same moment)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/RESULTS.md"), help="results file to append to")
    args = p.parse_args(argv)
    try:
        args.levels = [int(x) for x in args.sessions.split(",") if x.strip()]
    except ValueError:
        p.error(f"--sessions must be comma-separated integers, not {args.sessions!r}")
    if not args.levels or min(args.levels) < 1 or args.rounds < 1 or args.baseline_repeats < 1:
        p.error("--sessions levels, --rounds and --baseline-repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command, when, info = header("benchmarks.pipeline_latency", argv)
    notes = [f"sessions start {args.stagger_ms} ms apart" if args.stagger_ms else
             "all sessions of a round start at the same instant, so their utterances end together (worst case)"]
    overridden = sorted(k for k in os.environ if k.startswith("ASR_"))
    if overridden:
        notes.append(f"ASR_* variables were set and reach the stack: {', '.join(overridden)}")

    settings = Settings()
    opts = segmenter_options(VadSettings.from_settings(settings))
    pcm = pcm_of(WAV)
    cuts = cut_like_the_pipeline(pcm, opts, settings.vad_aggressiveness)
    print(f"baseline: {len(cuts)} utterances at {[(c.start_s, c.end_s) for c in cuts]}", flush=True)
    baseline = run_baseline(cuts, settings, args.baseline_repeats)
    print(f"baseline: median {statistics.median(baseline.all_times()):.3f} s per utterance; {baseline.texts}",
          flush=True)

    with tempfile.TemporaryDirectory(prefix="asr-bench-") as tmp:
        log_path = Path(tmp) / "stack.log"
        with log_path.open("w") as log:
            stack = Stack("127.0.0.1", free_port(), Path(tmp), out=log)
            try:
                stack.start()
                stack.wait_ready(timeout=180)
                print(f"stack ready on port {stack.port}", flush=True)
                levels = asyncio.run(run_levels(stack, log_path, args.levels, args.rounds, pcm,
                                                 args.stagger_ms / 1000))
            except BaseException:
                log.flush()
                print(log_path.read_text()[-4000:], file=sys.stderr)
                raise
            finally:
                stack.stop()

    section = render(when, command, info, settings, opts, baseline, levels, notes)
    print("\n" + section)
    append_results(args.out, section)
    print(f"appended to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
