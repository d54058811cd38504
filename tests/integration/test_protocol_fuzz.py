"""Property-based fuzzing of the client protocol against a live edge (hypothesis).

The edge, a VAD worker and an ASR worker (real model) run in one event loop in a background
thread, against a real nats-server. Each example opens a connection and sends a random sequence
of good and bad messages (random JSON, unknown types and fields, bad base64, odd byte counts,
oversized chunks and frames, deep nesting, binary garbage), then ends in a random way (close,
`end`, a frame over the hard cap, a frame cut in half). Every bad input must get its documented
error code, in order; afterwards the edge holds no connection and runs exactly the tasks it ran
before (nothing leaked). Finally, good audio after a burst of bad input still transcribes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections import Counter
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asr_worker.asr_settings import AsrSettings
from asr_worker.transcriber import Transcriber
from asr_worker.worker import AsrWorker, transcriber_options
from common.nats_server import NatsServer
from common.settings import Settings, replace
from ingest.app import CONTEXT, init
from ingest.edge_settings import EdgeSettings
from tests.conftest import ONE_SENTENCE, pcm_of
from tests.helpers import Client, RawClient, connect, wait_ready, wer, ws_url
from vad_worker.vad_settings import VadSettings
from vad_worker.worker import VadWorker

pytestmark = pytest.mark.slow

T = TypeVar("T")
MAX_CHUNK = 2048
MAX_FRAME = 4096
# Coroutines a connection runs; one left behind after the connection closed is a leak.
CONNECTION_TASKS = {"RequestHandler.start", "RequestHandler._handle_request", "Connection.run",
                    "Connection._close_and_release", "Outbox._write", "Outbox._close_now", "shield"}
CODES = {"CHUNK_TOO_LARGE", "INVALID_AUDIO", "INVALID_MESSAGE", "CAPACITY", "UNAUTHORIZED", "RATE_LIMITED",
         "RESUME_FAILED", "INTERNAL"}


class Harness:
    """The three roles in one loop on a background thread; tests submit coroutines to it."""

    def __init__(self, nats_url: str) -> None:
        self.settings = replace(
            Settings(), nats_url=nats_url, vad_http_port=0, asr_http_port=0, max_chunk_bytes=MAX_CHUNK,
            max_frame_bytes=MAX_FRAME, max_realtime_factor=0, end_flush_timeout_seconds=20.0,
            drain_timeout_seconds=2.0, worker_id="fuzz",
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="edge-loop", daemon=True)
        self.thread.start()
        self.stop = asyncio.Event()
        self.run(self._start(), timeout=120)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    async def _start(self) -> None:
        asr = AsrSettings.from_settings(self.settings, worker_id="fuzz-asr")
        vad = VadSettings.from_settings(self.settings, worker_id="fuzz-vad")
        transcriber = await asyncio.to_thread(Transcriber, transcriber_options(asr))
        self.workers = [
            asyncio.create_task(VadWorker(vad).run(self.stop)),
            asyncio.create_task(AsrWorker(asr, transcriber).run(self.stop)),
        ]
        self.server = TestServer(init(EdgeSettings.from_settings(self.settings)), host="127.0.0.1")
        await self.server.start_server()
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, self.server)
            # One session first: the bus client creates its publish-ack inbox lazily, once.
            warmup = await connect(http, self.url)
            await warmup.ws.send_bytes(bytes(3200))
            await warmup.send_json({"type": "end"})
            await warmup.until("session_ended", timeout=30)
            await warmup.ws.close()
        self.baseline = await self.settled()

    @property
    def url(self) -> str:
        return ws_url(self.server)

    async def settled(self, timeout: float = 30.0) -> Counter[str]:
        """What connections own, once none is open: the edge's NATS subscriptions and the tasks of
        the kinds a connection creates. The workers' fetch loops come and go and are not counted."""
        ctx = self.server.app[CONTEXT]
        async with asyncio.timeout(timeout):
            while ctx.connections:
                await asyncio.sleep(0.05)
            last: Counter[str] | None = None
            while (now := self._owned()) != last:
                last = now
                await asyncio.sleep(0.3)
        return now

    def _owned(self) -> Counter[str]:
        ctx = self.server.app[CONTEXT]
        kinds: Counter[str] = Counter(f"nats subscriptions: {len(ctx.nc._subs)}" for _ in range(1))
        for task in asyncio.all_tasks():
            name = getattr(task.get_coro(), "__qualname__", "")
            if name in CONNECTION_TASKS or task.get_name().startswith(("writer-", "closer-")):
                kinds[name] += 1
        return kinds

    async def _close(self) -> None:
        await self.server.close()
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.workers), 30)

    def close(self) -> None:
        self.run(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    server = NatsServer(tmp_path_factory.mktemp("fuzz-nats")).start()
    h = Harness(server.url)
    try:
        yield h
    finally:
        h.close()
        server.stop()


# --- what a client may send, with the error code it must get back (None: no error) ----------

quiet_pcm = st.integers(1, MAX_CHUNK // 2).flatmap(
    lambda n: st.lists(st.integers(-40, 40), min_size=n, max_size=n)
).map(lambda xs: b"".join(x.to_bytes(2, "little", signed=True) for x in xs))
finite = st.floats(allow_nan=False, allow_infinity=False)  # JSON has no NaN or Infinity
json_scalars = st.none() | st.booleans() | st.integers() | finite | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
known = {"audio", "finalize", "end", "keepalive", "reconnect", "__oversized__"}


def text(obj: Any) -> tuple[str, Any]:
    return ("text", json.dumps(obj))


steps = st.one_of(
    st.text(max_size=40).filter(lambda s: not _is_json(s)).map(lambda s: (("text", s), "INVALID_MESSAGE")),
    json_values.filter(lambda v: not isinstance(v, dict)).map(lambda v: (text(v), "INVALID_MESSAGE")),
    st.builds(lambda t, extra: (text({**extra, "type": t}), "INVALID_MESSAGE"),
              st.text(max_size=12).filter(lambda t: t not in known), st.dictionaries(st.text(max_size=6), json_scalars,
                                                                                       max_size=3)),
    st.dictionaries(st.sampled_from(["kind", "data", "typ"]), json_scalars, max_size=3).map(
        lambda d: (text(d), "INVALID_MESSAGE")),
    st.text(alphabet="!@#$%^&*()", min_size=1, max_size=30).map(
        lambda s: (text({"type": "audio", "data": s}), "INVALID_AUDIO")),
    json_scalars.filter(lambda v: not isinstance(v, str)).map(
        lambda v: (text({"type": "audio", "data": v}), "INVALID_AUDIO")),
    st.binary(min_size=1, max_size=99).filter(lambda b: len(b) % 2 == 1).map(
        lambda b: (text({"type": "audio", "data": base64.b64encode(b).decode()}), "INVALID_AUDIO")),
    st.integers(MAX_CHUNK + 2, 2900).map(lambda n: (text({"type": "audio", "data": base64.b64encode(
        bytes(n - n % 2)).decode()}), "CHUNK_TOO_LARGE")),
    st.integers(MAX_FRAME + 1, 20000).map(lambda n: (("text", '{"type":"audio","data":"' + "A" * n + '"}'),
                                                     "CHUNK_TOO_LARGE")),
    st.integers(200, 2000).map(lambda depth: (("text", "[" * depth + "]" * depth), "INVALID_MESSAGE")),
    st.just((text({"type": "reconnect", "previous_session_id": "x" * 32, "resume_token": "t", "last_seq": 0}),
             "INVALID_MESSAGE")),  # never first here: a keepalive always opens the sequence
    st.binary(min_size=1, max_size=99).filter(lambda b: len(b) % 2 == 1).map(lambda b: (("binary", b),
                                                                                       "INVALID_AUDIO")),
    st.just((("binary", b""), "INVALID_AUDIO")),
    st.integers(MAX_CHUNK + 2, MAX_FRAME - 2).map(lambda n: (("binary", bytes(n - n % 2)), "CHUNK_TOO_LARGE")),
    quiet_pcm.map(lambda b: (("binary", b), None)),
    quiet_pcm.map(lambda b: (text({"type": "audio", "data": base64.b64encode(b).decode()}), None)),
    st.sampled_from([(text({"type": "keepalive"}), None), (text({"type": "finalize"}), None)]),
)
endings = st.sampled_from(["close", "end", "frame_over_cap", "cut_frame"])


def _is_json(s: str) -> bool:
    try:
        json.loads(s)
    except ValueError:
        return False
    return True


async def _exchange(h: Harness, sequence: list[tuple[tuple[str, Any], str | None]], ending: str) -> list[str]:
    async with aiohttp.ClientSession() as http:
        client = await connect(http, h.url)
        await client.send_json({"type": "keepalive"})
        for (kind, payload), _ in sequence:
            if kind == "text":
                await client.ws.send_str(payload)
            else:
                await client.ws.send_bytes(payload)
        expected = sum(1 for _, code in sequence if code)
        got: list[str] = []
        async with asyncio.timeout(30):
            while len(got) < expected:
                msg = await client.recv()
                assert msg is not None, f"closed ({client.close_code}) after errors {got}"
                if msg["type"] == "error":
                    got.append(msg["code"])
        await _finish(client, ending, h)
        return got


async def _finish(client: Client, ending: str, h: Harness) -> None:
    if ending == "end":
        await client.send_json({"type": "end"})
        await client.until("session_ended", timeout=30)
        assert await client.recv() is None and client.close_code == 1000
    elif ending == "frame_over_cap":
        await client.ws.send_bytes(bytes(MAX_FRAME + 2))
        error = await client.until("error", timeout=10)
        assert error["code"] == "CHUNK_TOO_LARGE"
        while await client.recv() is not None:
            pass
        assert client.close_code == 1009
    elif ending == "cut_frame":
        await client.ws.close()
        port = h.server.port
        assert port is not None

        def cut() -> None:
            raw = RawClient("127.0.0.1", port)
            raw.read_json()
            raw.sock.sendall(bytes([0x82, 0x80 | 100]) + b"\0\0\0\0" + bytes(40))  # 40 of 100 bytes
            raw.close()

        await asyncio.to_thread(cut)
    else:
        await client.ws.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                  HealthCheck.function_scoped_fixture])
@given(sequence=st.lists(steps, max_size=12), ending=endings)
def test_random_input_gets_documented_errors_and_leaks_nothing(
    harness: Harness, sequence: list[tuple[tuple[str, Any], str | None]], ending: str
) -> None:
    got = harness.run(_exchange(harness, sequence, ending))
    assert got == [code for _, code in sequence if code]
    assert set(got) <= CODES
    assert harness.run(harness.settled()) == harness.baseline, "a task or subscription outlived its connection"


def test_good_audio_after_bad_input_still_transcribes(harness: Harness) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as http:
            client = await connect(http, harness.url)
            for bad in ["{", '{"type":"x"}', '{"type":"audio","data":"@@"}', "[" * 2000 + "]" * 2000]:
                await client.ws.send_str(bad)
            await client.ws.send_bytes(b"\x01")
            await client.ws.send_str('{"type":"audio","data":"' + "A" * 10000 + '"}')
            pcm = pcm_of("one_sentence.wav")
            for i in range(0, len(pcm), MAX_CHUNK):
                await client.ws.send_bytes(pcm[i : i + MAX_CHUNK])
            await client.send_json({"type": "end"})
            await client.until("session_ended", timeout=60)
            return client.messages

    messages = harness.run(scenario(), timeout=120)
    errors = [m["code"] for m in messages if m["type"] == "error"]
    assert errors == ["INVALID_MESSAGE", "INVALID_MESSAGE", "INVALID_AUDIO", "INVALID_MESSAGE", "INVALID_AUDIO",
                      "CHUNK_TOO_LARGE"]
    finals = [m for m in messages if m["type"] == "transcript" and m["is_final"]]
    assert len(finals) == 1 and wer(ONE_SENTENCE, finals[0]["text"]) <= 0.25, finals
    assert harness.run(harness.settled()) == harness.baseline
