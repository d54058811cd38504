"""Small client chunks are joined before they reach JetStream (`audio_batch_ms`), on a real
nats-server and an in-process edge: the AUDIO stream holds every byte in order and in fewer
messages, held audio goes out on its own once it has waited, control messages come after the audio
sent before them, and 0 turns joining off."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import nats

from common import metrics, subjects
from common.nats_server import NatsServer
from common.settings import Settings, replace
from tests.helpers import STEP, Client, connect, edge_server, stored_messages, ws_url

MS20 = 640  # 20 ms of 16 kHz s16le


def _settings(nats_server: NatsServer, batch_ms: int) -> Settings:
    return replace(Settings(), nats_url=nats_server.url, require_workers_ready=False, worker_id="edge-b",
                   vad_http_port=0, asr_http_port=0, end_flush_timeout_seconds=1.0, audio_batch_ms=batch_ms)


async def _stored(nats_server: NatsServer, session_id: str, shards: int) -> list[tuple[str, int, bytes]]:
    """(kind, offset, payload) of the session's messages in the AUDIO stream, in order, up to its
    ``end`` (an edge shutting down with the socket still open adds a drain)."""
    nc = await nats.connect(nats_server.url)
    try:
        stored = await stored_messages(nc.jetstream(), subjects.AUDIO_STREAM, subjects.audio(session_id, shards))
    finally:
        await nc.close()
    out: list[tuple[str, int, bytes]] = []
    for msg in stored:
        assert msg.headers is not None
        out.append((msg.headers[subjects.H_KIND], int(msg.headers[subjects.H_OFFSET]), msg.data or b""))
        if out[-1][0] == "end":
            break
    return out


async def _started(http: aiohttp.ClientSession, url: str) -> tuple[Client, str]:
    client = await connect(http, url)
    started: dict[str, Any] = client.messages[0]
    return client, str(started["session_id"])


async def test_20_ms_chunks_reach_the_stream_joined_whole_and_in_order(nats_server: NatsServer) -> None:
    settings = _settings(nats_server, 60)
    chunks = [bytes([i]) * MS20 for i in range(1, 12)]  # 220 ms in 11 chunks
    published = metrics.AUDIO_MESSAGES_PUBLISHED._value.get()
    async with edge_server(settings) as server, aiohttp.ClientSession() as http:
        client, session_id = await _started(http, ws_url(server))
        for chunk in chunks:
            await client.ws.send_bytes(chunk)
        await client.send_json({"type": "finalize"})  # sends what is held first
        await client.ws.send_bytes(chunks[0])
        await client.send_json({"type": "end"})
        await client.until("session_ended", timeout=STEP)
    stored = await _stored(nats_server, session_id, settings.audio_shards)
    kinds = [kind for kind, _, _ in stored]
    assert kinds == ["audio", "audio", "audio", "audio", "finalize", "audio", "end"], kinds
    audio = [(offset, data) for kind, offset, data in stored if kind == "audio"]
    assert b"".join(data for _, data in audio) == b"".join(chunks) + chunks[0]  # every byte, in order
    assert [len(data) for _, data in audio] == [3 * MS20, 3 * MS20, 3 * MS20, 2 * MS20, MS20]
    assert [offset for offset, _ in audio] == [0, 3 * MS20, 6 * MS20, 9 * MS20, 11 * MS20]
    assert metrics.AUDIO_MESSAGES_PUBLISHED._value.get() - published == 5  # what ops see: messages, not chunks


async def test_held_audio_goes_out_on_its_own_when_the_client_pauses(nats_server: NatsServer) -> None:
    settings = _settings(nats_server, 60)
    async with edge_server(settings) as server, aiohttp.ClientSession() as http:
        client, session_id = await _started(http, ws_url(server))
        await client.ws.send_bytes(b"\x05" * MS20)  # then nothing: no later chunk pushes it out
        async with asyncio.timeout(STEP):
            while not (stored := await _stored(nats_server, session_id, settings.audio_shards)):
                await asyncio.sleep(0.05)
        assert stored == [("audio", 0, b"\x05" * MS20)]
        await client.send_json({"type": "end"})
        await client.until("session_ended", timeout=STEP)


async def test_chunks_as_long_as_the_batch_and_batching_off_go_out_one_by_one(nats_server: NatsServer) -> None:
    for batch_ms, chunk in ((60, b"\x07" * 3200), (0, b"\x07" * MS20)):
        settings = _settings(nats_server, batch_ms)
        async with edge_server(settings) as server, aiohttp.ClientSession() as http:
            client, session_id = await _started(http, ws_url(server))
            for _ in range(5):
                await client.ws.send_bytes(chunk)
            await client.send_json({"type": "end"})
            await client.until("session_ended", timeout=STEP)
        stored = await _stored(nats_server, session_id, settings.audio_shards)
        assert [(kind, len(data)) for kind, _, data in stored] == [("audio", len(chunk))] * 5 + [("end", 0)], batch_ms


async def test_a_client_that_closes_right_after_a_small_chunk_has_it_stored(nats_server: NatsServer) -> None:
    settings = replace(_settings(nats_server, 1000), idle_timeout_seconds=5.0)  # held for up to 1 s
    async with edge_server(settings) as server, aiohttp.ClientSession() as http:
        client, session_id = await _started(http, ws_url(server))
        await client.ws.send_bytes(b"\x09" * 3200)  # both held (less than 1 s): the close comes before
        await client.ws.send_bytes(b"\x0a" * 114)  # they are due
        await client.ws.close()
        async with asyncio.timeout(STEP):
            while sum(len(d) for _, _, d in await _stored(nats_server, session_id, settings.audio_shards)) < 3314:
                await asyncio.sleep(0.05)
    stored = await _stored(nats_server, session_id, settings.audio_shards)
    assert stored == [("audio", 0, b"\x09" * 3200 + b"\x0a" * 114)]
