"""A good client's final latency and the edge's memory, alone and beside clients that stopped reading.

    .venv/bin/python -m benchmarks.slow_consumers [--others 6] [--finals 60] [--out benchmarks/RESULTS.md]

One edge process (cli.dev.Stack without workers) and its nats-server. This script plays the ASR
worker on the bus: it publishes the good session's finals (500 characters each, 20 per second,
stamped with the publish time) and 3000 partials to each of ``--others`` sessions as fast as it
can. Phase 1: the good client alone. Phase 2: the flood goes to clients that read everything
(the cost of the flood itself). Phase 3: the flood goes to raw-socket clients with a 4 KiB
receive buffer that never read (the cost of slow clients). Latency = arrival at the good
client − publish time. The edge's RSS is sampled every 50 ms. A dated section is appended to the results file.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import nats
from nats.aio.client import Client as NATS

from cli.dev import Stack
from common import subjects
from common.messages import Transcript, encode
from tests.conftest import free_port
from tests.helpers import Client, RawClient, connect, rss_kib

TEXT = "word " * 100


async def flood(nc: NATS, session_id: str, partials: int) -> None:
    for i in range(partials):
        msg = Transcript(session_id=session_id, utterance_id="u0", is_final=False, text=TEXT, start_s=0.0,
                         end_s=1.0, published_at=time.time())
        await nc.publish(subjects.result_partial(session_id), encode(msg))
        if i % 50 == 0:
            await asyncio.sleep(0)


async def publish_finals(nc: NATS, sid: str, start: int, count: int, sent_at: list[float]) -> None:
    for i in range(count):
        sent_at.append(time.time())
        final = Transcript(session_id=sid, utterance_id=f"u{start + i}", is_final=True, text=TEXT, start_s=0.0,
                           end_s=1.0, final_index=start + i + 1, published_at=sent_at[-1])
        await nc.publish(subjects.result_final(sid), encode(final))
        await asyncio.sleep(0.05)


async def receive_finals(good: Client, count: int, arrivals: list[float]) -> None:
    await good.send_json({"type": "keepalive"})  # a caption viewer's client does this now and then
    async with asyncio.timeout(120):
        while len(arrivals) < count:
            msg = await good.recv(timeout=60)
            if msg is None:
                raise RuntimeError(f"good client closed: {good.close_code}")
            if msg["type"] == "transcript" and msg["is_final"]:
                arrivals.append(time.time())


async def drain_reader(client: Client) -> None:
    while await client.recv(timeout=120) is not None:
        pass


async def run(others: int, finals: int) -> dict[str, dict[str, float]]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-slow-"))
    out = (tmp / "edge.log").open("w")
    stack = Stack("127.0.0.1", free_port(), tmp, out=out, workers=False,
                  env={"ASR_REQUIRE_WORKERS_READY": "false", "ASR_DRAIN_TIMEOUT_SECONDS": "2"})
    stack.start()
    stack.wait_ready(timeout=60)
    pid = stack.procs["ingest"].pid
    url = f"ws://127.0.0.1:{stack.port}/v1/stream"
    result: dict[str, dict[str, float]] = {}
    nc = await nats.connect(stack.nats.url)
    try:
        async with aiohttp.ClientSession() as http:
            good = await connect(http, url)
            sid = str(good.messages[0]["session_id"])
            for phase in ("alone", "flood to clients that read", "flood to clients that stopped reading"):
                readers: list[Client] = []
                raws: list[RawClient] = []
                if phase == "flood to clients that read":
                    readers = [await connect(http, url) for _ in range(others)]
                    flood_ids = [str(c.messages[0]["session_id"]) for c in readers]
                elif phase.endswith("stopped reading"):
                    raws = [await asyncio.to_thread(RawClient, "127.0.0.1", stack.port, rcvbuf=4096)
                            for _ in range(others)]
                    flood_ids = [str((await asyncio.to_thread(c.read_json))["session_id"]) for c in raws]
                else:
                    flood_ids = []
                pumps = [asyncio.create_task(drain_reader(c)) for c in readers]
                print(f"phase: {phase}", flush=True)
                sent_at: list[float] = []
                arrivals: list[float] = []
                baseline = peak = rss_kib(pid)

                async def sample() -> None:
                    nonlocal peak
                    while True:
                        peak = max(peak, rss_kib(pid))
                        await asyncio.sleep(0.05)

                sampler = asyncio.create_task(sample())
                start = len(good.finals())
                await asyncio.gather(publish_finals(nc, sid, start, finals, sent_at),
                                     receive_finals(good, finals, arrivals),
                                     *(flood(nc, f, 3000) for f in flood_ids))
                if raws:  # give the edge time to give up on them
                    async with asyncio.timeout(30):
                        while True:
                            async with http.get(f"http://127.0.0.1:{stack.port}/v1/metrics") as resp:
                                body = await resp.json()
                            if body["slow_client_closes"] >= others:
                                break
                            await asyncio.sleep(0.1)
                sampler.cancel()
                async with http.get(f"http://127.0.0.1:{stack.port}/v1/metrics") as resp:
                    body = await resp.json()
                lat = sorted(a - s for a, s in zip(arrivals, sent_at, strict=True))
                result[phase] = {
                    "p50_ms": round(1000 * statistics.median(lat), 2),
                    "p95_ms": round(1000 * lat[int(0.95 * (len(lat) - 1))], 2),
                    "max_ms": round(1000 * lat[-1], 2),
                    "rss_growth_kib": peak - baseline,
                    "slow_client_closes": body["slow_client_closes"],
                    "messages_dropped": body["messages_dropped"],
                }
                for c in readers:
                    await c.ws.close()
                for task in pumps:
                    task.cancel()
                for r in raws:
                    r.close()
            await good.ws.close()
    finally:
        await nc.close()
        stack.stop()
        out.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--others", type=int, default=6, help="flooded sessions beside the good one")
    parser.add_argument("--finals", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/RESULTS.md"))
    args = parser.parse_args()
    result = asyncio.run(run(args.others, args.finals))
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    lines = [
        "",
        f"## Slow consumers — {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}. Command: "
        f"`.venv/bin/python -m benchmarks.slow_consumers --others {args.others} --finals {args.finals}`",
        "",
        "| phase | good client's final latency p50 / p95 / max (ms) | edge RSS growth (KiB) "
        "| slow-client closes (cumulative) | messages dropped (cumulative) |",
        "|---|---|---|---|---|",
    ]
    for phase, r in result.items():
        lines.append(f"| {phase} | {r['p50_ms']} / {r['p95_ms']} / {r['max_ms']} | {r['rss_growth_kib']} | "
                     f"{r['slow_client_closes']} | {r['messages_dropped']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    with args.out.open("a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
