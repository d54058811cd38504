"""`/v1/listen` at the edge alone (in process, aiohttp's test server) against a real nats-server,
no workers: what the Deepgram wire puts on the bus (commands, the per-session `Asr-Options`
header) and how the shared session machinery (capacity, end of session) answers in Deepgram's shape."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import nats
import pytest
from aiohttp.test_utils import TestServer
from nats.aio.msg import Msg

from common import subjects
from common.nats_server import NatsServer
from common.settings import Settings, replace
from tests.helpers import STEP, edge_server

QUERY = "encoding=linear16&sample_rate=16000"


@pytest.fixture
async def edge(nats_server: NatsServer) -> AsyncIterator[TestServer]:
    settings = replace(Settings(), nats_url=nats_server.url, require_workers_ready=False, worker_id="edge-dg",
                       max_sessions_per_worker=1, vad_http_port=0, asr_http_port=0,
                       end_flush_timeout_seconds=1.0)  # no workers here: nothing will flush
    async with edge_server(settings) as server:
        yield server


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[list[Msg]]:
    """Every audio-subject message the edge publishes (JetStream publishes reach core subscribers)."""
    seen: list[Msg] = []

    async def keep(msg: Msg) -> None:
        seen.append(msg)

    nc = await nats.connect(nats_server.url)
    await nc.subscribe("audio.>", cb=keep)
    await nc.flush()
    try:
        yield seen
    finally:
        await nc.close()


def url(server: TestServer, path: str, query: str) -> str:
    return str(server.make_url(path)).replace("http", "ws", 1) + "?" + query


async def kinds_on_bus(seen: list[Msg], count: int) -> list[tuple[str, str | None]]:
    async with asyncio.timeout(STEP):
        while len(seen) < count:
            await asyncio.sleep(0.02)
    return [((m.headers or {})[subjects.H_KIND], (m.headers or {}).get(subjects.H_OPTIONS)) for m in seen]


async def receive_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    frame = await asyncio.wait_for(ws.receive(), STEP)
    assert frame.type == aiohttp.WSMsgType.TEXT, frame
    data: dict[str, Any] = json.loads(frame.data)
    return data


@pytest.mark.parametrize(("endpointing", "header"), [
    ("&endpointing=800", '{"endpointing_ms":800}'),
    ("&endpointing=false", '{"endpointing_ms":5000}'),
    ("&endpointing=10", '{"endpointing_ms":100}'),
    ("", None),
])
async def test_control_messages_and_endpointing_reach_the_bus(
    edge: TestServer, bus: list[Msg], endpointing: str, header: str | None,
) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await asyncio.wait_for(http.ws_connect(url(edge, "/v1/listen", QUERY + endpointing)), STEP)
        await ws.send_bytes(b"\0\0" * 1600)
        await ws.send_str(json.dumps({"type": "KeepAlive"}))  # nothing on the bus
        await ws.send_str(json.dumps({"type": "Finalize"}))
        await ws.send_bytes(b"\0\0" * 1600)
        await ws.send_str(json.dumps({"type": "CloseStream"}))
        metadata = await receive_json(ws)  # no workers: the flush wait ends after 1 s
        assert metadata["type"] == "Metadata" and metadata["duration"] == 0.2, metadata
        assert (await asyncio.wait_for(ws.receive(), STEP)).type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1000
    on_bus = await kinds_on_bus(bus, 4)
    assert [kind for kind, _ in on_bus] == ["audio", "finalize", "audio", "end"]
    # The VAD's per-session options travel on every audio message (and only on audio).
    assert [options for kind, options in on_bus if kind == "audio"] == [header, header]


async def test_native_stream_carries_no_options(edge: TestServer, bus: list[Msg]) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await asyncio.wait_for(http.ws_connect(url(edge, "/v1/stream", "sample_rate=16000")), STEP)
        assert (await receive_json(ws))["type"] == "session_started"
        await ws.send_bytes(b"\0\0" * 1600)
        await ws.close()
    assert await kinds_on_bus(bus, 1) == [("audio", None)]


async def test_capacity_refusal_in_deepgrams_shape(edge: TestServer) -> None:
    async with aiohttp.ClientSession() as http:
        first = await asyncio.wait_for(http.ws_connect(url(edge, "/v1/listen", QUERY)), STEP)
        async with asyncio.timeout(STEP):  # admitted (no greeting on this wire to wait for)
            while True:
                async with http.get(edge.make_url("/v1/metrics")) as resp:
                    if (await resp.json())["active_sessions"] == 1:
                        break
                await asyncio.sleep(0.02)
        second = await asyncio.wait_for(http.ws_connect(url(edge, "/v1/listen", QUERY)), STEP)
        assert await receive_json(second) == {"type": "Error", "variant": "CAPACITY",
                                              "description": "Service at capacity, please try again",
                                              "code": "CAPACITY"}
        assert (await asyncio.wait_for(second.receive(), STEP)).type == aiohttp.WSMsgType.CLOSE
        assert second.close_code == 1013
        await first.close()
