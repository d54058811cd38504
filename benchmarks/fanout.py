"""Caption fan-out: one speaker session, many read-only viewers, on one edge or two.

    .venv/bin/python -m benchmarks.fanout [--viewers 1000] [--edges 1|2] [--finals 30] [--stalled 10]
                                          [--out docs/benchmarks.md]

Edge processes (cli.dev.Stack without workers; with ``--edges 2`` they share a Redis started here
and one ``viewer_token_secret``) and their nats-server. One speaker session is opened on the first
edge; its ``viewer_token`` opens ``--viewers`` caption sockets spread over the edges, plus
``--stalled`` raw sockets (4 KiB receive buffer) that never read. This script then plays the ASR
worker: it publishes ``--finals`` finals of the session through JetStream (a 90-character
sentence each, ``--interval`` seconds apart, stamped with the publish time).

Reported: whether every viewer received every final in order; latency = arrival − publish time
at the speaker and at the viewers (all viewer × final pairs), and the spread of one final over
all viewers (last arrival − first); the edges' RSS before and after the viewers joined (per
viewer), and their CPU time while the finals were fanned out (per delivered message); whether
the stalled viewers were closed (1008, ``slow_client_closes``) while the others kept every final.
The client side (all sockets in this one asyncio process) shares the machine with the edges,
so latencies include its own scheduling. A dated section is appended to the results file.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import resource
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import nats

from cli.dev import Stack
from common import subjects
from common.messages import SessionFlushed, Transcript, encode
from tests.conftest import RedisServer, free_port
from tests.helpers import RawClient, connect, rss_kib

TEXT = "We will meet at the train station at noon, and then we will talk about the plan for today."
PARTIALS_PER_FINAL = 40
METHOD = ("Method: see the docstring of benchmarks/fanout.py. Latencies include the client process (all "
          "sockets in one asyncio loop on the same cores as the edges). Newest run last.")
HEADING = "## Caption fan-out (benchmarks/fanout.py)"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Watcher:
    """One viewer socket: arrival time of each final by seq."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.arrivals: dict[int, float] = {}
        self.order: list[int] = []
        self.close_code: int | None = None

    async def read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            now = time.time()
            data = msg.json()
            if data["type"] == "transcript" and data["is_final"]:
                self.arrivals[data["seq"]] = now
                self.order.append(data["seq"])
        self.close_code = self.ws.close_code


async def open_viewers(http: aiohttp.ClientSession, urls: list[str], count: int) -> list[Watcher]:
    sem = asyncio.Semaphore(50)

    async def one(i: int) -> Watcher:
        async with sem:
            ws = await asyncio.wait_for(http.ws_connect(urls[i % len(urls)], max_msg_size=0), 60)
            return Watcher(ws)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def viewers_joined(http: aiohttp.ClientSession, ports: list[int], expected: int) -> None:
    """Until the edges' Prometheus gauge counts every viewer as joined."""
    async with asyncio.timeout(120):
        while True:
            total = 0
            for port in ports:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    for line in (await resp.text()).splitlines():
                        if line.startswith("asr_caption_viewers "):
                            total += int(float(line.split()[1]))
            if total >= expected:
                return
            await asyncio.sleep(0.2)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    redis = RedisServer(tmp / "redis") if args.edges > 1 else None
    log = (tmp / "stack.log").open("w")
    env = {"ASR_REQUIRE_WORKERS_READY": "false", "ASR_DRAIN_TIMEOUT_SECONDS": "2",
           "ASR_MAX_VIEWERS_PER_EDGE": str(args.viewers + args.stalled + 10),
           "ASR_VIEWER_TOKEN_SECRET": secrets.token_hex(24), "ASR_WS_PING_SECONDS": "60"}
    stack = Stack("127.0.0.1", free_port(), tmp, out=log, workers=False, edges=args.edges,
                  redis_url=redis.url if redis else "", env=env)
    stalled: list[RawClient] = []
    try:
        stack.start()
        stack.wait_ready(timeout=60)
        ports = [stack.edge_port(i) for i in range(args.edges)]
        pids = [proc.pid for name, proc in stack.procs.items() if name.startswith("ingest")]
        nc = await nats.connect(stack.nats.url)
        js = nc.jetstream()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            speaker = await connect(http, f"ws://127.0.0.1:{ports[0]}/v1/stream")
            sid, token = speaker.messages[0]["session_id"], speaker.messages[0]["viewer_token"]
            rss_before = [rss_kib(pid) for pid in pids]
            urls = [f"ws://127.0.0.1:{port}/v1/sessions/{sid}/captions?token={token}" for port in ports]
            t0 = time.monotonic()
            watchers = await open_viewers(http, urls, args.viewers)
            for i in range(args.stalled):
                client = await asyncio.to_thread(RawClient, "127.0.0.1", ports[i % len(ports)],
                                                 f"/v1/sessions/{sid}/captions?token={token}&partials=1", 4096)
                stalled.append(client)
            await viewers_joined(http, ports, args.viewers + args.stalled)
            join_s = time.monotonic() - t0
            readers = [asyncio.create_task(w.read()) for w in watchers]
            speaker_arrivals: dict[int, float] = {}

            async def speaker_reader() -> None:
                while len(speaker_arrivals) < args.finals:
                    msg = await speaker.recv(timeout=120)
                    if msg is None:
                        raise RuntimeError(f"speaker closed: {speaker.close_code}")
                    if msg["type"] == "transcript" and msg["is_final"]:
                        speaker_arrivals[msg["seq"]] = time.time()

            speaker_task = asyncio.create_task(speaker_reader())
            rss_viewers = [rss_kib(pid) for pid in pids]
            cpu_before = [cpu_seconds(pid) for pid in pids]
            published: dict[int, float] = {}
            for index in range(1, args.finals + 1):
                published[index] = time.time()
                final = Transcript(session_id=sid, utterance_id=f"u{index}", is_final=True,
                                   text=f"{index}. {TEXT}", start_s=float(index), end_s=index + 3.0,
                                   final_index=index, published_at=published[index])
                await js.publish(subjects.result_final(sid), encode(final))
                # Partials between finals: only the stalled viewers asked for them; they fill
                # those sockets quickly (a stress: real partials come about once a second).
                step = args.interval / PARTIALS_PER_FINAL
                for k in range(PARTIALS_PER_FINAL if args.stalled else 0):
                    partial = Transcript(session_id=sid, utterance_id=f"u{index + 1}", is_final=False,
                                         text=f"{k} {TEXT * 8}", start_s=index + 3.0, end_s=index + 4.0)
                    await nc.publish(subjects.result_partial(sid), encode(partial))
                    await asyncio.sleep(step)
                if not args.stalled:
                    await asyncio.sleep(args.interval)
            await js.publish(subjects.result_flushed(sid),
                             encode(SessionFlushed(session_id=sid, finals_total=args.finals, audio_s=99.0)))
            await asyncio.wait_for(speaker_task, 120)
            _, pending = await asyncio.wait(readers, timeout=120)
            cpu_after = [cpu_seconds(pid) for pid in pids]
            rss_after = [rss_kib(pid) for pid in pids]
            slow_closes = 0
            for port in ports:
                async with http.get(f"http://127.0.0.1:{port}/v1/metrics") as resp:
                    slow_closes += (await resp.json())["slow_client_closes"]
            for task in pending:
                task.cancel()
            await speaker.ws.close()
        await nc.close()
    finally:
        for client in stalled:
            client.close()
        stack.stop()
        log.close()
        if redis is not None:
            redis.stop()

    expected = list(range(1, args.finals + 1))
    complete = [w for w in watchers if w.order == expected]
    latencies = [(w.arrivals[i] - published[i]) * 1000 for w in watchers for i in expected if i in w.arrivals]
    speaker_lat = [(speaker_arrivals[i] - published[i]) * 1000 for i in expected]
    spreads = []
    for i in expected:
        times = [w.arrivals[i] for w in watchers if i in w.arrivals]
        spreads.append((max(times) - min(times)) * 1000)
    delivered = len(latencies)
    cpu = sum(cpu_after) - sum(cpu_before)
    return {
        "viewers": args.viewers, "edges": args.edges, "finals": args.finals, "stalled": args.stalled,
        "interval": args.interval, "join_s": join_s,
        "complete": len(complete), "closed_1000": sum(1 for w in watchers if w.close_code == 1000),
        "pending": len(pending),
        "lat": latencies, "speaker": speaker_lat, "spread": spreads,
        "rss_before": rss_before, "rss_viewers": rss_viewers, "rss_after": rss_after,
        "cpu_s": cpu, "delivered": delivered, "slow_closes": slow_closes,
    }


def report(r: dict[str, Any], command: str) -> str:
    def row(name: str, values: list[float]) -> str:
        return (f"| {name} | {statistics.median(values):.1f} | {pct(values, 0.95):.1f} | {pct(values, 0.99):.1f} "
                f"| {max(values):.1f} |")

    commit = subprocess.run(["git", "log", "-1", "--format=%h"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip()
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
    rss_growth = sum(r["rss_viewers"]) - sum(r["rss_before"])
    lines = [
        f"### Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: {r['viewers']} viewers on {r['edges']} edge(s)",
        "",
        f"Command: `{command}`",
        "",
        f"- machine: {os.cpu_count()} cpus ({len(os.sched_getaffinity(0))} usable), {cpu_model}; "
        f"python {platform.python_version()}; {platform.platform()}",
        f"- commit: {commit}{' (uncommitted changes)' if dirty else ''}; load at end: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min)",
        f"- setup: {r['edges']} edge process(es){' sharing a Redis' if r['edges'] > 1 else ''}, one "
        f"nats-server; one speaker session; {r['viewers']} viewer WebSockets (aiohttp, one client process) "
        f"+ {r['stalled']} raw sockets (4 KiB receive buffer, asking for partials) that never read, fed "
        f"{PARTIALS_PER_FINAL} partials of {8 * len(TEXT) + 3} characters between finals; "
        f"{r['finals']} finals of {len(TEXT) + 4} characters, "
        f"{r['interval']} s apart, published through JetStream as the ASR worker does",
        "",
        f"- every final to every viewer, in order: **{r['complete']} / {r['viewers']}** viewers "
        f"({r['delivered']} of {r['viewers'] * r['finals']} deliveries); {r['closed_1000']} closed with 1000 "
        f"after `session_ended`; {r['pending']} still open at the end",
        f"- stalled viewers closed as too slow (1008, `slow_client_closes`): {r['slow_closes']} / {r['stalled']}",
        f"- time to open and join all sockets: {r['join_s']:.1f} s",
        "",
        "| latency, ms (arrival − publish) | p50 | p95 | p99 | max |",
        "| --- | --- | --- | --- | --- |",
        row("speaker (its own session socket)", r["speaker"]),
        row(f"viewers (all {r['delivered']} deliveries)", r["lat"]),
        row("spread of one final over all viewers (last − first)", r["spread"]),
        "",
        f"- edge RSS: {sum(r['rss_before']) / 1024:.1f} MiB before the viewers, "
        f"{sum(r['rss_viewers']) / 1024:.1f} MiB with them joined, {sum(r['rss_after']) / 1024:.1f} MiB at the end: "
        f"**{rss_growth / r['viewers']:.1f} KiB per viewer** (all edges together)",
        f"- edge CPU while fanning out: {r['cpu_s']:.2f} s for {r['delivered']} deliveries: "
        f"**{1e6 * r['cpu_s'] / max(1, r['delivered']):.0f} µs per viewer per final** "
        f"({100 * r['cpu_s'] / (r['finals'] * r['interval']):.0f}% of one core over the "
        f"{r['finals'] * r['interval']:.0f} s of finals)",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--edges", type=int, default=1, choices=(1, 2))
    parser.add_argument("--finals", type=int, default=30)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between finals")
    parser.add_argument("--stalled", type=int, default=10, help="viewers that never read")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    result = asyncio.run(run(args))
    command = ".venv/bin/python -m benchmarks.fanout" + "".join(
        f" --{k} {v}" for k, v in (("viewers", args.viewers), ("edges", args.edges), ("finals", args.finals),
                                  ("interval", args.interval), ("stalled", args.stalled)))
    text = report(result, command)
    print(text)
    existing = args.out.read_text() if args.out.exists() else "# Benchmarks\n"
    if HEADING not in existing:
        existing = existing.rstrip("\n") + f"\n\n{HEADING}\n\n{METHOD}\n"
    args.out.write_text(_insert(existing, text))


def _insert(doc: str, section: str) -> str:
    """Appends the run at the end of this benchmark's own section (other sections stay as they are)."""
    start = doc.index(HEADING)
    nxt = doc.find("\n## ", start + len(HEADING))
    end = len(doc) if nxt == -1 else nxt + 1
    body = doc[start:end].rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    return doc[:start] + body + ("\n" + doc[end:] if end < len(doc) else "")


if __name__ == "__main__":
    main()
