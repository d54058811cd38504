"""nats-server's monitoring endpoint (``NatsServer(monitor=True)``) read by benchmarks.bus_traffic:
messages a named client publishes show up in its role's counts; without ``monitor`` there is no
endpoint."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats

from benchmarks import bus_traffic
from common.nats_server import NatsServer


async def publish(url: str, name: str, count: int) -> None:
    nc = await nats.connect(url, name=name)
    try:
        for i in range(count):
            await nc.publish(f"test.{i % 3}", b"x" * 100)
        await nc.flush()
    finally:
        await nc.close()


async def test_a_clients_messages_are_counted_under_its_role(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats", monitor=True).start()
    try:
        assert server.monitor_url.startswith("http://127.0.0.1:")
        url = server.url
        listener = await nats.connect(url, name="vad-listener")
        got: list[int] = []

        async def heard(_msg: object) -> None:
            got.append(1)

        await listener.subscribe("test.>", cb=heard)
        await listener.flush()
        before = await asyncio.to_thread(bus_traffic.snapshot, server.monitor_url)
        await publish(url, "ingest-test", 40)
        for _ in range(100):
            if len(got) == 40:
                break
            await asyncio.sleep(0.02)
        after = await asyncio.to_thread(bus_traffic.snapshot, server.monitor_url)
        await listener.close()
        traffic = bus_traffic.delta(before, after)
        assert len(got) == 40
        # The publisher's connection closed before the second snapshot: only the totals hold it.
        assert traffic.server["in_msgs"] >= 40
        assert traffic.by_role["vad"]["out_msgs"] == 40
        assert traffic.by_role["vad"]["out_bytes"] >= 40 * 100
    finally:
        server.stop()


def test_without_monitor_there_is_no_endpoint(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats").start()
    try:
        assert server.monitor_url == ""
    finally:
        server.stop()
