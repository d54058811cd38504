"""Edge load: how many streaming sessions one edge process holds within a chunk->JetStream bound.

    .venv/bin/python -m benchmarks.edge_load [--sessions 250,500,1000,1500,2000] [--seconds 20]
        [--p99-ms 50] [--chunk-ms 100] [--vad] [--no-pin] [--json PATH]

One edge process and its own nats-server (a cli.dev.Stack without workers; the edge's readiness
does not wait for workers). No VAD or ASR worker runs: in their place this process holds a pull
consumer on the AUDIO stream that only acknowledges (AckPolicy.ALL, one ack per batch), so no ASR
work is done. A load generator in another process opens N WebSocket sessions (ramped) and sends
each a 100 ms chunk of PCM every 100 ms (``--chunk-ms``), phases spread evenly; the first 8 bytes of
every chunk carry the generator's wall clock at the moment it was sent. Chunks shorter than the
stack's ``audio_batch_ms`` (ASR_AUDIO_BATCH_MS of the shell, else the default) are joined by the
edge, so fewer messages are stored than chunks sent; a joined message's latency is its first
chunk's, the longest held.

For each level, over a steady window of ``--seconds`` that starts ``--warmup`` seconds after every
session is connected and streaming:

- chunk -> JetStream ack: for a sample of the messages stored in the window (evenly spaced stream
  sequences, read back afterwards with STREAM.MSG.GET), the stream's own stored timestamp minus
  the send time in the payload: client socket, edge, publish and store, on one machine's clock.
  ``edge publish`` is the edge's Asr-Sent-At header minus the same send time (receive to publish).
- CPU per message: the edge process's CPU (from /proc) over the window / messages stored.
- memory per session: (edge RSS in the window - RSS before the sessions connected) / N.
- garbage collection: the edge's ``asr_gc_pause_seconds`` (from its /metrics) over the window:
  how many collections, their total time and the bucket bound of the longest one.
- event-loop lag: round trips of GET /healthz to the edge every 100 ms in the window (the loop's
  lag plus a tiny HTTP request, so an upper bound of the lag).
- offered vs stored messages per second, and the generator's own lateness (if it falls behind, the
  level measures the generator, and the row says so).
- the CPU of the generator, of this process (the ack-only consumer, at 10,000 msg/s the largest
  user of the other core) and how busy the other CPUs were: near 100 % there, nats-server waits
  for a core and the latency is the harness's, not the edge's.

The generator and this process run on uvloop, as the edge does (the consumer took 43 % of a core
at 1,000 sessions on asyncio's loop).

With ``--vad`` a real VAD worker (default settings) takes the ack-only consumer's place, on the
other CPUs; the generator's low noise holds no speech, so it publishes no ASR job, and each row's
JSON has the VAD worker's CPU per message (``vad_cpu_us_per_msg``).

A level passes when every session connected and stayed open, the stored rate is at least 95 % of
the offered one and p99 < ``--p99-ms``. Levels run in ascending order and stop at the first failure.
With ``--pin`` (default when the machine has 2+ cores) the edge runs on CPU 0 and everything else
(load generator, nats-server, this process) on the other CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import shlex
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import nats
import numpy as np
import uvloop
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from benchmarks import procstat
from benchmarks.pipeline_latency import machine
from cli.dev import Stack, _ready, free_port
from common import subjects
from common.settings import Settings

CHUNK_MS = 100  # --chunk-ms
CHUNK_BYTES = 3200  # CHUNK_MS of PCM s16le 16 kHz mono
TICKS = 10  # the generator sends to 1/TICKS of the sessions every CHUNK_MS / TICKS
SAMPLES = 20000  # stored messages read back per level for the latency percentiles


# --- load generator (its own process) -------------------------------------------------------------

def set_chunk_ms(ms: int) -> None:
    global CHUNK_MS, CHUNK_BYTES
    CHUNK_MS, CHUNK_BYTES = ms, ms * 32


def batch_ms() -> int:
    """The stack's ``audio_batch_ms`` (the shell's ASR_AUDIO_BATCH_MS reaches it)."""
    return int(os.environ.get("ASR_AUDIO_BATCH_MS", Settings().audio_batch_ms))


def chunks_per_message() -> int:
    """How many of the generator's chunks the edge joins into one message (``ingest.audio_batch``)."""
    return max(1, math.ceil(batch_ms() / CHUNK_MS))


async def loadgen(url: str, n: int, seconds: float, ramp_per_s: float, warmup: float) -> dict[str, Any]:
    noise = (np.random.default_rng(0).normal(0, 30, CHUNK_BYTES // 2)).astype("<i2").tobytes()
    body = noise[8:]
    closed: list[str] = []
    connect_errors: list[str] = []
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    readers: list[asyncio.Task[None]] = []

    finishing = False

    async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT and '"error"' in msg.data:
                closed.append(msg.data[:120])
        if not finishing:  # the edge closed it during the run
            closed.append(f"closed by the edge: {ws.close_code}")

    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:
        async def one() -> None:
            try:
                ws = await asyncio.wait_for(http.ws_connect(url, max_msg_size=0, autoping=True), 30)
                first = await asyncio.wait_for(ws.receive(), 30)
                if first.type != aiohttp.WSMsgType.TEXT or "session_started" not in first.data:
                    raise RuntimeError(f"no session_started: {first.data!r}"[:120])
                sockets.append(ws)
                readers.append(asyncio.create_task(read(ws)))
            except (TimeoutError, aiohttp.ClientError, RuntimeError) as exc:
                connect_errors.append(f"{type(exc).__name__}: {exc}"[:120])

        batch = max(1, int(ramp_per_s / 10))
        for i in range(0, n, batch):
            await asyncio.gather(*(one() for _ in range(min(batch, n - i))))
            await asyncio.sleep(0.1)
        print(json.dumps({"event": "connected", "sessions": len(sockets), "at": time.time()}), flush=True)

        lateness: list[float] = []
        sent = 0
        start = time.monotonic() + 0.2
        buckets = [sockets[b::TICKS] for b in range(TICKS)]
        tick = 0
        steady_at = start + warmup  # every session's first chunks (setup work in the edge) come before
        stop_at = steady_at + seconds
        print(json.dumps({"event": "steady", "at": time.time() + 0.2 + warmup}), flush=True)
        while True:
            due = start + tick * CHUNK_MS / 1000 / TICKS
            if due >= stop_at:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if due >= steady_at:
                lateness.append(time.monotonic() - due)
            for ws in buckets[tick % TICKS]:
                if ws.closed:
                    continue
                with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                    await ws.send_bytes(struct.pack("<d", time.time()) + body)
                    sent += 1
            tick += 1
        end_wall = time.time()
        print(json.dumps({"event": "done", "at": end_wall}), flush=True)
        finishing = True
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        for r in readers:
            r.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    lat = np.array(lateness) if lateness else np.zeros(1)
    return {"event": "result", "connected": len(sockets), "connect_errors": connect_errors[:20],
            "connect_error_count": len(connect_errors), "sent": sent, "closed_early": closed[:20],
            "closed_early_count": len(closed),
            "tick_late_p99_ms": float(np.percentile(lat, 99) * 1000), "tick_late_max_ms": float(lat.max() * 1000)}


# --- the consumer that only acknowledges, the lag probe and the read-back -------------------------

async def ack_consumer(nc: Any, stop: asyncio.Event) -> int:
    js = nc.jetstream()
    name = "bench-ack-only"
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_consumer(subjects.AUDIO_STREAM, name)
    sub = await js.pull_subscribe("audio.>", durable=name, stream=subjects.AUDIO_STREAM, config=ConsumerConfig(
        ack_policy=AckPolicy.ALL, deliver_policy=DeliverPolicy.NEW, max_ack_pending=100000))
    acked = 0
    while not stop.is_set():
        try:
            msgs = await sub.fetch(1000, timeout=0.5)
        except (nats.errors.TimeoutError, TimeoutError):
            continue
        if not msgs:  # fetch can come back empty (a status message, not a timeout)
            continue
        await msgs[-1].ack()
        acked += len(msgs)
    await sub.unsubscribe()
    return acked


async def probe_lag(port: int, stop: asyncio.Event, out: list[float]) -> None:
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            t = time.monotonic()
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz", timeout=aiohttp.ClientTimeout(total=10)) as r:
                    await r.read()
                out.append(time.monotonic() - t)
            except (TimeoutError, aiohttp.ClientError):
                out.append(10.0)
            await asyncio.sleep(0.1)


async def stream_last_seq(js: Any) -> int:
    info = await js.stream_info(subjects.AUDIO_STREAM)
    return int(info.state.last_seq)


async def read_back(js: Any, first: int, last: int, t_from: float, t_to: float) -> dict[str, Any]:
    """Stored minus sent times of a sample of the audio messages stored between the two sequences."""
    if last < first:
        return {"samples": 0}
    seqs = sorted(set(np.linspace(first, last, min(SAMPLES, last - first + 1)).astype(int).tolist()))
    stored, publish = [], []
    for i in range(0, len(seqs), 200):
        msgs = await asyncio.gather(*(js.get_msg(subjects.AUDIO_STREAM, seq=s) for s in seqs[i : i + 200]),
                                    return_exceptions=True)
        for m in msgs:
            if isinstance(m, BaseException) or not m.data or len(m.data) % CHUNK_BYTES:
                continue
            (sent,) = struct.unpack_from("<d", m.data)
            if not t_from <= sent <= t_to:
                continue
            stored.append(m.time.timestamp() - sent)
            hdr = (m.headers or {}).get(subjects.H_SENT_AT)
            if hdr:
                publish.append(float(hdr) - sent)

    def pcts(xs: list[float]) -> dict[str, float]:
        if not xs:
            return {}
        a = np.array(xs) * 1000
        return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
                "max_ms": float(a.max())}

    return {"samples": len(stored), "stored": pcts(stored), "edge_publish": pcts(publish)}


async def gc_buckets(port: int) -> dict[float, float]:
    """The edge's ``asr_gc_pause_seconds`` buckets summed over generations (bound -> count), and
    the sum of all pauses under the key -1."""
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    out: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "asr_gc_pause_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                out[bound] = out.get(bound, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                out[-1.0] = out.get(-1.0, 0.0) + sample.value
    return out


def gc_window(before: dict[float, float], after: dict[float, float]) -> dict[str, float]:
    """Collections in the window, their total ms and the bound (ms) the longest stayed under."""
    diff = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    count = diff.get(float("inf"), 0.0)
    # With any collection, the +Inf bucket holds them all, so min() always has a bound.
    longest = min(k for k, v in diff.items() if k >= 0 and v >= count) if count else float("nan")
    return {"count": count, "total_ms": diff.get(-1.0, 0.0) * 1000, "longest_under_ms": longest * 1000}


# --- a level --------------------------------------------------------------------------------------

def pin(pid: int, cpus: set[int]) -> None:
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):  # every thread, not only the main one
            os.sched_setaffinity(int(task), cpus)


async def level(n: int, args: argparse.Namespace, stack: Stack, nats_url: str, others: set[int]) -> dict[str, Any]:
    edge = stack.procs["ingest"].pid
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    stop_consumer = asyncio.Event()
    vad = stack.procs["vad_worker"].pid if args.vad else 0
    consumer = asyncio.create_task(ack_consumer(nc, stop_consumer) if not vad else asyncio.sleep(0, 0))
    rss_before = procstat.rss_bytes(edge)
    cmd = [sys.executable, "-m", "benchmarks.edge_load", "--loadgen", f"ws://127.0.0.1:{stack.port}/v1/stream",
           "--sessions", str(n), "--chunk-ms", str(CHUNK_MS),
           "--seconds", str(args.seconds), "--ramp", str(args.ramp), "--warmup", str(args.warmup)]
    gen = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    if others:
        pin(gen.pid, others)
    assert gen.stdout is not None
    events: dict[str, Any] = {}
    lags: list[float] = []
    stop_probe = asyncio.Event()
    probe: asyncio.Task[None] | None = None
    rss_task: asyncio.Task[None] | None = None
    rss_peak = 0
    cpu0 = cpu1 = nats0 = nats1 = gen0 = gen1 = rest0 = rest1 = own0 = own1 = vad0 = vad1 = 0.0
    seq0 = seq1 = 0
    gc0: dict[float, float] = {}
    gc1: dict[float, float] = {}
    nats_pid = stack.nats.proc.pid if stack.nats.proc else 0
    async with asyncio.timeout(args.warmup + args.seconds + n / args.ramp + 180):
        while line := await gen.stdout.readline():
            ev = json.loads(line)
            events[ev["event"]] = ev
            if ev["event"] == "steady":
                await asyncio.sleep(max(0.0, ev["at"] - time.time()))
                seq0 = await stream_last_seq(js) + 1
                cpu0, nats0 = procstat.cpu_seconds(edge), procstat.cpu_seconds(nats_pid)
                gen0, rest0 = procstat.cpu_seconds(gen.pid), procstat.cpu_busy_seconds(others)
                own0, vad0 = procstat.cpu_seconds(os.getpid()), procstat.cpu_seconds(vad)
                gc0 = await gc_buckets(stack.port)
                probe = asyncio.create_task(probe_lag(stack.port, stop_probe, lags))

                async def watch_rss() -> None:
                    nonlocal rss_peak
                    while not stop_probe.is_set():
                        rss_peak = max(rss_peak, procstat.rss_bytes(edge))
                        await asyncio.sleep(0.5)

                rss_task = asyncio.create_task(watch_rss())
            elif ev["event"] == "done":
                cpu1, nats1 = procstat.cpu_seconds(edge), procstat.cpu_seconds(nats_pid)
                gen1, rest1 = procstat.cpu_seconds(gen.pid), procstat.cpu_busy_seconds(others)
                own1, vad1 = procstat.cpu_seconds(os.getpid()), procstat.cpu_seconds(vad)
                gc1 = await gc_buckets(stack.port)
                stop_probe.set()
                await asyncio.sleep(1.0)  # the last chunks reach the stream
                seq1 = await stream_last_seq(js)
                await asyncio.gather(*(t for t in (probe, rss_task) if t is not None))
        await gen.wait()
    stop_consumer.set()
    acked = await consumer
    steady, done = events.get("steady", {}).get("at", 0.0), events.get("done", {}).get("at", 0.0)
    back = await read_back(js, seq0, seq1, steady, done)
    await nc.close()
    gen_result = events.get("result", {})
    window = max(done - steady, 1e-9)
    stored = max(0, seq1 - seq0 + 1)
    offered = n * 1000 / CHUNK_MS  # chunks per second
    expected = offered / chunks_per_message()  # messages per second, once joined
    lag = np.array(lags) * 1000 if lags else np.array([float("nan")])
    res: dict[str, Any] = {
        "sessions": n, "connected": gen_result.get("connected", 0), "window_s": window,
        "chunk_ms": CHUNK_MS, "audio_batch_ms": batch_ms(),
        "offered_msg_s": offered, "expected_msg_s": expected, "stored_msg_s": stored / window,
        "acked_by_consumer": acked,
        "latency": back, "edge_cpu_pct": (cpu1 - cpu0) / window * 100,
        "edge_cpu_us_per_msg": (cpu1 - cpu0) / max(stored, 1) * 1e6,
        "nats_cpu_pct": (nats1 - nats0) / window * 100,
        "generator_cpu_pct": (gen1 - gen0) / window * 100,
        "consumer_cpu_pct": (own1 - own0) / window * 100,  # this process: the ack-only consumer, probes
        "vad_cpu_pct": (vad1 - vad0) / window * 100 if vad else None,
        "vad_cpu_us_per_msg": (vad1 - vad0) / max(stored, 1) * 1e6 if vad else None,
        # Per chunk the generator sent (what a client's audio costs, however the edge joins it):
        "edge_cpu_us_per_chunk": (cpu1 - cpu0) / max(offered * window, 1) * 1e6,
        "nats_cpu_us_per_chunk": (nats1 - nats0) / max(offered * window, 1) * 1e6,
        "vad_cpu_us_per_chunk": (vad1 - vad0) / max(offered * window, 1) * 1e6 if vad else None,
        # How busy the CPUs that are not the edge's were (generator, nats-server, this process):
        # near 100 % of them, latency is theirs, not the edge's.
        "other_cpus_busy_pct": (rest1 - rest0) / window / max(len(others), 1) * 100 if others else float("nan"),
        "rss_before_mb": rss_before / 2**20, "rss_peak_mb": rss_peak / 2**20,
        "rss_per_session_kb": (rss_peak - rss_before) / max(n, 1) / 1024,
        "loop_lag_p50_ms": float(np.percentile(lag, 50)), "loop_lag_p99_ms": float(np.percentile(lag, 99)),
        "generator": gen_result, "gc": gc_window(gc0, gc1),
    }
    p99 = back.get("stored", {}).get("p99_ms", float("inf"))
    res["passed"] = bool(res["connected"] == n and gen_result.get("connect_error_count", 1) == 0
                         and gen_result.get("closed_early_count", 1) == 0
                         and res["stored_msg_s"] >= 0.95 * expected and p99 < args.p99_ms)
    return res


def row(r: dict[str, Any]) -> str:
    lat, pub = r["latency"].get("stored", {}), r["latency"].get("edge_publish", {})
    g = r["generator"]
    longest = "-" if r["gc"]["count"] == 0 else f"{r['gc']['longest_under_ms']:g}"
    return (f"| {r['sessions']} | {r['connected']} | {r['offered_msg_s']:.0f} / {r['stored_msg_s']:.0f} "
            f"| {lat.get('p50_ms', float('nan')):.1f} / {lat.get('p99_ms', float('nan')):.1f} / "
            f"{lat.get('max_ms', float('nan')):.0f} | {pub.get('p99_ms', float('nan')):.1f} "
            f"| {r['edge_cpu_pct']:.0f} % | {r['edge_cpu_us_per_msg']:.0f} | {r['nats_cpu_pct']:.0f} % "
            f"| {r['edge_cpu_us_per_chunk']:.0f} / {r['nats_cpu_us_per_chunk']:.0f} / "
            f"{'-' if r['vad_cpu_us_per_chunk'] is None else format(r['vad_cpu_us_per_chunk'], '.0f')} "
            f"| {r.get('generator_cpu_pct', float('nan')):.0f} % | {r.get('other_cpus_busy_pct', float('nan')):.0f} % "
            f"| {r['rss_before_mb']:.0f} -> {r['rss_peak_mb']:.0f} ({r['rss_per_session_kb']:.0f}) "
            f"| {r['loop_lag_p50_ms']:.1f} / {r['loop_lag_p99_ms']:.1f} "
            f"| {r['gc']['count']:.0f} / {r['gc']['total_ms']:.0f} / {longest} "
            f"| {g.get('tick_late_p99_ms', float('nan')):.0f} "
            f"| {g.get('connect_error_count', '?')} / {g.get('closed_early_count', '?')} "
            f"| {r['latency'].get('samples', 0)} | {'yes' if r['passed'] else 'no'} |")


HEADER = ("| sessions | connected | chunks/s offered / msg/s stored | chunk->ack p50 / p99 / max (ms) "
          "| edge publish p99 (ms) | edge CPU | edge CPU µs per msg | nats-server CPU "
          "| CPU µs per chunk: edge / nats-server / VAD | generator CPU | other CPUs busy "
          "| edge RSS MB before -> peak (KB per session) "
          "| /healthz round trip p50 / p99 (ms) | edge GC: collections / total ms / longest under ms "
          "| generator late p99 (ms) | connect errors / closed early "
          "| samples | within bound |\n| " + " | ".join(["---"] * 18) + " |")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.edge_load", description=__doc__.split("\n")[0])
    p.add_argument("--sessions", default="250,500,1000,1500,2000", help="ascending levels")
    p.add_argument("--seconds", type=float, default=20.0, help="steady window per level (default 20)")
    p.add_argument("--warmup", type=float, default=3.0,
                   help="seconds of streaming before the measured window (default 3)")
    p.add_argument("--ramp", type=float, default=200.0, help="new sessions per second while connecting")
    p.add_argument("--chunk-ms", type=int, default=100,
                   help="audio per chunk the generator sends (default 100; the edge joins chunks shorter than "
                        "its audio_batch_ms, and the rows' JSON has the CPU per chunk)")
    p.add_argument("--p99-ms", type=float, default=50.0, help="chunk->ack p99 bound (default 50)")
    p.add_argument("--keep-going", action="store_true", help="run every level even after one fails")
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=len(os.sched_getaffinity(0)) >= 2,
                   help="edge on CPU 0, everything else on the others (default when there are 2+)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--label", default="")
    p.add_argument("--vad", action="store_true",
                   help="a real VAD worker consumes the audio instead of the ack-only consumer (on the other "
                        "CPUs); the rows' JSON then has its CPU per message")
    p.add_argument("--loadgen", default="", help=argparse.SUPPRESS)  # internal: run as the load generator
    args = p.parse_args(argv)
    args.levels = sorted({int(x) for x in args.sessions.split(",") if x.strip()})
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_chunk_ms(args.chunk_ms)
    if args.loadgen:
        result = uvloop.run(loadgen(args.loadgen, args.levels[0], args.seconds, args.ramp, args.warmup))
        print(json.dumps(result), flush=True)
        return 0
    command = ".venv/bin/python -m benchmarks.edge_load " + shlex.join(sys.argv[1:] if argv is None else argv)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info = machine()
    info["chunks"] = f"{CHUNK_MS} ms, joined {chunks_per_message()} per message (audio_batch_ms {batch_ms()})"
    info["publish_linger_ms"] = os.environ.get("ASR_PUBLISH_LINGER_MS", str(Settings().publish_linger_ms))
    print(f"{when} {args.label}\n{command}\n" + "\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    top = max(args.levels)
    env = {
        "ASR_REQUIRE_WORKERS_READY": "false", "ASR_MAX_CONNECTIONS_PER_IP": "0",
        "ASR_MAX_CONNECTS_PER_IP_PER_MINUTE": "0", "ASR_MAX_SESSIONS_PER_WORKER": str(top + 10),
        "ASR_MAX_GLOBAL_SESSIONS": str(top + 10),
        "ASR_AUDIO_RETENTION_SECONDS": "120",  # bounds the disk; 60 is refused (below the 120 s duplicate window)
        "ASR_IDLE_TIMEOUT_SECONDS": "120",
    }
    cpus = sorted(os.sched_getaffinity(0))
    edge_cpus, others = ({cpus[0]}, set(cpus[1:])) if args.pin and len(cpus) >= 2 else (set(cpus), set())
    results = []
    with tempfile.TemporaryDirectory(prefix="asr-edge-load-") as tmp:
        log_path = Path(tmp) / "stack.log"
        with log_path.open("w") as log:
            stack = Stack("127.0.0.1", free_port(), Path(tmp), out=log, env=env, workers=False)
            try:
                stack.start()
                if args.vad:
                    stack.add_worker("vad_worker")
                stack.wait_ready(timeout=60)
                if args.vad:  # its shards leased and consumed
                    vad_ready = f"http://127.0.0.1:{stack.http_ports['vad_worker']}/readyz"
                    deadline = time.monotonic() + 60
                    while not _ready(vad_ready):
                        if time.monotonic() > deadline:
                            raise RuntimeError("the VAD worker was not ready within 60 s")
                        time.sleep(0.25)
                if others:
                    pin(stack.procs["ingest"].pid, edge_cpus)
                    assert stack.nats.proc is not None
                    pin(stack.nats.proc.pid, others)
                    if args.vad:
                        pin(stack.procs["vad_worker"].pid, others)
                    os.sched_setaffinity(0, others)
                print(f"edge on CPU {sorted(edge_cpus)}, the rest on {sorted(others) or 'the same'}\n{HEADER}",
                      flush=True)
                for n in args.levels:
                    stack.check_children()
                    r = uvloop.run(level(n, args, stack, stack.nats.url, others))
                    results.append(r)
                    print(row(r), flush=True)
                    if not r["passed"] and not args.keep_going:
                        break
            except BaseException:
                log.flush()
                print(log_path.read_text()[-4000:], file=sys.stderr)
                raise
            finally:
                stack.stop()
    best = 0
    for r in results:
        if not r["passed"]:
            break
        best = r["sessions"]
    print(f"\n### Edge load {when} {args.label}\n\nCommand: `{command}`\n")
    print("\n".join(f"- {k}: {v}" for k, v in info.items()))
    consumer = "a VAD worker" if args.vad else "the ack-only consumer"
    print(f"- pinning: edge on CPU {sorted(edge_cpus)}, generator, nats-server and {consumer} on "
          f"{sorted(others) or 'the same CPUs'}\n\n{HEADER}")
    for r in results:
        print(row(r))
    print(f"\n- largest N within p99 < {args.p99_ms:g} ms: {best} sessions ({best * 1000 // CHUNK_MS} chunks/s)")
    out = args.json or Path(tempfile.mkstemp(prefix="edge-load-", suffix=".json")[1])
    out.write_text(json.dumps({"when": when, "command": command, "label": args.label, "machine": info,
                               "pinned": bool(others), "levels": results, "largest": best}, indent=1))
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
