"""Worker presence (common.presence) on a real nats-server: a heartbeat makes a worker live, a
stopped worker's key is gone at once (purged, no marker left to look live), and reading the live
set creates no consumer on the server (it is read every second by every edge)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from common import presence
from common.bus_timing import TIMING
from common.nats_server import NatsServer


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[tuple[NATS, JetStreamContext]]:
    nc = await nats.connect(nats_server.url)
    try:
        yield nc, nc.jetstream()
    finally:
        await nc.close()


async def live_within(js: JetStreamContext, want: dict[str, list[str]], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while await presence.live_workers(js) != want:
            await asyncio.sleep(0.05)


async def test_heartbeats_are_live_and_a_stopped_worker_is_gone_at_once(bus: tuple[NATS, JetStreamContext]) -> None:
    _, js = bus
    kv = await presence.bucket(js, 1)
    assert await presence.live_workers(js) == {}
    beats = [asyncio.create_task(presence.heartbeat(kv, js, role, wid))
             for role, wid in (("asr", "a1"), ("asr", "a2"), ("vad", "v1"))]
    await live_within(js, {"asr": ["a1", "a2"], "vad": ["v1"]})
    beats[0].cancel()
    await asyncio.gather(beats[0], return_exceptions=True)
    # Gone now, not when the bucket's TTL (TIMING.worker_ttl_s) would expire a marker.
    assert await presence.live_workers(js) == {"asr": ["a2"], "vad": ["v1"]}
    for beat in beats[1:]:
        beat.cancel()
    await asyncio.gather(*beats[1:], return_exceptions=True)
    assert await presence.live_workers(js) == {}


async def test_a_worker_that_stops_beating_expires_with_the_ttl(bus: tuple[NATS, JetStreamContext]) -> None:
    _, js = bus
    kv = await presence.bucket(js, 1)
    await kv.put("asr.crashed", b"{}")  # a last beat, then nothing (a killed process)
    assert await presence.live_workers(js) == {"asr": ["crashed"]}
    await live_within(js, {}, timeout=TIMING.worker_ttl_s + 5)


async def test_reading_the_live_set_creates_no_consumer(bus: tuple[NATS, JetStreamContext]) -> None:
    nc, js = bus
    kv = await presence.bucket(js, 1)
    await kv.put("vad.v1", b"{}")
    created: list[Msg] = []

    async def add(msg: Msg) -> None:
        created.append(msg)

    await nc.subscribe("$JS.API.CONSUMER.CREATE.>", cb=add)
    await nc.subscribe("$JS.API.CONSUMER.DURABLE.CREATE.>", cb=add)
    await nc.flush()
    for _ in range(5):
        assert await presence.live_workers(js) == {"vad": ["v1"]}
    await nc.flush()
    assert created == []
    await kv.keys()  # the way it was read before: a consumer each time (the check can fail)
    await nc.flush()
    assert created
