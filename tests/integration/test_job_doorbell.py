"""An idle ASR worker does not poll: it parks until the VAD worker's doorbell says jobs were stored,
or a final it put back for another try comes due. On a real nats-server; the park is made long
(60 s) so that only the doorbell or the retry can wake the worker within these tests' bounds."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from asr_worker import worker as asr
from asr_worker.asr_settings import AsrSettings
from asr_worker.transcriber import Recognition
from asr_worker.worker import AsrWorker
from common import bus, subjects
from common.bus_settings import BusSettings
from common.messages import AsrJob, encode
from common.nats_server import NatsServer
from common.settings import Settings, replace
from tests.conftest import pcm_of
from tests.helpers import connect, edge_server, final_jobs_waiting, ws_url
from vad_worker.vad_settings import VadSettings
from vad_worker.worker import VadWorker


class Recorder:
    """A stand-in model: records the finals it is given; fails the first ``failures`` of them."""

    def __init__(self, failures: int = 0) -> None:
        self.finals: list[bytes] = []
        self.called = threading.Event()
        self.failures = failures

    def transcribe(self, pcm: bytes, *, is_final: bool, **_kwargs: Any) -> Recognition:
        if is_final:
            self.finals.append(pcm)
            if len(self.finals) <= self.failures:
                raise RuntimeError("decoder failed")
            self.called.set()
        return Recognition("words", "words", len(pcm) / 32000, 0.01, "en", ())


@pytest.fixture
def settings(nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setattr(asr, "PARK_S", 60.0)
    # No background reviser: once started (a second or more after the worker) it rings the
    # worker's doorbell so that partials are fetched again, a wake-up the tests cannot time.
    return replace(Settings(), nats_url=nats_server.url, vad_http_port=0, asr_http_port=0,
                   require_workers_ready=False, speculative_finals=False, partial_interval_ms=0,
                   context_chars=0, revise_finals=False)


@pytest.fixture
def failures() -> int:
    return 0


@pytest.fixture
async def parked(settings: Settings, failures: int) -> AsyncIterator[Recorder]:
    """An ASR worker that has found the queues empty and parked."""
    model = Recorder(failures)
    stop = asyncio.Event()
    worker = AsrWorker(AsrSettings.from_settings(settings, worker_id="parked"), model)  # type: ignore[arg-type]
    task = asyncio.create_task(worker.run(stop))
    # Connected, polled the three queues once and parked (a fixed 2 s sleep stood for this, and
    # for the background reviser's start, and was too short on a busy machine).
    async with asyncio.timeout(30):
        while not worker.parks:
            await asyncio.sleep(0.05)
    try:
        yield model
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def vad_side(settings: Settings) -> AsyncIterator[tuple[NATS, JetStreamContext]]:
    """The VAD worker's end of the bus: stores final jobs, rings the doorbell."""
    nc, js = await bus.connect_jetstream(BusSettings.from_settings(settings), "test-vad")
    try:
        yield nc, js
    finally:
        await bus.close(nc)


async def store_final(js: JetStreamContext, session_id: str) -> AsrJob:
    job = AsrJob(session_id=session_id, utterance_id="u0", is_final=True, audio=b"\0\0" * 16000,
                 start_s=0.0, end_s=1.0, final_index=1)
    await js.publish(subjects.FINAL_JOBS, encode(job))
    return job


async def test_a_parked_worker_wakes_on_the_doorbell_only(
        settings: Settings, parked: Recorder, vad_side: tuple[NATS, JetStreamContext]) -> None:
    nc, js = vad_side
    job = await store_final(js, "s-doorbell")
    await asyncio.sleep(1.5)
    # Stored, not rung: the parked worker does not look (it would, PARK_S later).
    assert await final_jobs_waiting(settings) == 1 and not parked.finals
    await nc.publish(subjects.JOBS_DOORBELL, b"")
    assert await asyncio.to_thread(parked.called.wait, 10.0)
    assert parked.finals == [job.audio]


@pytest.mark.parametrize("failures", [1])
async def test_a_parked_worker_retries_a_failed_final_when_it_is_due(
        parked: Recorder, vad_side: tuple[NATS, JetStreamContext]) -> None:
    nc, js = vad_side
    job = await store_final(js, "s-retry")
    await nc.publish(subjects.JOBS_DOORBELL, b"")  # rung once: the first try fails
    # The retry is stored RETRY_DELAY_S later, with no ring; the worker looks when it is due, not
    # after its 60 s park.
    assert await asyncio.to_thread(parked.called.wait, 10.0)
    assert parked.finals == [job.audio, job.audio]


async def test_the_vad_worker_rings_after_storing_jobs(settings: Settings, parked: Recorder) -> None:
    stop = asyncio.Event()
    vad = asyncio.create_task(VadWorker(VadSettings.from_settings(settings, worker_id="vad1")).run(stop))
    try:
        async with edge_server(settings) as server, aiohttp.ClientSession() as http:
            client = await connect(http, ws_url(server))
            await client.stream(pcm_of("one_sentence.wav"))
            await client.send_json({"type": "end"})
            await client.until("session_ended", timeout=30)  # well within the 60 s park
        assert len(client.finals()) == 1 and len(parked.finals) == 1
    finally:
        stop.set()
        await asyncio.wait_for(vad, 30)
