"""The edge alone, in process (aiohttp's test server) against a real nats-server: sessions are
admitted, counted and released whatever ends them; idle sessions are closed with a reason."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from common.nats_server import NatsServer
from common.settings import Settings, replace
from ingest.app import CONTEXT
from tests.helpers import Client, connect, edge_server, ws_url


@pytest.fixture
async def edge(nats_server: NatsServer) -> AsyncIterator[TestServer]:
    settings = replace(Settings(), nats_url=nats_server.url, require_workers_ready=False, worker_id="edge-t",
                       idle_timeout_seconds=2.0, max_sessions_per_worker=2, vad_http_port=0, asr_http_port=0,
                       end_flush_timeout_seconds=1.0,  # no workers here: nothing will flush
                       ws_ping_seconds=0.3)  # pongs must not count as activity
    async with edge_server(settings) as server:
        yield server


async def metrics(http: aiohttp.ClientSession, server: TestServer) -> dict[str, object]:
    async with http.get(server.make_url("/v1/metrics")) as resp:
        body: dict[str, object] = await resp.json()
        return body


async def test_json_metrics_follow_sessions_in_and_out(edge: TestServer) -> None:
    async with aiohttp.ClientSession() as http:
        before = await metrics(http, edge)
        assert before["active_sessions"] == 0 and before["max_sessions"] == 2
        assert before["worker_id"] == "edge-t" and before["capacity_percent"] == 0.0
        a = await connect(http, ws_url(edge))
        b = await connect(http, ws_url(edge))
        during = await metrics(http, edge)
        assert during["active_sessions"] == 2 and during["capacity_percent"] == 100.0
        assert during["sessions_by_state"] == {"active": 2}
        # A third is refused with CAPACITY and close 1013, and does not count.
        ws = await asyncio.wait_for(http.ws_connect(ws_url(edge)), 10)
        refused = Client(ws)
        assert await refused.recv() == {"type": "error", "code": "CAPACITY",
                                        "message": "Service at capacity, please try again"}
        assert await refused.recv() is None and refused.close_code == 1013
        await a.ws.close()
        await b.send_json({"type": "end"})
        await b.until("session_ended", timeout=15)
        async with asyncio.timeout(10):
            while (await metrics(http, edge))["active_sessions"] != 0:
                await asyncio.sleep(0.05)
        assert edge.app[CONTEXT].connections == set()


async def test_idle_sessions_are_closed_with_a_reason(edge: TestServer) -> None:
    async with aiohttp.ClientSession() as http:
        client = await connect(http, ws_url(edge))
        # The client reads all the time (so it answers the pings, every 0.3 s here), like a real one.
        reader = asyncio.create_task(client.recv(timeout=15))
        for _ in range(4):
            await client.send_json({"type": "keepalive"})  # each keeps it alive for 2 more seconds
            await asyncio.sleep(0.6)
        assert not reader.done(), "closed although keepalives arrived"
        # Then silence: pongs are not activity, so it is closed 2 s after the last keepalive.
        assert await asyncio.wait_for(reader, 8) is None
        assert client.close_code == 1000
        assert client.last_frame is not None and "Idle timeout" in (client.last_frame.extra or "")
        async with asyncio.timeout(10):
            while (await metrics(http, edge))["active_sessions"] != 0:
                await asyncio.sleep(0.05)


async def test_health_and_readiness(edge: TestServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(edge.make_url("/healthz")) as resp:
            assert resp.status == 200
        async with http.get(edge.make_url("/readyz")) as resp:
            body = await resp.json()
            assert resp.status == 200 and body == {"ready": True, "checks": {"nats": True, "not_draining": True}}
        async with http.get(edge.make_url("/metrics")) as resp:
            text = await resp.text()
            assert resp.status == 200 and "asr_active_sessions" in text
