"""Neither VAD nor inference runs on an event loop thread.

The three roles run in this test's event loop (edge in aiohttp's in-process server, the workers as
tasks), against a real nats-server and the real model. The VAD classifier and the transcriber are
wrapped to record the thread they run on; every recorded thread must differ from the loop's.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import aiohttp
import pytest

from asr_worker.asr_settings import AsrSettings
from asr_worker.transcriber import Transcriber
from asr_worker.worker import AsrWorker, transcriber_options
from common.nats_server import NatsServer
from common.settings import Settings, replace
from tests.conftest import ONE_SENTENCE, pcm_of
from tests.helpers import connect, edge_server, wait_ready, wer, ws_url
from vad_worker import session as vad_session
from vad_worker.vad_settings import VadSettings
from vad_worker.worker import VadWorker


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    return Transcriber(transcriber_options(AsrSettings.from_settings(Settings())))


async def test_vad_and_inference_run_off_the_event_loop(
    nats_server: NatsServer, transcriber: Transcriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.get_ident()
    vad_threads: list[int] = []
    asr_threads: list[int] = []

    original_is_speech = vad_session.SessionVad._is_speech

    def recording_is_speech(self: vad_session.SessionVad, frame: bytes) -> bool:
        vad_threads.append(threading.get_ident())
        return original_is_speech(self, frame)

    monkeypatch.setattr(vad_session.SessionVad, "_is_speech", recording_is_speech)
    original_transcribe = transcriber.transcribe

    def recording_transcribe(pcm: bytes, **kwargs: Any) -> Any:
        asr_threads.append(threading.get_ident())
        with pytest.raises(RuntimeError):
            asyncio.get_running_loop()  # no loop runs in this thread
        return original_transcribe(pcm, **kwargs)

    monkeypatch.setattr(transcriber, "transcribe", recording_transcribe)

    settings = replace(Settings(), nats_url=nats_server.url, vad_http_port=0, asr_http_port=0,
                       worker_id="offloop", partial_interval_ms=500)
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(VadWorker(VadSettings.from_settings(settings, worker_id="vad1")).run(stop)),
        asyncio.create_task(AsrWorker(AsrSettings.from_settings(settings, worker_id="asr1"), transcriber).run(stop)),
    ]
    try:
        async with edge_server(settings) as server, aiohttp.ClientSession() as http:
            await wait_ready(http, server, timeout=30)  # both workers' heartbeats seen
            client = await connect(http, ws_url(server))
            await client.stream(pcm_of("one_sentence.wav"), chunk_ms=100, realtime=4.0)
            await client.send_json({"type": "end"})
            await client.until("session_ended", timeout=60)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), 30)

    finals = client.finals()
    assert len(finals) == 1 and wer(ONE_SENTENCE, finals[0]["text"]) <= 0.25
    assert vad_threads and asr_threads, "the wrapped VAD and transcriber were not called"
    assert loop_thread not in set(vad_threads)
    assert loop_thread not in set(asr_threads)
    # Partials (every 500 ms) and the final all went through the executor.
    assert len(asr_threads) >= 2
