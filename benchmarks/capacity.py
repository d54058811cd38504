"""Capacity: how many real-time two-voice conversations a stack serves live, side by side with a peer.

    .venv/bin/python -m benchmarks.capacity [--streams 1,4,8,12,16] [--pools default,1x2,2x1]
        [--peer] [--overhead-streams 4,12] [--conversations 16] [--device cpu] [--json PATH]

1. Audio: ``--conversations`` deterministic espeak-ng conversations (benchmarks/conversations.py:
   two voices, 0.3-3 s pauses, 60-90 s each, cached). Level N plays them in rounds of N at once,
   each conversation once (`rounds_of`), at most ``--max-rounds`` rounds (default 2): with 16
   conversations every level from 8 streams up scores the same 16, so a level's WER against
   direct's says what load costs, not which conversations the level happened to play. Empty
   slots of the last round replay conversations from the first (load: their latency and CPU
   count, their text is not scored twice).
2. Direct faster-whisper, in this process before anything else runs: the ASR worker's own
   ``Transcriber`` and options (same model folder, device, compute type, cpu_threads) on (a) each
   whole conversation, the WER bound's reference (the mean over ``--direct-seeds`` seeds of its
   sampling, 5 by default: `benchmarks.seeds`), and (b) each utterance cut where the pipeline's
   Segmenter cuts it, with the prompt the worker would give it: the CPU reference of "Overhead".
3. For each ASR pool (``default`` = the stack exactly as ``asr dev`` starts it; ``PxC`` = P ASR
   processes with asr_concurrency C each, cpu_threads 1): a private cli.dev.Stack (own
   nats-server, free port, logs to a file), then each level N in ascending order: N WebSocket
   sessions stream their conversations at real time in 100 ms chunks (stream i of N starting i/N of
   a chunk after the first, as independent clients' chunks are spread), then ``end``, round after
   round (each round waits for the previous one's backlog to drain). Per final:
   latency = arrival - (t0 + end of the speech it closes), where that end is the reference turn
   end nearest the final's ``end_s`` (within 1.5 s, else ``end_s``). First partial = the first
   transcript message covering a turn that opens an utterance (after a pause of at least
   endpointing_ms) - (t0 + the turn's start). WER is corpus WER of the finals against the
   reference, next to the direct WER of the same conversations (scored ones only). CPU: /proc of
   every role process and nats-server before and after the level. A level passes when every
   session ended, final p95 < ``--p95`` s and WER <= direct + ``--wer-margin``; the run stops at
   the first level that fails
   (``--keep-going`` runs them all), then bisects towards the boundary ``--refine`` times, then
   runs round(0.8 x capacity) streams if no level had exactly that many (``--no-at-80`` skips it).
   Capacity = the largest N that passes with every lower level run passing too.
4. ``--peer``: WhisperLive (benchmarks/.peer-venv, see peer_setup.sh) with its faster_whisper
   backend, the same model folder, OMP_NUM_THREADS 1, its VAD on; the same levels and audio
   through its WebSocket protocol (int16 PCM at 16 kHz, END_OF_AUDIO after ``--peer-tail-s`` of
   silence, as a microphone left open would send). Its finals are its ``completed`` segments. It
   runs every level any pool of ours ran (not stopping at a failure), so the ratios compare equal loads.
5. Overhead (``--overhead-streams`` not 0): the default stack four more times, each running
   every level of ``--overhead-streams`` in turn (default 4,12: the bus's cost per message falls
   as load batches its wake-ups, so the ratio depends on the load): with partials, speculative
   finals and revisions off (``ASR_PARTIAL_INTERVAL_MS=0 ASR_SPECULATIVE_FINALS=false
   ASR_REVISE_FINALS=false``: every final decoded once, at its endpoint), with partials and
   revisions off (the default speculation on), with partials off, and as it is: pipeline
   CPU per audio second (all processes) against direct per-utterance CPU of the same
   conversations, timed before the stacks and again after them (the ratios use the mean).
   Speculation's, the revisions' and the partials' budgets are the differences; the ASR workers'
   counters say how many speculative decodes ran and how many finals took one.

Prints markdown tables and writes everything to ``--json``. Nothing here is a test: numbers depend
on the machine and what else runs on it, which the output records.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import re
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jiwer
import numpy as np

from asr_worker.asr_settings import AsrSettings
from asr_worker.prompt import next_prompt
from asr_worker.transcriber import Transcriber, resolve_model_path
from asr_worker.worker import transcriber_options
from benchmarks import bus_traffic, procstat
from benchmarks.conversations import Conversation, Turn, conversations
from benchmarks.pipeline_latency import Cut, cut_like_the_pipeline, machine, run_session, warm_up
from benchmarks.seeds import DEFAULT_SEEDS, seed_decoders, spread
from cli.dev import Stack, free_port
from common import sizing
from common.settings import Settings, load
from tests.helpers import normalise
from vad_worker.session import segmenter_options
from vad_worker.vad_settings import VadSettings

BYTES_PER_S = 32000
CHUNK_MS = 100
MATCH_S = 1.5  # a final's end_s within this of a reference turn end closes that turn
STREAM_SLACK_S = 120.0
PEER_VENV = Path(__file__).resolve().parent / ".peer-venv"
PEER_SERVER = Path(__file__).resolve().parent / "peer_server.py"
_WORKER_READY = re.compile(r"asr worker \S+ ready \(model (.+?) on (\w+), (\d+) slot")


# --- what a client saw ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Seg:
    start_s: float
    end_s: float
    text: str


@dataclass(slots=True)
class Stream:
    conv: Conversation
    t0: float = 0.0
    finals: list[tuple[float, Seg]] = field(default_factory=list)
    """(arrival, segment) of each final, in arrival order."""
    updates: list[tuple[float, list[Seg]]] = field(default_factory=list)
    """(arrival, segments) of every transcript message, partial or final."""
    partials: int = 0
    first_texts: list[str] = field(default_factory=list)
    """Each final's text as first sent (``finals`` holds it as revised, if a ``revision`` came)."""
    tail_text: str = ""
    """Text the peer showed but never completed (counted in its WER, not in its finals)."""
    ended: bool = False
    error: str = ""
    send_lag_s: float = 0.0
    revisions: int = 0
    scored: bool = True
    """False for a replay that only keeps a round's load at N (`rounds_of`): not in the WER."""

    def hypothesis(self) -> str:
        return " ".join([*(s.text for _, s in self.finals), self.tail_text]).strip()

    def first_pass(self) -> str:
        """The finals as first sent, before revisions."""
        return " ".join([*(self.first_texts or [s.text for _, s in self.finals]), self.tail_text]).strip()

    def final_latencies(self) -> list[float]:
        """Seconds from the end of the reference speech each final closes to its arrival."""
        return [arrival - (self.t0 + speech_end(self.conv.turns, seg.end_s)) for arrival, seg in self.finals]


def speech_end(turns: Sequence[Turn], end_s: float) -> float:
    """End of the reference speech a final ending at ``end_s`` closes."""
    best = min(turns, key=lambda t: abs(t.end_s - end_s))
    return best.end_s if abs(best.end_s - end_s) <= MATCH_S else end_s


def utterance_openers(turns: Sequence[Turn], endpointing_s: float) -> list[Turn]:
    """Turns after a pause the endpointer ends an utterance in: each opens a new utterance."""
    return [t for i, t in enumerate(turns) if i == 0 or t.start_s - turns[i - 1].end_s >= endpointing_s]


def first_partials(stream: Stream, endpointing_s: float) -> list[float]:
    out = []
    for turn in utterance_openers(stream.conv.turns, endpointing_s):
        for arrival, segs in stream.updates:
            if any(s.text.strip() and s.end_s > turn.start_s + 0.1 and s.start_s < turn.end_s for s in segs):
                out.append(arrival - (stream.t0 + turn.start_s))
                break
    return out


# --- our stack ------------------------------------------------------------------------------------

async def ours(http: aiohttp.ClientSession, url: str, conv: Conversation, t0: float) -> Stream:
    session = await run_session(http, url, conv.pcm, t0, conv.duration_s + STREAM_SLACK_S)
    stream = Stream(conv, t0=t0, ended=session.ended_at is not None, error=session.error,
                    send_lag_s=session.max_send_lag_s)
    for arrival, m in session.received:
        if m["type"] == "revision":  # the final with this seq (the seq-th final received) now reads
            at = m["seq"] - 1
            if 0 <= at < len(stream.finals):
                first, old = stream.finals[at]
                stream.finals[at] = (first, Seg(old.start_s, old.end_s, m["text"]))  # latency: first arrival
                stream.revisions += 1
            continue
        if m["type"] != "transcript":
            continue
        seg = Seg(float(m["start_s"]), float(m["end_s"]), m["text"])
        stream.updates.append((arrival, [seg]))
        if m["is_final"]:
            stream.finals.append((arrival, seg))
            stream.first_texts.append(m["text"])
        else:
            stream.partials += 1
    return stream


def extra_asr_env(stack: Stack, pool_env: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(stack.extra_env)
    env.update(ASR_NATS_URL=stack.nats.url, ASR_HOST=stack.host, ASR_ASR_HTTP_PORT=str(free_port()),
               PYTHONUNBUFFERED="1", OMP_WAIT_POLICY="PASSIVE", **pool_env)
    return env


def wait_http_ready(port: int, timeout: float = 180.0) -> None:
    import urllib.error
    import urllib.request
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"worker on port {port} not ready within {timeout:.0f} s")


@contextlib.contextmanager
def our_stack(pool: str, env: dict[str, str], log: Any, tmp: Path) -> Iterator[tuple[Stack, dict[str, int], str]]:
    """A running stack for ``pool``; yields it, the pids to measure and what the pool really is."""
    if pool == "default":  # what `asr dev` starts on this machine (common.sizing)
        sized = sizing.asr_pool(sizing.usable_cores(), device=env.get("ASR_DEVICE", "cpu"))
        procs, worker_env = sized.processes, sized.env()
    else:
        procs, conc = (int(x) for x in pool.split("x"))
        worker_env = {"ASR_ASR_CONCURRENCY": str(conc), "ASR_CPU_THREADS": "1"}
    # Every stream comes from this one address: the edge's per-address cap (50) would refuse them.
    stack_env = {"ASR_MAX_CONNECTIONS_PER_IP": "0", **env, **worker_env}
    stack = Stack("127.0.0.1", free_port(), tmp / f"stack-{pool}-{uuid.uuid4().hex[:6]}", out=log, env=stack_env,
                  nats_monitor=True)
    log.flush()
    offset = Path(log.name).stat().st_size
    try:
        stack.start()
        stack.wait_ready(timeout=240)
        existing = [n for n in stack.procs if n.startswith("asr_worker")]
        for i in range(len(existing), procs):
            e = extra_asr_env(stack, worker_env)
            stack.spawn(f"asr_worker-extra{i + 1}", "asr_worker", e)
            stack.http_ports[f"asr_worker-extra{i + 1}"] = int(e["ASR_ASR_HTTP_PORT"])
            wait_http_ready(int(e["ASR_ASR_HTTP_PORT"]))
        want = sum(1 for n in stack.procs if n.startswith("asr"))
        deadline = time.monotonic() + 30
        while True:  # the log line may trail the readiness the edge saw by a moment
            log.flush()
            with open(log.name, "rb") as f:
                f.seek(offset)
                ready = _WORKER_READY.findall(f.read().decode(errors="replace"))
            if len(ready) >= want or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        # What each ASR worker says it runs: "model M on DEVICE, N slot(s)".
        real = f"{len(ready)} ASR process(es): " + ", ".join(f"{d} x {n} slot(s)" for _, d, n in ready)
        pids = {name: p.pid for name, p in stack.procs.items()}
        assert stack.nats.proc is not None
        pids["nats-server"] = stack.nats.proc.pid
        yield stack, pids, real
    finally:
        stack.stop()


# --- the peer -------------------------------------------------------------------------------------

async def peer(http: aiohttp.ClientSession, url: str, conv: Conversation, start: asyncio.Future[float],
               model: str, ready: asyncio.Event, tail_s: float, use_vad: bool, phase_s: float = 0.0) -> Stream:
    """One WhisperLive client: options, SERVER_READY, then (from ``start``'s time plus its
    ``phase_s``) int16 PCM paced at real time, END_OF_AUDIO."""
    stream = Stream(conv)
    seen: set[tuple[str, str]] = set()
    last_open: list[Seg] = []
    step = BYTES_PER_S * CHUNK_MS // 1000
    pcm = conv.pcm + bytes(int(tail_s * BYTES_PER_S) // 2 * 2)
    try:
        async with asyncio.timeout(conv.duration_s + tail_s + STREAM_SLACK_S):
            ws = await http.ws_connect(url, max_msg_size=0)
            await ws.send_str(json.dumps({
                "uid": uuid.uuid4().hex, "language": "en", "task": "transcribe", "model": model,
                "use_vad": use_vad, "audio_format": "int16", "send_last_n_segments": 10,
            }))
            while True:
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise RuntimeError(f"closed before SERVER_READY ({msg.type.name})")
                data = json.loads(msg.data)
                if data.get("message") == "SERVER_READY":
                    break
                if data.get("status") in ("WAIT", "ERROR"):
                    raise RuntimeError(f"refused: {data}")
            ready.set()
            t0 = stream.t0 = await start + phase_s

            async def read() -> None:
                nonlocal last_open
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    data = json.loads(msg.data)
                    if "segments" not in data:
                        continue
                    now = time.monotonic()
                    segs, open_segs = [], []
                    for s in data["segments"]:
                        seg = Seg(float(s["start"]), float(s["end"]), s["text"].strip())
                        segs.append(seg)
                        key = (s["start"], s["text"])
                        if s.get("completed"):
                            if key not in seen:
                                seen.add(key)
                                stream.finals.append((now, seg))
                        else:
                            open_segs.append(seg)
                    if open_segs:
                        stream.partials += 1
                        last_open = open_segs
                    stream.updates.append((now, segs))

            reader = asyncio.create_task(read())
            try:
                for k, i in enumerate(range(0, len(pcm), step)):
                    due = t0 + (k + 1) * CHUNK_MS / 1000
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    stream.send_lag_s = max(stream.send_lag_s, time.monotonic() - due)
                    await ws.send_bytes(pcm[i : i + step])
                await ws.send_bytes(b"END_OF_AUDIO")
                await asyncio.wait_for(asyncio.shield(reader), 30)
                stream.ended = True
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                await ws.close()
    except (TimeoutError, aiohttp.ClientError, RuntimeError) as exc:
        stream.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        ready.set()  # ready or failed: the level's clock need not wait for this client
    last_final_end = max((s.end_s for _, s in stream.finals), default=-1.0)
    stream.tail_text = " ".join(s.text for s in last_open if s.start_s >= last_final_end - 0.01)
    return stream


@contextlib.contextmanager
def peer_server(model: str, max_clients: int, log: Any, single_model: bool) -> Iterator[tuple[int, int]]:
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"no peer venv at {PEER_VENV}: run bash benchmarks/peer_setup.sh first")
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    cmd = [str(python), str(PEER_SERVER), str(port), model, str(max_clients)]
    proc = subprocess.Popen(cmd + (["--single-model"] if single_model else []), env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"whisper-live exited with {proc.returncode} (see the log)")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("whisper-live did not listen within 120 s")
            time.sleep(0.25)
        yield port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- a level --------------------------------------------------------------------------------------

@dataclass(slots=True)
class LevelResult:
    system: str
    n: int
    sessions: int = 0
    """Sessions streamed over the level's rounds (``n`` at a time)."""
    ok_sessions: int = 0
    errors: list[str] = field(default_factory=list)
    finals: int = 0
    latency_s: list[float] = field(default_factory=list)
    first_partial_s: list[float] = field(default_factory=list)
    partials_per_stream: float = 0.0
    wer: float = float("nan")
    first_pass_wer: float = float("nan")
    """Before revisions (ours; equal to ``wer`` for a peer)."""
    revisions: int = 0
    direct_wer: float = float("nan")
    """Direct's mean over the seeds (`benchmarks.seeds`), which the bound compares with."""
    direct_wer_seeds: list[float] = field(default_factory=list)
    audio_s: float = 0.0
    wall_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    send_lag_s: float = 0.0
    passed: bool = False
    rounds: int = 1
    scored: int = 0
    """Conversations in the WER (each once; replays that kept a round's load are not)."""
    texts: list[dict[str, Any]] = field(default_factory=list)
    """Each stream's conversation, text as revised and as first sent (for reading its errors)."""

    def p(self, q: float) -> float:
        return float(np.percentile(self.latency_s, q)) if self.latency_s else float("nan")

    def fp(self, q: float) -> float:
        return float(np.percentile(self.first_partial_s, q)) if self.first_partial_s else float("nan")

    @property
    def cpu_per_audio_s(self) -> float:
        return sum(self.cpu_s.values()) / self.audio_s if self.audio_s else float("nan")


def corpus_wer(refs: list[str], hyps: list[str]) -> float:
    refs_n = [normalise(r) for r in refs]
    hyps_n = [normalise(h) for h in hyps]
    return float(jiwer.wer(refs_n, hyps_n)) if any(refs_n) else float("nan")


def summarise(system: str, streams: list[Stream], wall_s: float, cpu: dict[str, float],
              direct: Sequence[dict[str, str]], endpointing_s: float, p95_bound: float, margin: float,
              n: int | None = None) -> LevelResult:
    """One level: ``n`` streams at once (default: all of ``streams``, one round)."""
    lv = LevelResult(system, n or len(streams), sessions=len(streams), wall_s=wall_s, cpu_s=cpu)
    for s in streams:
        if s.error or not s.ended:
            lv.errors.append(s.error or "did not end")
        else:
            lv.ok_sessions += 1
        lv.finals += len(s.finals)
        lv.latency_s += s.final_latencies()
        lv.first_partial_s += first_partials(s, endpointing_s)
        lv.audio_s += s.conv.duration_s
        lv.send_lag_s = max(lv.send_lag_s, s.send_lag_s)
    lv.partials_per_stream = statistics.mean(s.partials for s in streams) if streams else 0.0
    scored = [s for s in streams if s.scored]
    lv.scored = len(scored)
    lv.wer = corpus_wer([s.conv.text for s in scored], [s.hypothesis() for s in scored])
    lv.first_pass_wer = corpus_wer([s.conv.text for s in scored], [s.first_pass() for s in scored])
    lv.revisions = sum(s.revisions for s in streams)
    lv.texts = [{"conversation": s.conv.name, "scored": s.scored, "text": s.hypothesis(),
                 "first_pass": s.first_pass()} for s in streams]
    by_seed = spread([corpus_wer([s.conv.text for s in scored], [texts[s.conv.name] for s in scored])
                      for texts in direct])
    lv.direct_wer, lv.direct_wer_seeds = by_seed.mean, list(by_seed.values)
    lv.passed = (not lv.errors and lv.p(95) < p95_bound and lv.wer <= lv.direct_wer + margin)
    return lv


async def quiesce(pids: dict[str, int], idle_cores: float = 0.15, timeout: float = 90.0) -> None:
    """Waits until the processes together use less than ``idle_cores`` over a second (the previous
    level's backlog is done), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = procstat.snapshot(pids)
        await asyncio.sleep(1.0)
        if sum(procstat.delta(before, procstat.snapshot(pids)).values()) < idle_cores:
            return
    print(f"    (still busy after {timeout:.0f} s: the level starts anyway)", flush=True)


@dataclass(frozen=True, slots=True)
class Round:
    convs: list[Conversation]
    """One per stream, all streamed at once."""
    scored: int
    """The first ``scored`` are played for the first time in their level; the rest are replays."""


def rounds_of(n: int, convs: Sequence[Conversation], max_rounds: int) -> list[Round]:
    """Level ``n``'s rounds: conversations ``r*n .. r*n+n-1`` in round r, each once, so that with
    ``max_rounds * n >= len(convs)`` the level plays every conversation; the last round's empty
    slots replay conversations from the first, so that every round holds ``n`` streams."""
    if n < 1 or max_rounds < 1 or not convs:
        raise ValueError(f"need n >= 1, max_rounds >= 1 and conversations (n={n}, max_rounds={max_rounds})")
    k = len(convs)
    out = []
    for r in range(min(max_rounds, -(-k // n))):
        fresh = list(convs[r * n : (r + 1) * n])
        out.append(Round([*fresh, *(convs[i % k] for i in range(n - len(fresh)))], len(fresh)))
    return out


def phase(i: int, n: int) -> float:
    """When stream ``i`` of ``n`` starts within the first chunk: spread evenly, as independent
    clients' chunks are. (Until 2026-12-07 every stream started at the same instant, so the chunks
    of all streams reached the edge together and the bus carried them in bursts: figure 4's fixed
    part was measured at less than half of what spread chunks cost, docs/benchmarks.md.)"""
    return i / n * CHUNK_MS / 1000


async def run_level(
    picked: Sequence[Conversation], url: str, peer_model: str | None, peer_tail_s: float, peer_vad: bool,
    pids: dict[str, int],
) -> tuple[list[Stream], float, dict[str, float]]:
    n = len(picked)
    await quiesce(pids)
    async with aiohttp.ClientSession() as http:
        if peer_model is None:
            before = procstat.snapshot(pids)
            t0 = time.monotonic() + 0.5 + 0.02 * n  # room for N connects
            streams = await asyncio.gather(*(ours(http, url, c, t0 + phase(i, n)) for i, c in enumerate(picked)))
        else:
            # The peer loads a model per client before it answers SERVER_READY: the clock starts
            # once every client is ready (or has failed).
            readies = [asyncio.Event() for _ in picked]
            start: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            tasks = [asyncio.create_task(peer(http, url, c, start, peer_model, readies[i], peer_tail_s, peer_vad,
                                              phase(i, n)))
                     for i, c in enumerate(picked)]
            # Each client sets its event when it is ready or has failed; a client still loading after
            # 300 s starts late and shows up as send lag.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(e.wait() for e in readies)), 300)
            before = procstat.snapshot(pids)
            t0 = time.monotonic() + 0.5
            start.set_result(t0)
            streams = await asyncio.gather(*tasks)
        end = time.monotonic()
    after = procstat.snapshot(pids)
    return list(streams), end - t0, procstat.delta(before, after)


# --- direct faster-whisper ------------------------------------------------------------------------

@dataclass(slots=True)
class Direct:
    whole_text: dict[str, str] = field(default_factory=dict)
    whole_cpu_s: dict[str, float] = field(default_factory=dict)
    cut_text: dict[str, str] = field(default_factory=dict)
    cut_cpu_s: dict[str, float] = field(default_factory=dict)
    cuts: dict[str, int] = field(default_factory=dict)
    cut_audio_s: dict[str, float] = field(default_factory=dict)
    whole_by_seed: list[dict[str, str]] = field(default_factory=list)
    """The whole conversations' texts under each seed (the first is ``whole_text``)."""


def warm_transcriber(convs: Sequence[Conversation], settings: Settings) -> Transcriber:
    """The worker's model, options and prompt, after one decode that is not counted."""
    transcriber = Transcriber(transcriber_options(AsrSettings.from_settings(settings)))
    transcriber.transcribe(convs[0].pcm[: 3 * BYTES_PER_S], is_final=True)
    return transcriber


def run_direct(convs: list[Conversation], settings: Settings, seeds: int) -> Direct:
    """Seed 0: the whole conversations and their cuts, timed; seeds 1..``seeds``-1: the whole
    conversations again, for the WER bound's mean (`benchmarks.seeds`)."""
    seed_decoders(0)
    transcriber = warm_transcriber(convs, settings)
    opts = segmenter_options(VadSettings.from_settings(settings))
    out = Direct()
    for conv in convs:
        c0 = time.process_time()
        out.whole_text[conv.name] = transcriber.transcribe(conv.pcm, is_final=True).text
        out.whole_cpu_s[conv.name] = time.process_time() - c0
        cuts = cut_like_the_pipeline(conv.pcm, opts, settings.vad_aggressiveness)
        texts, out.cut_cpu_s[conv.name] = decode_cuts(transcriber, cuts, settings)
        out.cut_text[conv.name] = " ".join(texts)
        out.cuts[conv.name] = len(cuts)
        out.cut_audio_s[conv.name] = sum(len(c.audio) for c in cuts) / BYTES_PER_S
        print(f"  direct {conv.name}: whole {out.whole_cpu_s[conv.name]:.1f} CPU-s, {len(cuts)} cuts "
              f"{out.cut_cpu_s[conv.name]:.1f} CPU-s", flush=True)
    out.whole_by_seed.append(dict(out.whole_text))
    del transcriber
    for seed in range(1, seeds):
        seed_decoders(seed)
        again = Transcriber(transcriber_options(AsrSettings.from_settings(settings)))
        out.whole_by_seed.append({c.name: again.transcribe(c.pcm, is_final=True).text for c in convs})
        wer = corpus_wer([c.text for c in convs], [out.whole_by_seed[-1][c.name] for c in convs])
        print(f"  direct seed {seed}: WER {wer:.3f}", flush=True)
        del again
    return out


def decode_cuts(transcriber: Transcriber, cuts: Sequence[Cut], settings: Settings) -> tuple[list[str], float]:
    """Each cut decoded in turn as the ASR worker decodes a final (the prompt of the texts before
    it): the texts and the CPU seconds they took."""
    texts, context = [], ""
    c0 = time.process_time()
    for cut in cuts:
        text = transcriber.transcribe(cut.audio, is_final=True, prompt=context).text
        texts.append(text)
        context = next_prompt(context, text, settings.context_chars)
    return texts, time.process_time() - c0


def direct_cut_cpu_again(convs: Sequence[Conversation], settings: Settings) -> dict[str, float]:
    """Direct decoding of the conversations' cuts timed again (CPU-s per conversation): figure 4's
    stacks run for minutes after the first timing, and this machine's speed drifts meanwhile."""
    transcriber = warm_transcriber(convs, settings)
    opts = segmenter_options(VadSettings.from_settings(settings))
    return {conv.name: decode_cuts(transcriber, cut_like_the_pipeline(conv.pcm, opts, settings.vad_aggressiveness),
                                   settings)[1] for conv in convs}


# --- report ---------------------------------------------------------------------------------------

def _ms(x: float) -> str:
    return "n/a" if x != x else f"{x * 1000:.0f}"


def level_row(lv: LevelResult) -> str:
    roles = ", ".join(f"{k} {v / lv.wall_s * 100:.0f} %" for k, v in sorted(lv.cpu_s.items()) if lv.wall_s)
    return (f"| {lv.system} | {lv.n} | {lv.rounds} | {lv.scored} | {lv.ok_sessions}/{lv.sessions} | {lv.finals} "
            f"| {lv.revisions} | {lv.wer:.3f} "
            f"| {lv.first_pass_wer:.3f} | {spread(lv.direct_wer_seeds) if lv.direct_wer_seeds else 'nan'} "
            f"| {_ms(lv.p(50))} | {_ms(lv.p(95))} | {_ms(max(lv.latency_s, default=float('nan')))} "
            f"| {_ms(lv.fp(50))} / {_ms(lv.fp(95))} | {lv.partials_per_stream:.1f} | {lv.cpu_per_audio_s:.3f} "
            f"| {roles} | {_ms(lv.send_lag_s)} | {'yes' if lv.passed else 'no'} |")


LEVEL_HEADER = ("| system | streams | rounds | conversations scored | ended | finals | revised | WER | first pass "
                "| direct WER, mean (range) of seeds | final p50 (ms) "
                "| p95 | max | first partial p50 / p95 (ms) | partials per stream | CPU-s per audio-s "
                "| CPU by process (% of one core) | worst send lag (ms) | within bounds |\n"
                + "| " + " | ".join(["---"] * 19) + " |")


def capacity(levels: list[LevelResult]) -> int:
    best = 0
    for lv in sorted(levels, key=lambda x: x.n):
        if not lv.passed:
            break
        best = lv.n
    return best


# --- main -----------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.capacity", description=__doc__.split("\n")[0])
    p.add_argument("--streams", default="1,4,8,12,16", help="concurrency levels, run in ascending order")
    p.add_argument("--pools", default="default",
                   help="comma-separated ASR pools: default (as asr dev starts it) or PxC (P processes with "
                        "asr_concurrency C, cpu_threads 1), e.g. default,1x2,2x1; 'none' runs no stack of ours")
    p.add_argument("--peer", action="store_true", help="also run WhisperLive at the same levels")
    p.add_argument("--peer-single-model", action="store_true",
                   help="WhisperLive shares one model between clients (its default: one model per client)")
    p.add_argument("--peer-no-vad", action="store_true", help="WhisperLive without its VAD (default: VAD on)")
    p.add_argument("--peer-tail-s", type=float, default=3.0, help="silence the peer gets before END_OF_AUDIO")
    p.add_argument("--conversations", type=int, default=16,
                   help="distinct conversations (default 16: up to 16 streams, each plays its own)")
    p.add_argument("--max-rounds", type=int, default=2,
                   help="rounds of N streams a level may play to score every conversation once (default 2)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-seconds", type=float, default=0.0,
                   help="cut every conversation after this much audio (smoke runs); 0 keeps them whole")
    p.add_argument("--overhead-streams", default="4,12",
                   help="comma-separated stream counts of the CPU-overhead runs (default 4,12: a light load "
                        "and the default stack's capacity on 2 cores); 0 skips them")
    p.add_argument("--overhead-repeats", type=int, default=1,
                   help="runs of figure 4's headline stack (every final decoded once), each against the direct "
                        "timings just before and after it (default 1); on a shared VM one run's ratio moves by "
                        "a tenth from one run to the next")
    p.add_argument("--p95", type=float, default=1.5, help="final latency p95 bound, seconds (default 1.5)")
    p.add_argument("--wer-margin", type=float, default=0.01,
                   help="WER may exceed direct (its mean over the seeds) by this (default 0.01)")
    p.add_argument("--direct-seeds", type=int, default=DEFAULT_SEEDS,
                   help="seeds of direct faster-whisper's sampling on the whole conversations "
                        f"(default {DEFAULT_SEEDS})")
    p.add_argument("--keep-going", action="store_true", help="run every level even after one fails")
    p.add_argument("--at-80", action=argparse.BooleanOptionalAction, default=True,
                   help="run round(0.8 x capacity) streams too when no level was exactly that (default on)")
    p.add_argument("--refine", type=int, default=2,
                   help="after the first failing level, bisect towards the capacity this many times (default 2)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="ASR device (stack and direct)")
    p.add_argument("--compute-type", default="",
                   help="CTranslate2 compute type (default: int8 on cpu, int8_float16 on cuda)")
    p.add_argument("--json", type=Path, default=None, help="write all results here (default: a temp file)")
    p.add_argument("--label", default="", help="a word on the run printed with it, e.g. 'smoke'")
    args = p.parse_args(argv)
    try:
        args.levels = sorted({int(x) for x in args.streams.split(",") if x.strip()})
    except ValueError:
        p.error(f"--streams must be comma-separated integers, not {args.streams!r}")
    args.pool_list = [x.strip() for x in args.pools.split(",") if x.strip() and x.strip() != "none"]
    for pool in args.pool_list:
        if pool != "default" and not (len(pool.split("x")) == 2 and all(x.isdigit() and int(x) > 0
                                                                            for x in pool.split("x"))):
            p.error(f"--pools: {pool!r} is neither 'default' nor PxC such as 2x1")
    if not args.levels or min(args.levels) < 1:
        p.error("--streams levels must be at least 1")
    try:
        args.overhead_levels = sorted({int(x) for x in args.overhead_streams.split(",") if x.strip()} - {0})
    except ValueError:
        p.error(f"--overhead-streams must be comma-separated integers, not {args.overhead_streams!r}")
    if any(n < 0 for n in args.overhead_levels):
        p.error("--overhead-streams levels must be positive (0 skips the overhead runs)")
    if args.overhead_repeats < 1:
        p.error("--overhead-repeats must be at least 1")
    args.compute_type = args.compute_type or ("int8_float16" if args.device == "cuda" else "int8")
    return args


def truncate(conv: Conversation, seconds: float) -> Conversation:
    if seconds <= 0 or conv.duration_s <= seconds:
        return conv
    turns = tuple(t for t in conv.turns if t.end_s <= seconds - 0.5)
    cut = min([seconds, *(t.start_s - 0.05 for t in conv.turns if turns[-1].end_s < t.start_s < seconds)])
    return Conversation(conv.name + f"-{seconds:g}s", conv.pcm[: int(cut * BYTES_PER_S) // 2 * 2], turns)


def cuda_devices() -> int:
    import ctranslate2
    try:
        return int(ctranslate2.get_cuda_device_count())
    except RuntimeError:
        return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = ".venv/bin/python -m benchmarks.capacity " + shlex.join(sys.argv[1:] if argv is None else argv)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info = machine()
    gpus = cuda_devices()
    info["cuda devices"] = str(gpus)
    info["device"] = f"{args.device} ({args.compute_type})"
    if args.device == "cuda" and gpus == 0:
        raise SystemExit("--device cuda: CTranslate2 sees no CUDA device here; run on a machine with a GPU")
    os.environ.update(ASR_DEVICE=args.device, ASR_COMPUTE_TYPE=args.compute_type)
    settings = load()  # settings.toml + ASR_* environment, as the stack's processes read them
    endpointing_s = settings.endpointing_ms / 1000
    print(f"{when} {args.label}\n{command}\n" + "\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)

    convs = [truncate(c, args.max_seconds) for c in conversations(args.conversations, args.seed)]
    total_words = sum(len(c.text.split()) for c in convs)
    print(f"{len(convs)} conversations, {sum(c.duration_s for c in convs):.0f} s, {total_words} words", flush=True)
    print("direct faster-whisper:", flush=True)
    direct = run_direct(convs, settings, max(1, args.direct_seeds))
    refs = [c.text for c in convs]
    whole = spread([corpus_wer(refs, [texts[c.name] for c in convs]) for texts in direct.whole_by_seed])
    direct_summary = {
        "whole_wer": whole.mean,
        "whole_wer_seeds": list(whole.values),
        "cut_wer": corpus_wer(refs, [direct.cut_text[c.name] for c in convs]),
        "whole_cpu_per_audio_s": sum(direct.whole_cpu_s.values()) / sum(c.duration_s for c in convs),
        "cut_cpu_per_audio_s": sum(direct.cut_cpu_s.values()) / sum(c.duration_s for c in convs),
        "cuts": sum(direct.cuts.values()),
    }
    print(json.dumps(direct_summary), flush=True)

    results: dict[str, list[LevelResult]] = {}
    pools_real: dict[str, str] = {}
    overhead: dict[str, dict[str, Any]] = {}
    model_path = resolve_model_path(settings.model)
    extra_env = {"ASR_DEVICE": args.device, "ASR_COMPUTE_TYPE": args.compute_type}
    with tempfile.TemporaryDirectory(prefix="asr-capacity-") as tmp_name:
        tmp = Path(tmp_name)
        log_path = tmp / "stacks.log"
        with log_path.open("w") as log:
            try:
                for pool in args.pool_list:
                    with our_stack(pool, extra_env, log, tmp) as (stack, pids, real):
                        pools_real[pool] = real
                        url = f"ws://127.0.0.1:{stack.port}/v1/stream"
                        asyncio.run(warm_up(url))
                        print(f"pool {pool}: {real}", flush=True)
                        results[f"ours {pool}"] = levels_of(f"ours {pool}", args, convs, url, None, pids, direct,
                                                            endpointing_s, stack, args.levels, args.keep_going)
                if args.peer:
                    max_clients = max(args.levels) + 1
                    with peer_server(model_path, max_clients, log, args.peer_single_model) as (port, pid):
                        print(f"whisper-live on {port}", flush=True)
                        # Every level ours ran, so latency and CPU compare at equal load.
                        ran = sorted({lv.n for levels in results.values() for lv in levels}) or args.levels
                        results["whisper-live"] = levels_of("whisper-live", args, convs, f"ws://127.0.0.1:{port}",
                                                            model_path, {"whisper-live": pid}, direct,
                                                            endpointing_s, None, ran, True)
                if args.overhead_levels:
                    overhead = run_overhead(args, convs, direct, settings, extra_env, log, tmp, endpointing_s)
            except BaseException:
                log.flush()
                print(log_path.read_text()[-6000:], file=sys.stderr)
                raise

    print(f"\n### Capacity run {when} {args.label}\n")
    print(f"Command: `{command}`\n")
    print("\n".join(f"- {k}: {v}" for k, v in info.items()))
    print(f"- pools: {pools_real}")
    print(f"- direct faster-whisper on the same audio: WER {whole} whole conversations (mean of "
          f"{len(whole.values)} seeds, their range), "
          f"{direct_summary['cut_wer']:.3f} cut like the pipeline ({direct_summary['cuts']} cuts); CPU-s per "
          f"audio-s {direct_summary['whole_cpu_per_audio_s']:.3f} whole, "
          f"{direct_summary['cut_cpu_per_audio_s']:.3f} cut\n")
    print(LEVEL_HEADER)
    for levels in results.values():
        for lv in levels:
            print(level_row(lv))
    print()
    caps = {system: capacity(levels) for system, levels in results.items()}
    for system, cap in caps.items():
        print(f"- capacity of {system}: {cap} streams (p95 < {args.p95} s, WER <= direct + {args.wer_margin}, "
              "every session ended)")
    peer_levels = results.get("whisper-live", [])
    peer_cap = caps.get("whisper-live")
    for system, cap in caps.items():
        if system == "whisper-live":
            continue
        if peer_levels:
            print(f"- {system} vs whisper-live: " + (f"{cap / peer_cap:.1f}x the streams" if peer_cap else
                  f"{cap} streams against none: whisper-live is within the bounds at no level it ran"))
        one = next((lv for lv in results[system] if lv.n == 1), None)
        if one is not None:
            bound = settings.endpointing_ms + 300
            print(f"- {system} at 1 stream: final p50 {_ms(one.p(50))} ms (goal <= endpointing_ms + 300 = {bound} ms: "
                  f"{'met' if one.p(50) * 1000 <= bound else 'missed'}), first partial p50 {_ms(one.fp(50))} ms")
        near = [lv for lv in results[system] if lv.n <= round(0.8 * cap)]
        if cap and near:
            lv = max(near, key=lambda x: x.n)
            print(f"- {system} at {lv.n} streams (<= 80 % of capacity {cap}): final p50 {_ms(lv.p(50))} / p95 "
                  f"{_ms(lv.p(95))} ms, first partial p50 {_ms(lv.fp(50))} ms")
    for system, levels in results.items():
        if system != "whisper-live" and peer_levels:
            print(f"\nRatios, whisper-live against {system} at the same streams:\n")
            print("\n".join(ratios(levels, peer_levels)))
    for n_streams, o in overhead.items():
        timings = ", ".join(f"{t:.4f}" for t in o["direct_cut_cpu_per_audio_s_timings"])
        print(f"- overhead at {n_streams} streams, CPU-s per audio-s against direct per-utterance "
              f"{o['direct_cut_cpu_per_audio_s']:.3f} (timed before the stacks and after each: {timings}; "
              f"each ratio against the mean of the timings around its stack): "
              f"every final decoded once (partials, speculation and revisions off) "
              f"{o['no_speculation_cpu_per_audio_s']:.3f} = {o['ratio_no_speculation_vs_direct_cut']:.2f}x"
              + (f" (all {len(o['headline_ratios'])} runs of that stack: "
                 f"{', '.join(f'{x:.2f}x' for x in o['headline_ratios'])})" if len(o["headline_ratios"]) > 1 else "")
              + "; "
              f"partials and revisions off (the default speculation on) {o['finals_only_cpu_per_audio_s']:.3f} = "
              f"{o['ratio_vs_direct_cut']:.2f}x; speculation adds {o['speculation_cpu_per_audio_s']:.3f}, revisions "
              f"add {o['revisions_cpu_per_audio_s']:.3f} (partials off: {o['with_revisions_cpu_per_audio_s']:.3f} = "
              f"{o['ratio_with_revisions_vs_direct_cut']:.2f}x), partials "
              f"add {o['partials_cpu_per_audio_s']:.3f} ({o['with_partials_cpu_per_audio_s']:.3f} in all); by "
              f"process, every final once: {o['no_speculation_by_process']}; partials off: "
              f"{o['finals_only_by_process']}")
    out = args.json or Path(tempfile.mkstemp(prefix="capacity-", suffix=".json")[1])
    out.write_text(json.dumps({
        "when": when, "command": command, "label": args.label, "machine": info, "pools": pools_real,
        "settings": {"endpointing_ms": settings.endpointing_ms, "partial_interval_ms": settings.partial_interval_ms,
                     "model": model_path, "device": args.device, "compute_type": args.compute_type},
        "conversations": [{"name": c.name, "seconds": c.duration_s, "turns": len(c.turns)} for c in convs],
        "direct": direct_summary, "direct_detail": asdict(direct),
        "levels": {k: [asdict(lv) | {"p50": lv.p(50), "p95": lv.p(95), "cpu_per_audio_s": lv.cpu_per_audio_s}
                       for lv in v] for k, v in results.items()},
        "capacity": caps, "overhead": overhead,
    }, indent=1, default=str))
    print(f"\nJSON: {out}")
    return 0


def levels_of(system: str, args: argparse.Namespace, convs: list[Conversation], url: str, peer_model: str | None,
              pids: dict[str, int], direct: Direct, endpointing_s: float, stack: Stack | None,
              levels: list[int], keep_going: bool) -> list[LevelResult]:
    """Runs ``levels`` in order until one fails (unless ``keep_going``); with ``args.refine``, then
    bisects between the last passing and the first failing level (at most ``args.refine`` more)."""
    out: list[LevelResult] = []

    def run(n: int) -> LevelResult:
        streams: list[Stream] = []
        wall, cpu = 0.0, dict[str, float]()
        rounds = rounds_of(n, convs, args.max_rounds)
        for rnd in rounds:
            if stack is not None:
                stack.check_children()
            got, w, c = asyncio.run(run_level(rnd.convs, url, peer_model, args.peer_tail_s,
                                              not args.peer_no_vad, pids))
            for s in got[rnd.scored:]:
                s.scored = False
            streams += got
            wall += w
            cpu = {k: cpu.get(k, 0.0) + c.get(k, 0.0) for k in {*cpu, *c}}
        lv = summarise(system, streams, wall, cpu, direct.whole_by_seed, endpointing_s, args.p95, args.wer_margin, n)
        lv.rounds = len(rounds)
        out.append(lv)
        print(level_row(lv), flush=True)
        for err in sorted(set(lv.errors)):
            print(f"    {lv.errors.count(err)} x {err}", flush=True)
        return lv

    for n in levels:
        if not run(n).passed and not keep_going:
            break
    for _ in range(args.refine):
        good = capacity(out)
        bad = min((lv.n for lv in out if not lv.passed and lv.n > good), default=0)
        if not bad or bad - good < 2:
            break
        run((good + bad) // 2)
    at80 = round(0.8 * capacity(out))
    if args.at_80 and peer_model is None and at80 >= 1 and at80 not in {lv.n for lv in out}:
        run(at80)  # the latency figure at 80 % of capacity
    out.sort(key=lambda lv: lv.n)
    return out


def ratios(ours: list[LevelResult], peer: list[LevelResult]) -> list[str]:
    """Per level both ran: the peer's latency and CPU as multiples of ours, and the WER of each."""
    rows = ["| streams | final p50: peer / ours | final p95: peer / ours | first partial p50: peer / ours "
            "| CPU-s per audio-s: peer / ours | WER ours / peer |", "| --- | --- | --- | --- | --- | --- |"]
    by_n = {lv.n: lv for lv in peer}
    for lv in ours:
        pv = by_n.get(lv.n)
        if pv is None:
            continue
        rows.append(f"| {lv.n} | {pv.p(50) / lv.p(50):.1f}x | {pv.p(95) / lv.p(95):.1f}x "
                    f"| {pv.fp(50) / lv.fp(50):.1f}x | {pv.cpu_per_audio_s / lv.cpu_per_audio_s:.2f}x "
                    f"| {lv.wer:.3f} / {pv.wer:.3f} |")
    return rows


OVERHEAD_RUNS: tuple[tuple[str, dict[str, str]], ...] = (
    ("no_speculation", {"ASR_PARTIAL_INTERVAL_MS": "0", "ASR_SPECULATIVE_FINALS": "false",
                        "ASR_REVISE_FINALS": "false"}),
    ("finals_only", {"ASR_PARTIAL_INTERVAL_MS": "0", "ASR_REVISE_FINALS": "false"}),
    ("with_revisions", {"ASR_PARTIAL_INTERVAL_MS": "0"}),
    ("with_partials", {}),
)
"""The overhead runs: label -> environment over the default stack's."""
HEADLINE = OVERHEAD_RUNS[0][0]
"""Figure 4's ratio: every final decoded once."""


def overhead_runs(repeats: int) -> list[tuple[str, dict[str, str]]]:
    """The stacks in the order they run: the headline stack ``repeats`` times (the later runs
    labelled ``<label>#2``, ``#3``...), then the others once."""
    (label, env), rest = OVERHEAD_RUNS[0], OVERHEAD_RUNS[1:]
    return [(label, env), *((f"{label}#{k}", env) for k in range(2, repeats + 1)), *rest]


def asr_counters(stack: Stack) -> dict[str, float]:
    """The ASR workers' job and speculation counters, summed over the workers."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for name, port in stack.http_ports.items():
        if not name.startswith("asr_worker"):
            continue
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "asr_jobs_total":
                    key = f"jobs_{sample.labels['kind']}_{sample.labels['outcome']}"
                elif sample.name == "asr_speculative_finals_total":
                    key = f"finals_speculation_{sample.labels['outcome']}"
                else:
                    continue
                out[key] = out.get(key, 0.0) + sample.value
    return out


def bracketed(timings: Sequence[float]) -> list[float]:
    """Each stack's baseline: the mean of the direct timings just before and just after it. The
    stacks of figure 4 run one after the other for minutes each, and a VM's speed drifts by up to a
    tenth meanwhile; ``timings`` holds one more entry than there are stacks (before the first,
    then after each)."""
    if len(timings) < 2:
        raise ValueError("need a timing before and after at least one stack")
    return [(a + b) / 2 for a, b in itertools.pairwise(timings)]


def run_overhead(args: argparse.Namespace, convs: list[Conversation], direct: Direct, settings: Settings,
                 env: dict[str, str], log: Any, tmp: Path, endpointing_s: float) -> dict[str, dict[str, Any]]:
    """Each overhead stack once (the headline stack ``args.overhead_repeats`` times), running
    every level of ``args.overhead_levels`` in turn; the results by stream count."""
    levels: list[int] = args.overhead_levels
    picked = {n: [convs[i % len(convs)] for i in range(n)] for n in levels}  # what run_level streams
    res: dict[int, dict[str, Any]] = {n: {"streams": n, "audio_s": sum(c.duration_s for c in picked[n])}
                                      for n in levels}
    distinct = list({c.name: c for c in convs[:max(levels)]}.values())
    timed = [direct.cut_cpu_s]  # direct on the cuts: before the stacks, then after each (`bracketed`)
    runs = overhead_runs(args.overhead_repeats)
    for label, extra in runs:
        with our_stack("default", {**env, **extra}, log, tmp) as (stack, pids, _):
            url = f"ws://127.0.0.1:{stack.port}/v1/stream"
            asyncio.run(warm_up(url))
            asyncio.run(quiesce(pids))  # a revision process may still be loading its model
            idle0 = procstat.snapshot(pids)
            time.sleep(5.0)
            idle = sum(procstat.delta(idle0, procstat.snapshot(pids)).values()) / 5.0
            for n in levels:
                r, audio_s = res[n], res[n]["audio_s"]
                counts0, bus0 = asr_counters(stack), bus_traffic.snapshot(stack.nats.monitor_url)
                streams, wall, cpu = asyncio.run(run_level(picked[n], url, None, 0.0, True, pids))
                counts = {k: v - counts0.get(k, 0.0) for k, v in asr_counters(stack).items()}
                bus = bus_traffic.delta(bus0, bus_traffic.snapshot(stack.nats.monitor_url))
                lv = summarise(label, streams, wall, cpu, direct.whole_by_seed, endpointing_s, args.p95,
                               args.wer_margin)
                r[f"{label}_cpu_per_audio_s"] = sum(cpu.values()) / audio_s
                r[f"{label}_by_process"] = {k: round(v / audio_s, 4) for k, v in sorted(cpu.items())}
                r[f"{label}_idle_cores"] = idle
                r[f"{label}_wer"] = lv.wer
                r[f"{label}_first_pass_wer"] = lv.first_pass_wer
                r[f"{label}_revisions"] = lv.revisions
                r[f"{label}_finals"] = lv.finals
                r[f"{label}_final_p50_ms"] = round(lv.p(50) * 1000)
                r[f"{label}_asr_counters"] = {k: v for k, v in sorted(counts.items()) if v}
                # What the bus carried for each 100 ms chunk the clients sent (benchmarks.bus_traffic).
                r[f"{label}_bus_per_chunk"] = bus.per(audio_s * 1000 / CHUNK_MS)
                r[f"{label}_bus_mb"] = {"in": round(bus.server["in_bytes"] / 1e6, 1),
                                        "out": round(bus.server["out_bytes"] / 1e6, 1)}
                print(f"  overhead {label} at {n} streams: {r[f'{label}_cpu_per_audio_s']:.3f} CPU-s per audio-s "
                      f"(idle stack {idle:.3f} cores), final p50 {r[f'{label}_final_p50_ms']} ms; "
                      f"ASR counters {r[f'{label}_asr_counters']}; bus messages per 100 ms chunk "
                      f"{r[f'{label}_bus_per_chunk']}", flush=True)
        timed.append(direct_cut_cpu_again(distinct, settings))  # the stack has stopped: a quiet machine
    # Each stack's ratio is against the baseline timed just before and just after it.
    for n, r in res.items():
        timings = [sum(t[c.name] for c in picked[n]) / r["audio_s"] for t in timed]
        per_stack = dict(zip((label for label, _ in runs), bracketed(timings), strict=True))
        r["direct_cut_cpu_per_audio_s_timings"] = timings
        r["direct_cut_cpu_per_audio_s_by_stack"] = per_stack
        r["direct_cut_cpu_per_audio_s_before"] = timings[0]
        r["direct_cut_cpu_per_audio_s_after"] = timings[-1]
        r["direct_cut_cpu_per_audio_s"] = sum(timings) / len(timings)
        r["ratio_no_speculation_vs_direct_cut"] = r["no_speculation_cpu_per_audio_s"] / per_stack["no_speculation"]
        r["ratio_vs_direct_cut"] = r["finals_only_cpu_per_audio_s"] / per_stack["finals_only"]
        r["speculation_cpu_per_audio_s"] = r["finals_only_cpu_per_audio_s"] - r["no_speculation_cpu_per_audio_s"]
        r["ratio_with_revisions_vs_direct_cut"] = r["with_revisions_cpu_per_audio_s"] / per_stack["with_revisions"]
        r["revisions_cpu_per_audio_s"] = r["with_revisions_cpu_per_audio_s"] - r["finals_only_cpu_per_audio_s"]
        r["partials_cpu_per_audio_s"] = r["with_partials_cpu_per_audio_s"] - r["with_revisions_cpu_per_audio_s"]
        # Every run of the headline stack, each against its own bracket (the first is the figure above).
        r["headline_ratios"] = [r[f"{label}_cpu_per_audio_s"] / per_stack[label]
                                for label, _ in runs if label.split("#")[0] == HEADLINE]
    return {str(n): r for n, r in res.items()}


if __name__ == "__main__":
    sys.exit(main())
