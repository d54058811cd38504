"""Caption fan-out on a real edge (in process) and a real nats-server: read-only viewers of one
speaker's session get every final in order with the speaker's seq, a late joiner first gets the
last finals from the RESULTS stream, a viewer that stops reading is closed with 1008 while the
others keep every final, and bad tokens and a full edge get clear answers.

The tests play the ASR and VAD workers on the bus (finals on results.<session>.final, through
JetStream as the ASR worker publishes them); the browser tests run the same path with the model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import nats
import pytest
from aiohttp.test_utils import TestServer
from nats.aio.client import Client as NATS

from common import subjects
from common.messages import SessionFlushed, Transcript, encode
from common.nats_server import NatsServer
from common.settings import Settings, replace
from ingest.edge_settings import EdgeSettings
from ingest.viewer_tokens import token_valid
from tests.helpers import STEP, Client, RawClient, connect, edge_server, ws_url


def _settings(nats_server: NatsServer, **changes: Any) -> Settings:
    base = dict(nats_url=nats_server.url, require_workers_ready=False, worker_id="edge-c", vad_http_port=0,
                asr_http_port=0, end_flush_timeout_seconds=1.0, viewer_backlog_finals=3,
                viewer_token_secret="a-test-secret-of-enough-length")
    base.update(changes)
    return replace(Settings(), **base)


@pytest.fixture
async def edge(nats_server: NatsServer) -> AsyncIterator[TestServer]:
    async with edge_server(_settings(nats_server)) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[NATS]:
    nc = await nats.connect(nats_server.url)
    try:
        yield nc
    finally:
        await nc.close()


def captions_url(server: TestServer, session_id: str, token: str, partials: bool = False) -> str:
    url = str(server.make_url(f"/v1/sessions/{session_id}/captions")).replace("http", "ws", 1)
    return f"{url}?token={token}" + ("&partials=1" if partials else "")


async def speaker_of(http: aiohttp.ClientSession, server: TestServer) -> Client:
    """A speaker session whose results subscription the server has processed (a flush of the
    edge's NATS connection), so finals published right away reach it live."""
    from ingest.app import CONTEXT

    client = await connect(http, ws_url(server))
    await asyncio.wait_for(server.app[CONTEXT].nc.flush(), STEP)
    return client


async def viewer(http: aiohttp.ClientSession, url: str) -> Client:
    ws = await asyncio.wait_for(http.ws_connect(url, max_msg_size=0), STEP)
    return Client(ws)


async def publish_final(nc: NATS, session_id: str, index: int, text: str) -> None:
    """As the ASR worker does: through JetStream, so the RESULTS stream keeps it."""
    final = Transcript(session_id=session_id, utterance_id=f"u{index}", is_final=True, text=text,
                       start_s=float(index), end_s=index + 0.8, final_index=index, published_at=time.time())
    ack = await nc.jetstream().publish(subjects.result_final(session_id), encode(final))
    assert ack.stream == subjects.RESULTS_STREAM


async def publish_partial(nc: NATS, session_id: str, utterance: int, text: str) -> None:
    partial = Transcript(session_id=session_id, utterance_id=f"u{utterance}", is_final=False, text=text,
                         start_s=float(utterance), end_s=utterance + 0.5)
    await nc.publish(subjects.result_partial(session_id), encode(partial))


async def end_session(nc: NATS, session_id: str, finals_total: int) -> None:
    flushed = SessionFlushed(session_id=session_id, finals_total=finals_total, audio_s=10.0)
    await nc.jetstream().publish(subjects.result_flushed(session_id), encode(flushed))


async def finals_until(client: Client, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    async with asyncio.timeout(timeout):
        while len(client.finals()) < count:
            msg = await client.recv()
            assert msg is not None, f"viewer closed ({client.close_code}) after {client.messages}"
    return client.finals()


async def edge_metrics(http: aiohttp.ClientSession, server: TestServer) -> dict[str, Any]:
    async with http.get(server.make_url("/v1/metrics")) as resp:
        body: dict[str, Any] = await resp.json()
        return body


async def test_viewers_get_the_speakers_finals_in_order_with_its_seq(
    edge: TestServer, http: aiohttp.ClientSession, bus: NATS
) -> None:
    speaker = await speaker_of(http, edge)
    started = speaker.messages[0]
    sid, token = started["session_id"], started["viewer_token"]
    assert token_valid(_settings_of(edge), sid, token)
    plain = await viewer(http, captions_url(edge, sid, token))
    with_partials = await viewer(http, captions_url(edge, sid, token, partials=True))
    await _until_viewers(http, edge, 2)

    await publish_partial(bus, sid, 1, "please call")
    # Out of order, with an empty final (nothing said) in between: viewers see seq 1, 2, 3 in order.
    await publish_final(bus, sid, 2, "")
    await publish_final(bus, sid, 3, "We will meet at noon.")
    await publish_final(bus, sid, 1, "Please call me back.")
    await publish_partial(bus, sid, 1, "a late partial of a finished utterance")
    await publish_final(bus, sid, 4, "Open the window.")
    await end_session(bus, sid, 4)

    expected = [(1, "Please call me back."), (2, "We will meet at noon."), (3, "Open the window.")]
    for client in (plain, with_partials, speaker):
        finals = await finals_until(client, 3)
        assert [(f["seq"], f["text"]) for f in finals] == expected, client.messages
    for client in (plain, with_partials):
        ended = await client.until("session_ended")
        assert ended["finals"] == 3
        assert await client.recv() is None and client.close_code == 1000
    assert [m["text"] for m in with_partials.of_type("transcript") if not m["is_final"]] == ["please call"]
    assert not [m for m in plain.messages if m["type"] == "transcript" and not m["is_final"]]
    await speaker.ws.close()


def _settings_of(server: TestServer) -> EdgeSettings:
    from ingest.app import SETTINGS

    return server.app[SETTINGS]


async def _until_viewers(http: aiohttp.ClientSession, server: TestServer, count: int) -> None:
    """Until the edge counts ``count`` joined viewers (their feed is subscribed)."""
    from ingest.captions import HUB

    hub = server.app[HUB]
    async with asyncio.timeout(STEP):
        while sum(len(f.viewers) for f in hub.feeds.values()) != count:
            await asyncio.sleep(0.02)


async def test_a_late_joiner_first_gets_the_last_finals_from_the_stream(
    edge: TestServer, http: aiohttp.ClientSession, bus: NATS
) -> None:
    speaker = await speaker_of(http, edge)
    sid, token = speaker.messages[0]["session_id"], speaker.messages[0]["viewer_token"]
    for index in range(1, 6):
        await publish_final(bus, sid, index, f"Sentence number {index}.")
    await finals_until(speaker, 5)

    # No feed on this edge yet: the first viewer's join reads the RESULTS stream.
    late = await viewer(http, captions_url(edge, sid, token))
    backlog = await finals_until(late, 3)
    assert [f["seq"] for f in backlog] == [3, 4, 5]  # viewer_backlog_finals = 3
    # A second late joiner is served from the feed already in memory, the same way.
    later = await viewer(http, captions_url(edge, sid, token))
    assert [f["seq"] for f in await finals_until(later, 3)] == [3, 4, 5]
    await _until_viewers(http, edge, 2)
    await publish_final(bus, sid, 6, "And one more.")
    for client in (late, later):
        finals = await finals_until(client, 4)
        assert [f["seq"] for f in finals] == [3, 4, 5, 6] and finals[-1]["text"] == "And one more."

    # After the session ended, a joiner gets the backlog and session_ended, then close 1000.
    await end_session(bus, sid, 6)
    await late.until("session_ended")
    after = await viewer(http, captions_url(edge, sid, token))
    ended = await after.until("session_ended")
    assert ended["finals"] == 6 and [f["seq"] for f in after.finals()] == [4, 5, 6]
    assert await after.recv() is None and after.close_code == 1000
    await speaker.ws.close()


async def test_a_viewer_that_stops_reading_is_dropped_and_the_others_keep_every_final(
    nats_server: NatsServer, http: aiohttp.ClientSession, bus: NATS
) -> None:
    settings = _settings(nats_server, max_send_queue_size=8, client_send_buffer_bytes=16384)
    async with edge_server(settings) as edge:
        speaker = await speaker_of(http, edge)
        sid, token = speaker.messages[0]["session_id"], speaker.messages[0]["viewer_token"]
        path = f"/v1/sessions/{sid}/captions?token={token}"
        port = edge.port
        assert port is not None
        stalled = await asyncio.to_thread(RawClient, "127.0.0.1", port, path, 4096)
        assert stalled.status == 101
        good = [await viewer(http, captions_url(edge, sid, token)) for _ in range(3)]
        await _until_viewers(http, edge, 4)
        text = "word " * 1600  # an 8 KB final: the stalled viewer's socket fills after a few
        total, closed_at = 60, 0
        for index in range(1, total + 1):
            await publish_final(bus, sid, index, f"{index} {text}")
            # Every reading viewer has this final before the next is published: the stalled
            # one never holds the others back.
            for client in good:
                assert len(await finals_until(client, index)) == index
            if not closed_at and (await edge_metrics(http, edge))["slow_client_closes"] == 1:
                closed_at = index
                # Reading again, it finds its data, then the end: the close frame 1008, or a
                # reset when that frame was still in the edge's buffer as the edge let go of it.
                assert await asyncio.to_thread(_read_to_the_end, stalled) in (1008, None)
        assert 0 < closed_at < total, "the stalled viewer was never closed"
        await _until_viewers(http, edge, 3)
        for client in good:
            assert [f["seq"] for f in client.finals()] == list(range(1, total + 1))
        stalled.close()
        await speaker.ws.close()


def _read_to_the_end(client: RawClient) -> int | None:
    """The close code the server sent, or None when the connection was closed or reset without it
    (a read that times out raises)."""
    try:
        return client.read_close()
    except ConnectionError:
        return None


async def test_bad_tokens_are_refused_before_the_upgrade(
    edge: TestServer, http: aiohttp.ClientSession
) -> None:
    speaker = await speaker_of(http, edge)
    sid, token = speaker.messages[0]["session_id"], speaker.messages[0]["viewer_token"]
    other = await connect(http, ws_url(edge))
    cases = [
        f"/v1/sessions/{sid}/captions",  # no token
        f"/v1/sessions/{sid}/captions?token=nope",
        f"/v1/sessions/{other.messages[0]['session_id']}/captions?token={token}",  # another session's
        f"/v1/sessions/{sid}/captions?token={speaker.messages[0]['resume_token']}",  # not a viewer token
        f"/v1/sessions/bad.id/captions?token={token}",
    ]
    for path in cases:
        async with http.get(edge.make_url(path)) as resp:
            assert resp.status == 401, path
            assert await resp.json() == {"type": "error", "code": "UNAUTHORIZED",
                                         "message": "Unknown session or wrong viewer token"}
    # A token signed with another secret (another cluster) is refused too.
    assert not token_valid(dataclasses.replace(_settings_of(edge), viewer_token_secret="x" * 32), sid, token)
    await speaker.ws.close()
    await other.ws.close()


async def test_viewers_past_the_edge_cap_get_capacity_and_speakers_are_unaffected(
    nats_server: NatsServer, http: aiohttp.ClientSession, bus: NATS
) -> None:
    async with edge_server(_settings(nats_server, max_viewers_per_edge=2, max_sessions_per_worker=1)) as edge:
        speaker = await speaker_of(http, edge)
        sid, token = speaker.messages[0]["session_id"], speaker.messages[0]["viewer_token"]
        viewers = [await viewer(http, captions_url(edge, sid, token)) for _ in range(2)]
        await _until_viewers(http, edge, 2)
        refused = await viewer(http, captions_url(edge, sid, token))
        error = await refused.recv()
        assert error == {"type": "error", "code": "CAPACITY",
                         "message": "Caption viewers at capacity on this edge (2), try again later"}
        assert await refused.recv() is None and refused.close_code == 1013
        # Viewers take no transcription capacity: the one speaker slot is the speaker's, and its
        # finals still reach it and both viewers.
        body = await edge_metrics(http, edge)
        assert body["edge_active_sessions"] == 1 and body["errors_by_code"]["CAPACITY"] == 1
        await publish_final(bus, sid, 1, "Still here.")
        for client in (speaker, *viewers):
            assert [f["text"] for f in await finals_until(client, 1)] == ["Still here."]
        # A viewer leaving frees its place.
        await viewers[0].ws.close()
        await _until_viewers(http, edge, 1)
        again = await viewer(http, captions_url(edge, sid, token))
        assert [f["seq"] for f in await finals_until(again, 1)] == [1]
        await speaker.ws.close()


async def test_a_draining_edge_closes_its_viewers_with_1012_after_their_finals(
    nats_server: NatsServer, http: aiohttp.ClientSession, bus: NATS
) -> None:
    async with edge_server(_settings(nats_server, drain_timeout_seconds=2.0)) as edge:
        speaker = await speaker_of(http, edge)
        sid, token = speaker.messages[0]["session_id"], speaker.messages[0]["viewer_token"]
        watcher = await viewer(http, captions_url(edge, sid, token))
        await _until_viewers(http, edge, 1)
        await publish_final(bus, sid, 1, "Before the drain.")
        assert [f["seq"] for f in await finals_until(watcher, 1)] == [1]
        shutdown = asyncio.create_task(edge.close())  # SIGTERM's path: on_shutdown, then cleanup
        async with asyncio.timeout(30):
            while await watcher.recv() is not None:
                pass
        assert watcher.close_code == 1012, watcher.messages
        await asyncio.wait_for(shutdown, 30)
