"""Hostile and slow clients against a real edge process: huge frames are refused without the
edge's memory growing, clients that stop reading are closed with 1008 while a good client on the
same edge keeps receiving every final, and floods are slowed down, then told RATE_LIMITED."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import nats
import pytest
from aiohttp.test_utils import TestServer
from nats.aio.client import Client as NATS

from cli.dev import Stack
from common import subjects
from common.messages import SessionFlushed, Transcript, encode
from common.nats_server import NatsServer
from common.settings import Settings, replace
from tests.helpers import Client, RawClient, connect, edge_server, rss_kib, running_stack, ws_url

pytestmark = pytest.mark.slow

MB = 1024 * 1024


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[Stack]:
    """One edge process and its nats-server; no workers (the tests play the workers on the bus)."""
    env = {"ASR_REQUIRE_WORKERS_READY": "false", "ASR_MAX_SEND_QUEUE_SIZE": "50", "ASR_SLOW_SEND_THRESHOLD": "10",
           "ASR_DRAIN_TIMEOUT_SECONDS": "2"}
    with running_stack(tmp_path, 0, ready_timeout=60, workers=False, env=env) as stack:
        yield stack


async def test_ten_megabyte_frames_are_refused_without_buffering(edge: Stack) -> None:
    pid = edge.procs["ingest"].pid
    before = rss_kib(pid)

    def text_then_binary() -> tuple[dict[str, object], dict[str, object], dict[str, object], int]:
        text = RawClient("127.0.0.1", edge.port)
        assert text.read_json()["type"] == "session_started"
        # 10 MB of base64 inside a JSON audio message: discarded as it streams in.
        text.send_streamed(1, 10 * MB, b"QUFB", prefix=b'{"type":"audio","data":"', suffix=b'"}')
        refused_text = text.read_json()
        text.send(1, b'{"type":"sing"}')  # still connected and parsing
        still_alive = text.read_json()
        text.close()
        binary = RawClient("127.0.0.1", edge.port)
        assert binary.read_json()["type"] == "session_started"
        with contextlib.suppress(OSError):  # the edge closes after reading the frame header
            binary.send_streamed(2, 10 * MB, b"\x01\x02")
        refused_binary = binary.read_json()
        code = binary.read_close()
        binary.close()
        return refused_text, still_alive, refused_binary, code

    refused_text, still_alive, refused_binary, code = await asyncio.to_thread(text_then_binary)
    assert refused_text["code"] == "CHUNK_TOO_LARGE" and "discarded" in str(refused_text["message"])
    assert still_alive["code"] == "INVALID_MESSAGE"
    assert refused_binary == {"type": "error", "code": "CHUNK_TOO_LARGE",
                              "message": "WebSocket frame exceeds the hard limit of 1048576 bytes"}
    assert code == 1009
    grown = rss_kib(pid) - before
    assert grown < 8 * 1024, f"edge RSS grew by {grown} KiB for 20 MB of refused frames"


async def _publish_results(nc: NATS, session_id: str, partials: int, finals: int, text: str) -> None:
    """Plays the ASR worker for one session: many partials with a final now and then."""
    every = max(1, partials // max(1, finals))
    index = 0
    for i in range(partials):
        # Each partial hears more than the one before (later end, a new last word), as a real
        # recognizer's do: the edge sends only partials that change what the client sees.
        msg = Transcript(session_id=session_id, utterance_id=f"u{index}", is_final=False, text=f"{text} w{i}",
                         start_s=0.0, end_s=1.0 + i / 100, published_at=time.time())
        await nc.publish(subjects.result_partial(session_id), encode(msg))
        if i % every == every - 1 and index < finals:
            index += 1
            final = Transcript(session_id=session_id, utterance_id=f"u{index - 1}", is_final=True, text=text,
                               start_s=0.0, end_s=1.0, final_index=index, published_at=time.time())
            await nc.publish(subjects.result_final(session_id), encode(final))
        if i % 50 == 0:
            await asyncio.sleep(0)


async def test_slow_consumers_are_closed_and_a_good_client_keeps_its_finals(edge: Stack) -> None:
    pid = edge.procs["ingest"].pid
    text = "word " * 100  # a long final: 500 characters
    slow = [await asyncio.to_thread(RawClient, "127.0.0.1", edge.port, rcvbuf=4096) for _ in range(7)]
    slow_ids = [str((await asyncio.to_thread(c.read_json))["session_id"]) for c in slow]
    nc = await nats.connect(edge.nats.url)
    try:
        async with aiohttp.ClientSession() as http:
            good = await connect(http, f"ws://127.0.0.1:{edge.port}/v1/stream")
            good_id = str(good.messages[0]["session_id"])
            reader = asyncio.create_task(_read_all(good))
            baseline = rss_kib(pid)
            peak = baseline
            # The slow ones stop reading (they never call recv again) while results pour in.
            await asyncio.gather(*(_publish_results(nc, sid, partials=3000, finals=30, text=text)
                                   for sid in slow_ids),
                                 _publish_results(nc, good_id, partials=300, finals=30, text=text))
            flushed = SessionFlushed(session_id=good_id, finals_total=30, audio_s=1.0)
            async with asyncio.timeout(30):
                while True:
                    peak = max(peak, rss_kib(pid))
                    async with http.get(f"http://127.0.0.1:{edge.port}/v1/metrics") as resp:
                        body = await resp.json()
                    if body["slow_client_closes"] == len(slow):
                        break
                    await asyncio.sleep(0.1)
            # A slow client that reads again within the grace period finds the close frame: 1008;
            # the last one never reads again, and its connection is reset after the grace period.
            codes = await asyncio.gather(*(asyncio.to_thread(c.read_close) for c in slow[:-1]))
            assert codes == [1008] * (len(slow) - 1)
            async with asyncio.timeout(30):
                while True:
                    peak = max(peak, rss_kib(pid))
                    async with http.get(f"http://127.0.0.1:{edge.port}/v1/metrics") as resp:
                        body = await resp.json()
                    if body["active_sessions"] == 1:
                        break
                    await asyncio.sleep(0.1)
            await good.send_json({"type": "end"})
            await nc.publish(subjects.result_flushed(good_id), encode(flushed))
            await asyncio.wait_for(reader, 30)
    finally:
        await nc.close()
        for c in slow:
            c.close()
    finals = good.finals()
    assert [f["seq"] for f in finals] == list(range(1, 31)), "the good client lost or reordered finals"
    assert good.close_code == 1000 and good.of_type("session_ended")
    assert body["messages_dropped"] > 0  # partials of the slow clients went first
    assert peak - baseline < 40 * 1024, f"edge RSS grew by {peak - baseline} KiB"


async def _read_all(client: Client) -> None:
    while await client.recv(timeout=60) is not None:
        pass


@pytest.fixture
async def strict_edge(nats_server: NatsServer) -> AsyncIterator[TestServer]:
    settings = replace(
        Settings(), nats_url=nats_server.url, require_workers_ready=False, vad_http_port=0, asr_http_port=0,
        api_keys="k" * 24 + ",second-key-0123456789", allowed_origins="https://captions.example.com",
        max_connections_per_ip=3, max_realtime_factor=2.0, rate_limit_burst_seconds=0.2,
        rate_limit_grace_seconds=0.5, drain_timeout_seconds=1.0,
    )
    async with edge_server(settings) as server:
        yield server


async def test_api_keys_origins_and_per_address_limit(strict_edge: TestServer) -> None:
    url = ws_url(strict_edge)
    key = "k" * 24
    async with aiohttp.ClientSession() as http:
        for headers, query, status in [
            ({}, "", 401),
            ({"Authorization": "Bearer wrong-key-wrong-key-wrong"}, "", 401),
            ({}, "?token=nope", 401),
            ({"Authorization": f"Bearer {key}", "Origin": "https://evil.example.com"}, "", 403),
        ]:
            async with http.get(url.replace("ws", "http", 1) + query, headers=headers) as resp:
                body = await resp.json()
                assert resp.status == status and body["code"] == "UNAUTHORIZED", (headers, query, body)
                assert key not in str(body)
        by_header = await connect(http, url, headers={"Authorization": f"Bearer {key}",
                                                       "Origin": "https://captions.example.com"})
        by_query = await connect(http, url + "?token=second-key-0123456789")
        third = await connect(http, url + f"?token={key}")
        async with http.get(url.replace("ws", "http", 1) + f"?token={key}") as resp:
            body = await resp.json()
            assert resp.status == 429 and body["code"] == "RATE_LIMITED"
        for c in (by_header, by_query, third):
            await c.ws.close()
        again = await connect(http, url + f"?token={key}")  # the places are given back
        await again.ws.close()


async def test_connection_churn_from_one_address_is_refused_past_the_rate(nats_server: NatsServer) -> None:
    settings = replace(Settings(), nats_url=nats_server.url, require_workers_ready=False, vad_http_port=0,
                       asr_http_port=0, max_connects_per_ip_per_minute=5)
    async with edge_server(settings) as server, aiohttp.ClientSession() as http:
        for _ in range(5):
            client = await connect(http, ws_url(server))
            await client.ws.close()
        async with http.get(str(server.make_url("/v1/stream"))) as resp:
            body = await resp.json()
        assert resp.status == 429 and body["code"] == "RATE_LIMITED"
        assert body["message"].startswith("Too many new connections from this address: at most 5 per minute")


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit(nats_server: NatsServer) -> None:
    """The edge behind a balancer (here: the test client at 127.0.0.1, trusted): every connection
    comes from the balancer's address, and X-Forwarded-For says which client each is for."""
    settings = replace(Settings(), nats_url=nats_server.url, require_workers_ready=False, vad_http_port=0,
                       asr_http_port=0, max_connections_per_ip=2, trusted_proxies="127.0.0.1")
    async with edge_server(settings) as server, aiohttp.ClientSession() as http:
        url = ws_url(server)

        def via(client_ip: str) -> dict[str, str]:
            return {"X-Forwarded-For": f"1.1.1.1, {client_ip}"}  # the leftmost: whatever the client wrote

        open_ = [await connect(http, url, headers=via(ip)) for ip in ("203.0.113.1", "203.0.113.1",
                                                                      "203.0.113.2", "203.0.113.2")]
        async with http.get(url.replace("ws", "http", 1), headers=via("203.0.113.1")) as resp:
            assert resp.status == 429 and (await resp.json())["code"] == "RATE_LIMITED"
        third = await connect(http, url, headers=via("203.0.113.3"))  # another client still gets in
        for c in (*open_, third):
            await c.ws.close()
    # Not trusted: the header is ignored, and the peer's own limit applies to every connection.
    untrusting = replace(settings, trusted_proxies="10.0.0.0/8")
    async with edge_server(untrusting) as server, aiohttp.ClientSession() as http:
        url = ws_url(server)
        first = [await connect(http, url, headers={"X-Forwarded-For": f"203.0.113.{i}"}) for i in (1, 2)]
        async with http.get(url.replace("ws", "http", 1), headers={"X-Forwarded-For": "203.0.113.3"}) as resp:
            assert resp.status == 429
        for c in first:
            await c.ws.close()


async def test_audio_faster_than_allowed_is_slowed_then_rate_limited(strict_edge: TestServer) -> None:
    url = ws_url(strict_edge) + "?token=" + "k" * 24
    audio_s = 3.0
    async with aiohttp.ClientSession() as http:
        client = await connect(http, url)
        reader = asyncio.create_task(_read_all(client))
        started = time.monotonic()
        await client.stream(bytes(int(audio_s * 32000)), chunk_ms=100)  # as fast as the socket takes it
        await client.send_json({"type": "sing"})  # answered only once all the audio before it was read
        async with asyncio.timeout(10):
            while len(client.of_type("error")) < 2:
                await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        await client.ws.close()
        await asyncio.wait_for(reader, 10)
    errors = client.of_type("error")
    assert [e["code"] for e in errors] == ["RATE_LIMITED", "INVALID_MESSAGE"], errors  # told once, not per chunk
    # At 2x real time after a 0.2 s burst, 3 s of audio cannot be taken in under 1.4 s.
    assert elapsed >= (audio_s - 0.2) / 2.0 * 0.95
