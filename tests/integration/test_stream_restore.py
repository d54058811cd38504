"""A lone nats-server that restarts keeps its file streams and loses those in memory (the partial
and speculative job queues, the speculation cache). Every role re-creates them after it
reconnects, so that best-effort work resumes on its own."""

from __future__ import annotations

import asyncio

from common import bus, subjects
from common.bus_settings import BusSettings
from common.nats_server import NatsServer
from common.settings import Settings

IN_MEMORY = {subjects.JOBS_PARTIAL_STREAM, subjects.JOBS_SPECULATIVE_STREAM, f"KV_{subjects.SPECULATION_BUCKET}"}


async def test_memory_streams_come_back_after_a_restart(nats_server: NatsServer) -> None:
    settings = BusSettings.from_settings(Settings(), nats_url=nats_server.url)
    nc, js = await bus.connect_jetstream(settings, "restore-test")
    try:
        assert {s.config.name for s in await js.streams_info()} >= IN_MEMORY
        port = nats_server.port
        await asyncio.to_thread(nats_server.stop)
        await asyncio.to_thread(setattr, nats_server, "requested_port", port)
        await asyncio.to_thread(nats_server.start)
        names: set[str] = set()
        async with asyncio.timeout(20):
            while not names >= IN_MEMORY:
                await asyncio.sleep(0.2)
                if nc.is_connected:
                    names = {s.config.name or "" for s in await js.streams_info()}
        consumer = await js.consumer_info(subjects.JOBS_SPECULATIVE_STREAM, subjects.SPECULATIVE_CONSUMER)
        assert consumer.name == subjects.SPECULATIVE_CONSUMER
    finally:
        await bus.close(nc)
