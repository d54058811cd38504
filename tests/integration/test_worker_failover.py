"""Nothing spoken is lost when ASR workers die: final jobs wait in the durable work queue while
no ASR worker lives, and a job whose worker dies mid-inference (never acknowledged) goes to
another worker after the consumer's ack_wait. Edge, VAD and ASR run in this test's loop against a
real nats-server and the real model."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from asr_worker.asr_settings import AsrSettings
from asr_worker.transcriber import Transcriber
from asr_worker.worker import AsrWorker, transcriber_options
from common.bus_timing import TIMING
from common.nats_server import NatsServer
from common.settings import Settings, replace
from tests.conftest import ONE_SENTENCE, pcm_of
from tests.helpers import connect, edge_server, final_jobs_waiting, wer, ws_url
from vad_worker.vad_settings import VadSettings
from vad_worker.worker import VadWorker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    return Transcriber(transcriber_options(AsrSettings.from_settings(Settings())))


class Roles:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start_vad(self) -> None:
        vad = VadWorker(VadSettings.from_settings(self.settings, worker_id="vad1"))
        self.tasks.append(asyncio.create_task(vad.run(self.stop)))

    def start_asr(self, name: str, transcriber: Any) -> tuple[AsrWorker, asyncio.Task[None], asyncio.Event]:
        stop = asyncio.Event()
        worker = AsrWorker(AsrSettings.from_settings(self.settings, worker_id=name), transcriber)
        task = asyncio.create_task(worker.run(stop))
        self.tasks.append(task)
        return worker, task, stop


@pytest.fixture
async def roles(nats_server: NatsServer) -> AsyncIterator[tuple[Roles, TestServer]]:
    # speculative_finals off: these models (a stuck one) cannot tell a final's decode from its
    # speculative decode, and the tests are about final jobs (speculation: test_speculative_finals).
    settings = replace(Settings(), nats_url=nats_server.url, vad_http_port=0, asr_http_port=0,
                       require_workers_ready=False, end_flush_timeout_seconds=60.0, speculative_finals=False)
    r = Roles(settings)
    r.start_vad()
    try:
        async with edge_server(settings) as server:
            yield r, server
    finally:
        r.stop.set()
        for task in r.tasks:
            task.cancel()
        await asyncio.gather(*r.tasks, return_exceptions=True)


async def test_finals_wait_for_an_asr_worker(roles: tuple[Roles, TestServer], transcriber: Transcriber) -> None:
    r, server = roles
    async with aiohttp.ClientSession() as http:
        client = await connect(http, ws_url(server))
        await client.stream(pcm_of("one_sentence.wav"))
        await client.send_json({"type": "end"})
        # The VAD queues the final job; with no ASR worker it waits in the durable queue, unacked.
        async with asyncio.timeout(30):
            while (await final_jobs_waiting(r.settings)) < 1:
                await asyncio.sleep(0.1)
        r.start_asr("late", transcriber)
        await client.until("session_ended", timeout=60)
    finals = client.finals()
    assert len(finals) == 1 and finals[0]["seq"] == 1 and wer(ONE_SENTENCE, finals[0]["text"]) <= 0.25


async def test_a_final_in_flight_on_a_dead_worker_is_redone_elsewhere(
    roles: tuple[Roles, TestServer], transcriber: Transcriber
) -> None:
    r, server = roles
    picked_up = threading.Event()
    never = threading.Event()

    class Stuck:
        """The first worker's model: takes the job, then hangs as a dying process would."""

        def transcribe(self, pcm: bytes, **kwargs: Any) -> Any:
            picked_up.set()
            never.wait(60)
            raise RuntimeError("unreachable")

    doomed, doomed_task, _ = r.start_asr("doomed", Stuck())
    async with aiohttp.ClientSession() as http:
        client = await connect(http, ws_url(server))
        await client.stream(pcm_of("one_sentence.wav"))
        await client.send_json({"type": "end"})
        async with asyncio.timeout(30):
            while not picked_up.is_set():
                await asyncio.sleep(0.05)
        # The worker dies: its connection drops with the job unacknowledged, nothing runs on.
        assert doomed.nc is not None
        doomed_task.cancel()
        await doomed.nc.close()
        r.start_asr("survivor", transcriber)
        # Redelivered once ack_wait passes since the dead worker's last sign of progress.
        await client.until("session_ended", timeout=TIMING.final_ack_wait_s + 30)
        never.set()
    finals = client.finals()
    assert len(finals) == 1 and finals[0]["seq"] == 1 and wer(ONE_SENTENCE, finals[0]["text"]) <= 0.25
