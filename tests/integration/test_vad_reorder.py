"""The VAD worker against a real nats-server when the AUDIO stream holds a session's messages out
of Asr-Seq order, as it does after a bus outage: the edge publishes again what was not
acknowledged (47..50 here) after the client library flushed what it had buffered (51..110).

CI once lost 6 s of a sentence this way: a new owner processed 47..50 (stored last), then read on
after their stream position and never found 51..110, stored before them. The finals' audio must be
exactly what an in-order run gives, byte for byte, with or without a change of owner mid-hole."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from common import bus, continuity, subjects
from common.bus_settings import BusSettings
from common.messages import AsrJob, job_decoder
from common.nats_server import NatsServer
from common.settings import Settings, replace
from ingest.stored_results import audio_position
from tests.conftest import pcm_of
from vad_worker.segmenter import FinalReady
from vad_worker.seq_order import Chunk
from vad_worker.session import SessionVad, segmenter_options
from vad_worker.vad_settings import VadSettings
from vad_worker.worker import VadWorker

CHUNK = 3200  # 100 ms
SPEECH = pcm_of("three_utterances.wav")
HOLE = range(47, 51)  # 4.6-5.0 s: inside the second sentence (4.3-7.4 s)
STORED_EARLY = range(51, 111)


def settings_for(server: NatsServer) -> Settings:
    return replace(Settings(), nats_url=server.url, partial_interval_ms=0, vad_reorder_wait_seconds=60.0,
                   audio_shards=1)


def reference_finals(settings: Settings) -> list[bytes]:
    state = SessionVad("reference", segmenter_options(VadSettings.from_settings(settings)), settings.vad_aggressiveness)
    events = state.process([Chunk(1, "audio", SPEECH), Chunk(2, "end", b"")])
    return [e.audio for e in events if isinstance(e, FinalReady)]


class Edge:
    """Publishes the session's messages the way ingest.audio_publisher does, in any order."""

    def __init__(self, js: JetStreamContext, session_id: str) -> None:
        self.js = js
        self.session_id = session_id
        self.chunks = [SPEECH[i : i + CHUNK] for i in range(0, len(SPEECH), CHUNK)]
        self.end_seq = len(self.chunks) + 1

    async def publish(self, seqs: range | list[int]) -> None:
        for seq in seqs:
            kind, payload = ("end", b"") if seq == self.end_seq else ("audio", self.chunks[seq - 1])
            headers = {subjects.H_MSG_ID: f"{self.session_id}.{seq}", subjects.H_KIND: kind,
                       subjects.H_SEQ: str(seq), subjects.H_OFFSET: str((seq - 1) * CHUNK),
                       subjects.H_SENT_AT: f"{time.time():.6f}"}
            await self.js.publish(subjects.audio(self.session_id, 1), payload, headers=headers)


async def processed_up_to(
    js: JetStreamContext, session_id: str, seq: int, timeout: float = 30.0
) -> continuity.VadCheckpoint:
    kv = await continuity.bucket(js, 3600)
    async with asyncio.timeout(timeout):
        while True:
            try:
                cp = continuity.decode((await kv.get(session_id)).value or b"")
                if cp.last_seq >= seq:
                    return cp
            except NotFoundError:
                pass
            await asyncio.sleep(0.1)


async def final_jobs(js: JetStreamContext, count: int, timeout: float = 30.0) -> list[AsrJob]:
    sub = await js.pull_subscribe_bind(durable=subjects.FINAL_CONSUMER, stream=subjects.JOBS_FINAL_STREAM)
    jobs: list[AsrJob] = []
    async with asyncio.timeout(timeout):
        while len(jobs) < count:
            try:
                msgs = await sub.fetch(count - len(jobs), timeout=1.0)
            except TimeoutError:
                continue
            for msg in msgs:
                jobs.append(job_decoder.decode(msg.data))
                await msg.ack()
    await sub.unsubscribe()
    return sorted(jobs, key=lambda j: j.final_index)


@pytest.mark.parametrize("new_owner", [False, True], ids=["same owner", "new owner mid-hole"])
async def test_messages_stored_out_of_order_give_the_in_order_finals(nats_server: NatsServer, new_owner: bool) -> None:
    settings = settings_for(nats_server)
    expected = reference_finals(settings)
    assert len(expected) == 3
    nc, js = await bus.connect_jetstream(BusSettings.from_settings(settings), "test-edge")
    edge = Edge(js, "reorder" + ("b" if new_owner else "a"))
    stop = asyncio.Event()
    worker = asyncio.create_task(VadWorker(VadSettings.from_settings(settings, worker_id="vad-a")).run(stop))
    try:
        await edge.publish(range(1, 47))
        await processed_up_to(js, edge.session_id, 46)
        await edge.publish(STORED_EARLY)  # 47..50 are missing: 51..110 wait behind the hole
        await asyncio.sleep(2.0)  # the worker has seen them, held them and acknowledged them
        cp = await processed_up_to(js, edge.session_id, 46)
        assert cp.last_seq == 46 and cp.read_from_stream_seq == 47, cp  # where 51 lies
        if new_owner:
            stop.set()
            await asyncio.wait_for(worker, 30)
            stop = asyncio.Event()
            worker = asyncio.create_task(VadWorker(VadSettings.from_settings(settings, worker_id="vad-b")).run(stop))
        await edge.publish(HOLE)  # published again after the outage: stored after 51..110
        await processed_up_to(js, edge.session_id, 110)  # a batch of its own: all of 47..110 go on
        await edge.publish(range(111, edge.end_seq + 1))
        jobs = await final_jobs(js, 3)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)
        await nc.close()
    assert [j.final_index for j in jobs] == [1, 2, 3]
    for job, audio in zip(jobs, expected, strict=True):
        assert job.audio == audio, (job.final_index, len(job.audio), len(audio))


async def test_a_resume_carries_on_after_the_messages_stored_without_a_hole(nats_server: NatsServer) -> None:
    """Where a resumed session's audio carries on (ingest.stored_results.audio_position): after
    the run of messages the stream holds without a hole, not after the last one stored, so the
    client is never told that the service holds audio it lost in an outage."""
    settings = settings_for(nats_server)
    nc, js = await bus.connect_jetstream(BusSettings.from_settings(settings), "test-edge")
    edge = Edge(js, "resumepos")
    try:
        await edge.publish(range(1, 47))
        await edge.publish(STORED_EARLY)  # 47..50 lost with the connection, before any retry
        assert await audio_position(js, edge.session_id, 1) == (46, 46 * CHUNK)
        await edge.publish(HOLE)  # stored last
        assert await audio_position(js, edge.session_id, 1) == (110, 110 * CHUNK)
        # With the VAD's checkpoint the messages it processed are not read again: one it
        # processed that the stream no longer holds does not stop the run.
        await js.delete_msg(subjects.AUDIO_STREAM, 5)
        assert await audio_position(js, edge.session_id, 1) == (4, 4 * CHUNK)
        kv = await continuity.bucket(js, 3600)
        await kv.put(edge.session_id, continuity.encode(continuity.VadCheckpoint(
            last_seq=20, last_stream_seq=20, samples=20 * CHUNK // 2)))
        assert await audio_position(js, edge.session_id, 1) == (110, 110 * CHUNK)
    finally:
        await nc.close()
