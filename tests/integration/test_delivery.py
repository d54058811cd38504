"""Delivery that never stalls and resume that scales, end to end on a real nats-server: the edge,
the VAD worker and the ASR worker run in this test's loop (the real model), so a test can fail a
transcription, lose a message between the ASR worker and the edge, or act as the ASR worker
itself to fill the RESULTS stream with hundreds of finals."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from asr_worker.asr_settings import AsrSettings
from asr_worker.transcriber import Transcriber
from asr_worker.worker import AsrWorker, transcriber_options
from cli import recordings
from common import bus, subjects
from common.bus_settings import BusSettings
from common.messages import Revision, Transcript, encode
from common.nats_server import NatsServer
from common.settings import Settings, replace
from ingest.connection import Connection
from tests.conftest import THREE_UTTERANCES, pcm_of
from tests.helpers import Client, connect, edge_server, wer, ws_url
from vad_worker.vad_settings import VadSettings
from vad_worker.worker import VadWorker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    return Transcriber(transcriber_options(AsrSettings.from_settings(Settings())))


class Stack:
    """Edge + VAD worker (+ ASR worker when given a model) in this loop, on one nats-server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, transcriber: Any | None) -> None:
        vad = VadWorker(VadSettings.from_settings(self.settings, worker_id="vad1"))
        self.tasks.append(asyncio.create_task(vad.run(self.stop)))
        if transcriber is not None:
            worker = AsrWorker(AsrSettings.from_settings(self.settings, worker_id="asr1"), transcriber)
            self.tasks.append(asyncio.create_task(worker.run(self.stop)))

    async def close(self) -> None:
        self.stop.set()
        _, pending = await asyncio.wait(self.tasks, timeout=30)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)



def settings_for(nats: NatsServer, **changes: Any) -> Settings:
    # speculative_finals off: the failing model below cannot tell a final's decode from its speculative
    # decode, and these tests are about final jobs (speculation: test_speculative_finals).
    base = dict(nats_url=nats.url, vad_http_port=0, asr_http_port=0, require_workers_ready=False,
                end_flush_timeout_seconds=60.0, final_repair_after_seconds=1.0, final_probe_seconds=1.0,
                speculative_finals=False)
    base.update(changes)
    return replace(Settings(), **base)


@pytest.fixture
async def stack(nats_server: NatsServer) -> AsyncIterator[Stack]:
    s = Stack(settings_for(nats_server))
    try:
        yield s
    finally:
        await s.close()


def texts(client: Client) -> list[str]:
    return [m["text"] for m in client.finals()]


async def test_a_final_that_fails_every_delivery_is_reported_and_the_next_ones_flow(
    stack: Stack, transcriber: Transcriber, caplog: pytest.LogCaptureFixture
) -> None:
    """The second utterance's job fails on every delivery (a model error): the client gets
    TRANSCRIPTION_FAILED naming that utterance, then the third final; nothing hangs. Also: no
    transcript text reaches the logs at INFO (log_transcripts is off by default)."""
    poisoned: set[str] = set()
    finals_seen: list[str] = []

    class FailsTheSecond:
        def transcribe(self, pcm: bytes, *, is_final: bool, prompt: str = "", context: bytes = b"") -> Any:
            if is_final:
                digest = hashlib.sha256(pcm).hexdigest()
                if digest not in finals_seen:
                    finals_seen.append(digest)
                if finals_seen.index(digest) == 1:
                    poisoned.add(digest)
                    raise RuntimeError("the model failed on this audio")
            return transcriber.transcribe(pcm, is_final=is_final, prompt=prompt, context=context)

    caplog.set_level(logging.INFO)
    stack.start(FailsTheSecond())
    async with aiohttp.ClientSession() as http, edge_server(stack.settings) as server:
        client = await connect(http, ws_url(server))
        await client.stream(pcm_of("three_utterances.wav"), realtime=4.0)
        await client.send_json({"type": "end"})
        ended = await client.until("session_ended", timeout=90)
    assert poisoned, "the second final never reached the model"
    kinds = [(m["type"], m.get("code")) for m in client.messages
             if m["type"] == "error" or (m["type"] == "transcript" and m["is_final"])]
    assert kinds == [("transcript", None), ("error", "TRANSCRIPTION_FAILED"), ("transcript", None)], kinds
    error = client.of_type("error")[0]
    assert error["utterance_id"] == "u1" and error["final_index"] == 2
    finals = client.finals()
    assert [f["seq"] for f in finals] == [1, 2]
    assert wer(THREE_UTTERANCES[0], finals[0]["text"]) <= 0.25
    assert wer(THREE_UTTERANCES[2], finals[1]["text"]) <= 0.25
    assert ended["metrics"]["transcripts_sent"] == 2
    info = " ".join(r.getMessage().lower() for r in caplog.records if r.levelno >= logging.INFO)
    for final in finals:
        words = final["text"].lower().strip(" .!?")
        assert words and words not in info, f"transcript text in an INFO log: {words!r}"


async def test_a_final_lost_between_the_asr_worker_and_the_edge_arrives_before_end(
    stack: Stack, transcriber: Transcriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live (core NATS) copies of the 2nd and the last final are dropped on their way into the
    edge; the edge finds both in the RESULTS stream within a bounded time, mid-session."""
    dropped: list[str] = []
    original = Connection._on_result
    seen = {"n": 0}

    async def drop_second_and_last(self: Connection, msg: Msg) -> None:
        if msg.subject.endswith(".final"):
            seen["n"] += 1
            if seen["n"] in (2, 3):
                dropped.append(msg.subject)
                return
        await original(self, msg)

    monkeypatch.setattr(Connection, "_on_result", drop_second_and_last)
    stack.start(transcriber)
    async with aiohttp.ClientSession() as http, edge_server(stack.settings) as server:
        client = await connect(http, ws_url(server))
        await client.stream(pcm_of("three_utterances.wav"), realtime=4.0)
        # Trailing silence lets the VAD end the last utterance without `end`.
        await client.stream(b"\0" * 32000, realtime=4.0)
        async with asyncio.timeout(90):
            while len(client.finals()) < 3:
                assert await client.recv(90) is not None
        assert len(dropped) == 2, "the test did not drop the live copies"
        await client.send_json({"type": "end"})
        await client.until("session_ended", timeout=60)
    finals = client.finals()
    assert [f["seq"] for f in finals] == [1, 2, 3]
    for said, final in zip(THREE_UTTERANCES, finals, strict=True):
        assert wer(said, final["text"]) <= 0.25


async def publish_finals(settings: Settings, session_id: str, first: int, last: int) -> None:
    """Acts as the ASR worker: stores finals ``first..last`` of the session in RESULTS."""
    nc, js = await bus.connect_jetstream(BusSettings.from_settings(settings), "test-asr")
    try:
        for i in range(first, last + 1):
            result = Transcript(session_id=session_id, utterance_id=f"u{i - 1}", is_final=True,
                                text=f"final number {i}", start_s=float(i), end_s=i + 0.5, final_index=i)
            await js.publish(subjects.result_final(session_id), encode(result),
                             headers={subjects.H_MSG_ID: subjects.final_result_id(session_id, i)})
    finally:
        await bus.close(nc)


async def publish_revision(settings: Settings, session_id: str, final_index: int, text: str) -> None:
    """Acts as the ASR worker: stores the revision of final ``final_index`` in RESULTS."""
    nc, js = await bus.connect_jetstream(BusSettings.from_settings(settings), "test-asr")
    try:
        revision = Revision(session_id=session_id, utterance_id=f"u{final_index - 1}", final_index=final_index,
                            text=text, start_s=float(final_index), end_s=final_index + 0.5)
        await js.publish(subjects.result_revision(session_id), encode(revision),
                         headers={subjects.H_MSG_ID: subjects.revision_result_id(session_id, final_index)})
    finally:
        await bus.close(nc)


async def client_with_finals(http: aiohttp.ClientSession, server: Any, settings: Settings,
                             count: int) -> tuple[Client, dict[str, Any]]:
    """A client whose session has finals 1..``count`` stored (acting as the ASR worker) and
    received; and its ``session_started``."""
    client = await connect(http, ws_url(server))
    started = client.messages[0]
    await publish_finals(settings, started["session_id"], 1, count)
    async with asyncio.timeout(30):
        while len(client.finals()) < count:
            await client.recv(30)
    return client, started


async def drop_connection(client: Client) -> None:
    """The client's network goes away: no close handshake."""
    transport = client.ws._response.connection.transport  # type: ignore[union-attr]
    assert transport is not None
    transport.abort()


async def reconnect(http: aiohttp.ClientSession, url: str, started: dict[str, Any], last_seq: int) -> Client:
    client = await connect(http, url)
    await client.send_json({"type": "reconnect", "previous_session_id": started["session_id"],
                            "resume_token": started["resume_token"], "last_seq": last_seq})
    await client.until("session_recovered", timeout=30)
    return client


async def test_resume_with_last_seq_0_after_300_finals_gets_all_300_in_order(nats_server: NatsServer) -> None:
    """The client's queue holds 20 messages; the 300 missed finals are paced into it, never 1008."""
    settings = settings_for(nats_server, max_send_queue_size=20)
    async with aiohttp.ClientSession() as http, edge_server(settings) as server:
        first = await connect(http, ws_url(server))
        started = first.messages[0]
        await publish_finals(settings, started["session_id"], 1, 300)
        async with asyncio.timeout(60):
            while len(first.finals()) < 300:
                await first.recv(30)
        await first.ws.close()
        again = await reconnect(http, ws_url(server), started, last_seq=0)
        async with asyncio.timeout(60):
            while len(again.finals()) < 300:
                msg = await again.recv(30)
                assert msg is not None, f"closed {again.close_code}"
        assert [f["seq"] for f in again.finals()] == list(range(1, 301))
        assert [f["text"] for f in again.finals()] == [f"final number {i}" for i in range(1, 301)]
        await again.send_json({"type": "keepalive"})
        assert not again.ws.closed


async def test_a_resumed_client_and_the_stored_transcript_get_finals_as_revised(nats_server: NatsServer) -> None:
    """Revisions are stored in RESULTS after their finals: the live client gets a `revision`, a
    client that resumes from seq 0 gets the final again with the revised text (and no `revision`),
    one that resumes with every final gets the `revision` again, and `asr transcript`'s reader
    returns the revised text."""
    settings = settings_for(nats_server)
    async with aiohttp.ClientSession() as http, edge_server(settings) as server:
        first, started = await client_with_finals(http, server, settings, 3)
        sid = started["session_id"]
        await publish_revision(settings, sid, 2, "the second final as revised")
        live = await first.until("revision", timeout=30)
        assert (live["seq"], live["text"]) == (2, "the second final as revised")
        await drop_connection(first)
        again = await reconnect(http, ws_url(server), started, last_seq=0)
        async with asyncio.timeout(30):
            while len(again.finals()) < 3:
                assert await again.recv(30) is not None
        assert [(f["seq"], f["text"]) for f in again.finals()] == [
            (1, "final number 1"), (2, "the second final as revised"), (3, "final number 3")]
        await again.send_json({"type": "keepalive"})
        await asyncio.sleep(0.5)
        assert again.of_type("revision") == []
        # A client that has all three finals may have missed the revision: it comes again.
        await drop_connection(again)
        third = await reconnect(http, ws_url(server), started, last_seq=3)
        resent = await third.until("revision", timeout=30)
        assert (resent["seq"], resent["text"]) == (2, "the second final as revised")
        assert third.finals() == []
    nc, js = await bus.connect_jetstream(BusSettings.from_settings(settings), "test-reader")
    try:
        finals, _ = await recordings.read_results(js, sid)
    finally:
        await bus.close(nc)
    assert [f.text for f in finals] == ["final number 1", "the second final as revised", "final number 3"]


async def test_resume_of_a_session_older_than_the_results_retention_continues_with_the_next_seq(
    nats_server: NatsServer,
) -> None:
    settings = settings_for(nats_server, results_retention_seconds=5)
    async with aiohttp.ClientSession() as http, edge_server(settings) as server:
        first, started = await client_with_finals(http, server, settings, 5)
        sid = started["session_id"]
        await drop_connection(first)
        # Wait until the stream has forgotten the session's finals.
        nc, js = await bus.connect_jetstream(BusSettings.from_settings(settings), "test-probe")
        try:
            async with asyncio.timeout(60):
                while (await js.stream_info(subjects.RESULTS_STREAM)).state.messages:
                    await asyncio.sleep(0.5)
        finally:
            await bus.close(nc)
        again = await reconnect(http, ws_url(server), started, last_seq=5)
        recovered = again.of_type("session_recovered")[0]
        assert recovered["previous_metrics"]["transcripts_sent"] == 5
        await publish_finals(settings, sid, 6, 6)
        final = await again.until("transcript", timeout=30)
        assert final["is_final"] and final["seq"] == 6 and final["text"] == "final number 6"


async def test_a_connection_cannot_resume_itself_and_caps_hold(nats_server: NatsServer) -> None:
    settings = settings_for(nats_server, max_sessions_per_worker=2)
    async with aiohttp.ClientSession() as http, edge_server(settings) as server:
        clients = [await connect(http, ws_url(server)) for _ in range(2)]
        for client in clients:
            started = client.messages[0]
            await client.send_json({"type": "reconnect", "previous_session_id": started["session_id"],
                                    "resume_token": started["resume_token"], "last_seq": 0})
            error = await client.until("error")
            assert error["code"] == "RESUME_FAILED" and "own session" in error["message"]
        async with http.get(server.make_url("/v1/metrics")) as resp:
            assert (await resp.json())["active_sessions"] == 2
        third = await http.ws_connect(ws_url(server))
        refused = await third.receive_json(timeout=10)
        assert refused["code"] == "CAPACITY"
        await third.close()
        for client in clients:  # the sessions still work as themselves
            await client.send_json({"type": "keepalive"})
            assert not client.ws.closed


async def test_two_racing_reconnects_leave_exactly_one_holder(nats_server: NatsServer) -> None:
    settings = settings_for(nats_server)
    async with aiohttp.ClientSession() as http, edge_server(settings) as server:
        first = await connect(http, ws_url(server))
        started = first.messages[0]
        await drop_connection(first)
        a, b = await asyncio.gather(*(connect(http, ws_url(server)) for _ in range(2)))
        request = {"type": "reconnect", "previous_session_id": started["session_id"],
                   "resume_token": started["resume_token"], "last_seq": 0}
        await asyncio.gather(a.send_json(request), b.send_json(request))

        # The takeover closes exactly one of them: the one with the lower epoch. Each socket has
        # one reader to its end and the test polls what they saw. (An earlier version raced two
        # `until` tasks under asyncio.wait and cancelled the other one: with 50 ms more work in a
        # resume it sometimes woke only at its 30 s timeout although the loser's close frame had
        # arrived at once, and by then the winner had hit its idle timeout.)
        readers = [asyncio.create_task(read_to_the_end(c)) for c in (a, b)]
        try:
            async with asyncio.timeout(30):
                while a.close_code is None and b.close_code is None:
                    await asyncio.sleep(0.05)
            loser, winner = (a, b) if a.close_code is not None else (b, a)
            assert loser.close_code == 1000
            async with asyncio.timeout(10):
                while True:
                    async with http.get(server.make_url("/v1/metrics")) as resp:
                        if (await resp.json())["active_sessions"] == 1:
                            break
                    await asyncio.sleep(0.1)
            assert winner.close_code is None, (winner.close_code, winner.last_frame)
            assert loser.last_frame is not None and loser.last_frame.extra == "Session resumed on another connection"
            async with asyncio.timeout(30):
                while not winner.of_type("session_recovered"):
                    assert winner.close_code is None, f"winner closed: {winner.last_frame}"
                    await asyncio.sleep(0.05)
            await publish_finals(settings, started["session_id"], 1, 1)
            async with asyncio.timeout(30):
                while not winner.finals():
                    assert winner.close_code is None, f"winner closed: {winner.last_frame}"
                    await asyncio.sleep(0.05)
            assert [f["seq"] for f in winner.finals()] == [1]
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)


async def read_to_the_end(client: Client) -> None:
    while await client.recv(3600) is not None:
        pass


async def test_a_redis_outage_during_a_close_still_releases_the_place(
    nats_server: NatsServer, tmp_path: Any
) -> None:
    from tests.conftest import RedisServer

    redis = RedisServer(tmp_path / "redis", persistent=True)
    try:
        settings = settings_for(nats_server, redis_url=redis.url, edge_heartbeat_seconds=0.2)
        async with aiohttp.ClientSession() as http, edge_server(settings) as server:
            client = await connect(http, ws_url(server))
            assert redis.client().get("asr:count") == b"1"
            redis.stop()
            await client.ws.close()
            async with asyncio.timeout(15):
                while not server.app[_context_key()].unreleased:
                    await asyncio.sleep(0.05)
            redis.start()
            async with asyncio.timeout(15):
                while redis.client().get("asr:count") != b"0":
                    await asyncio.sleep(0.1)
            assert not server.app[_context_key()].unreleased
    finally:
        redis.stop()


def _context_key() -> Any:
    from ingest.app import CONTEXT

    return CONTEXT


async def test_ten_thousand_connects_and_disconnects_keep_the_memory_store_flat() -> None:
    import tracemalloc
    import uuid

    from ingest.session_store import Admit, MemorySessionStore, SessionRecord

    store = MemorySessionStore("edge", 100, 100, retention_s=3600, max_released=1000)
    tracemalloc.start()
    sizes = []
    try:
        for i in range(10_000):
            record = SessionRecord(session_id=uuid.uuid4().hex, edge_id="edge", resume_token_hash="h", owner="o")
            assert await store.admit(record) is Admit.OK
            assert await store.release(record.session_id, "o", "closed")
            if i % 2500 == 2499:
                sizes.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert len(store) == 1000  # released records are bounded in number
    assert await store.counts() == (0, 0)
    # Once the bound is reached, memory stays where it is (within 5 %).
    assert max(sizes[1:]) <= sizes[1] * 1.05, sizes


async def test_a_nats_restart_under_a_live_session_loses_no_audio(nats_server: NatsServer) -> None:
    """nats-server stops for a few seconds and comes back on the same store while a client keeps
    streaming: the edge pauses reading (TCP pushes back), publishes the unacknowledged audio again,
    and the AUDIO stream ends up with every byte exactly once, in order; no 1011."""
    settings = settings_for(nats_server, publish_timeout_seconds=1.0, bus_outage_timeout_seconds=30.0)
    pcm = bytes(range(256)) * 250  # 2 s of "audio" with a recognisable byte pattern
    async with aiohttp.ClientSession() as http, edge_server(settings) as server:
        client = await connect(http, ws_url(server))
        sid = client.messages[0]["session_id"]
        await client.stream(pcm[:32000], realtime=4.0)
        down = asyncio.create_task(asyncio.to_thread(nats_server.stop))
        await client.stream(pcm[32000:48000], realtime=4.0)  # sent while the bus is going away
        await down
        async with http.get(server.make_url("/readyz")) as resp:
            assert resp.status == 503  # the outage shows
        sending = asyncio.create_task(client.stream(pcm[48000:], realtime=4.0))
        await asyncio.sleep(1.0)  # the outage lasts a while (the edge is not reading meanwhile)
        await asyncio.to_thread(nats_server.restart)
        await asyncio.wait_for(sending, 60)
        await client.send_json({"type": "keepalive"})
        nc, js = await bus.connect_jetstream(BusSettings.from_settings(settings), "test-reader")
        try:
            subject = subjects.audio(sid, settings.audio_shards)
            stored: dict[int, bytes] = {}
            async with asyncio.timeout(60):
                while sum(map(len, stored.values())) < len(pcm):
                    stored, seq = {}, 0
                    while True:
                        try:
                            msg = await js.get_msg(subjects.AUDIO_STREAM, seq=seq + 1, next=True, subject=subject)
                        except NotFoundError:  # the end of what is stored
                            break
                        seq = msg.seq or seq + 1
                        audio_seq = int((msg.headers or {})[subjects.H_SEQ])
                        assert audio_seq not in stored, f"message {audio_seq} stored twice"
                        stored[audio_seq] = msg.data or b""
                    if sum(map(len, stored.values())) < len(pcm):
                        await asyncio.sleep(0.2)
        finally:
            await bus.close(nc)
        # Every message exactly once (Asr-Seq 1..n, no gap); a message lost in flight when the
        # server died is stored after newer ones, so consumers order by Asr-Seq.
        assert sorted(stored) == list(range(1, len(stored) + 1))
        got = b"".join(stored[i] for i in sorted(stored))
        assert got == pcm
        assert client.close_code is None and not client.ws.closed
        assert not client.of_type("error"), client.messages
