"""Several edge processes sharing one Redis: exact caps under a thundering herd, and a client that
survives kill -9 of its edge by resuming on another one with its token."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from cli.dev import Stack
from tests.conftest import THREE_UTTERANCES, RedisServer, pcm_of
from tests.helpers import Client, connect, running_stack, wer

pytestmark = pytest.mark.slow


@pytest.fixture
def herd_stack(tmp_path: Path, redis_server: RedisServer) -> Iterator[Stack]:
    env = {"ASR_MAX_SESSIONS_PER_WORKER": "4", "ASR_MAX_GLOBAL_SESSIONS": "10",
           "ASR_REQUIRE_WORKERS_READY": "false"}
    with running_stack(tmp_path, 0, edges=3, redis_url=redis_server.url, workers=False,
                       env=env) as stack:
        yield stack


async def _edge_metrics(http: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    async with http.get(f"http://127.0.0.1:{port}/v1/metrics") as resp:
        body: dict[str, Any] = await resp.json()
        return body


async def test_thundering_herd_admits_exactly_the_global_cap(herd_stack: Stack, redis_server: RedisServer) -> None:
    stack = herd_stack
    async with aiohttp.ClientSession() as http:

        async def arrive(i: int) -> tuple[str, Any, aiohttp.ClientWebSocketResponse]:
            port = stack.edge_port(i % stack.edges)
            ws = await asyncio.wait_for(http.ws_connect(f"ws://127.0.0.1:{port}/v1/stream"), 30)
            first = json.loads((await asyncio.wait_for(ws.receive(), 30)).data)
            return first["type"], first, ws

        arrivals = await asyncio.gather(*(arrive(i) for i in range(60)))
        admitted = [(first, ws) for kind, first, ws in arrivals if kind == "session_started"]
        refused = [(first, ws) for kind, first, ws in arrivals if kind != "session_started"]
        assert len(admitted) == 10
        per_edge = Counter(first["worker_id"] for first, _ in admitted)
        assert max(per_edge.values()) <= 4, per_edge
        for first, ws in refused:
            assert first == {"type": "error", "code": "CAPACITY", "message": "Service at capacity, please try again"}
            closing = await asyncio.wait_for(ws.receive(), 10)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and ws.close_code == 1013
        metrics = [await _edge_metrics(http, stack.edge_port(i)) for i in range(stack.edges)]
        assert all(m["active_sessions"] == 10 and m["max_sessions"] == 10 for m in metrics)
        assert sum(m["edge_active_sessions"] for m in metrics) == 10
        for _, ws in admitted:
            await asyncio.wait_for(ws.close(), 10)
        for _, ws in refused:
            await asyncio.wait_for(ws.close(), 10)
        # Every release arrives: the counts return to zero everywhere.
        r = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        try:
            async with asyncio.timeout(20):
                while int(await r.get("asr:count") or 0) != 0:
                    await asyncio.sleep(0.1)
        finally:
            await r.aclose()
        metrics = [await _edge_metrics(http, stack.edge_port(i)) for i in range(stack.edges)]
        assert all(m["active_sessions"] == 0 and m["edge_active_sessions"] == 0 for m in metrics)


@pytest.fixture
def crash_stack(tmp_path: Path, redis_server: RedisServer) -> Iterator[Stack]:
    env = {"ASR_ORPHAN_TIMEOUT_SECONDS": "3", "ASR_EDGE_HEARTBEAT_SECONDS": "0.5"}
    with running_stack(tmp_path, 0, edges=2, redis_url=redis_server.url, env=env) as stack:
        yield stack


async def test_kill_9_an_edge_then_resume_on_another(crash_stack: Stack, redis_server: RedisServer) -> None:
    stack = crash_stack
    pcm = pcm_of("three_utterances.wav")
    cut = 6 * 32000  # 6 s: the first sentence is done, the second (4.6-7.1 s) is being spoken
    r = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    async with aiohttp.ClientSession() as http:
        edge1 = stack.edge_port(0)
        edge1_id = (await _edge_metrics(http, edge1))["worker_id"]
        client = await connect(http, f"ws://127.0.0.1:{edge1}/v1/stream")
        started = client.messages[0]
        bystander = await connect(http, f"ws://127.0.0.1:{edge1}/v1/stream")  # never comes back
        sender = asyncio.create_task(client.stream(pcm[:cut], chunk_ms=100, realtime=1.0))
        first_final = await client.until("transcript", timeout=30)
        while not first_final["is_final"]:
            first_final = await client.until("transcript", timeout=30)
        await asyncio.wait_for(sender, 30)
        assert first_final["seq"] == 1 and wer(THREE_UTTERANCES[0], first_final["text"]) <= 0.25
        # The edge writes the session's audio and position to Redis once a second: wait for it.
        key = f"asr:session:{started['session_id']}"
        async with asyncio.timeout(15):
            while await r.hmget(key, "audio_bytes_received", "transcripts_sent") != [str(cut), "1"]:
                await asyncio.sleep(0.1)
        assert int(await r.scard(f"asr:edge:{edge1_id}:sessions")) == 2

        stack.procs["ingest-1"].kill()  # SIGKILL: no cleanup of any kind
        stack.procs["ingest-1"].wait(10)

        # Reconnect to the other edge with the token.
        ws = await asyncio.wait_for(http.ws_connect(f"ws://127.0.0.1:{stack.edge_port(1)}/v1/stream"), 10)
        again = Client(ws)
        assert (await again.recv() or {}).get("type") == "session_started"
        await again.send_json({"type": "reconnect", "previous_session_id": started["session_id"],
                               "resume_token": started["resume_token"], "last_seq": 1})
        recovered = await again.until("session_recovered", timeout=15)
        assert recovered["previous_session_id"] == started["session_id"]
        assert recovered["previous_metrics"] == {"audio_bytes_received": cut, "transcripts_sent": 1}
        assert recovered["message"] == "Previous session recovered. 1 transcripts completed."
        # The client sends what the service does not have yet, then ends.
        offset = recovered["previous_metrics"]["audio_bytes_received"]
        await again.stream(pcm[offset:], chunk_ms=100, realtime=2.0)
        await again.send_json({"type": "end"})
        ended = await again.until("session_ended", timeout=60)
        finals = again.finals()
        assert [f["seq"] for f in finals] == [2, 3], again.messages  # no gap, no duplicate
        for final, reference in zip(finals, THREE_UTTERANCES[1:], strict=True):
            assert wer(reference, final["text"]) <= 0.25, (reference, final["text"])
        assert ended["metrics"]["transcripts_sent"] == 3

        # The bystander's place on the dead edge is released within the orphan timeout.
        async with asyncio.timeout(15):
            while int(await r.scard(f"asr:edge:{edge1_id}:sessions")) != 0:
                await asyncio.sleep(0.2)
        async with asyncio.timeout(10):
            while int(await r.get("asr:count") or 0) != 0:
                await asyncio.sleep(0.2)
        await bystander.ws.close()

        # A wrong token gets RESUME_FAILED and no metrics.
        ws = await asyncio.wait_for(http.ws_connect(f"ws://127.0.0.1:{stack.edge_port(1)}/v1/stream"), 10)
        thief = Client(ws)
        await thief.recv()
        await thief.send_json({"type": "reconnect", "previous_session_id": started["session_id"],
                               "resume_token": "guess", "last_seq": 0})
        error = await thief.until("error", timeout=10)
        assert error["code"] == "RESUME_FAILED" and "metrics" not in json.dumps(error)
        await thief.ws.close()
    await r.aclose()
