"""`GET /v1/listen`, Deepgram's live API, end to end through the real stack (cli.dev.Stack: its own
nats-server, the edge, the VAD worker, the ASR worker with tiny.en) driven by the official
`deepgram-sdk` from PyPI and by a raw WebSocket client checking the JSON shapes field by field
against Deepgram's documented messages (docs/deepgram.md).

The VAD's per-session endpointing (`Asr-Options`) is not relied on: these tests hold with the
service default (500 ms) whether or not the VAD honours the session's value.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from deepgram import AsyncDeepgramClient
from deepgram.environment import DeepgramClientEnvironment
from deepgram.listen.v1.socket_client import AsyncV1SocketClient

from cli.dev import Stack
from common.audio import StreamResampler
from ingest import g711
from tests.conftest import THREE_UTTERANCES, pcm_of
from tests.helpers import STEP, running_stack, wer

pytestmark = pytest.mark.slow

KEY = "dg-test-key-0123456789abcdef"
RATE = 16000
CHUNK = 3200  # 100 ms of 16 kHz PCM
# tests/data/three_utterances.wav: speech at about 0.6-2.73 s, 4.62-7.08 s, 8.94-11.61 s of 13.0 s.
FIRST_SPEECH_END_S = 2.73


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack"), 0, env={"ASR_API_KEYS": KEY}) as stack:
        yield stack


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def sdk_client(stack: Stack) -> AsyncDeepgramClient:
    """The SDK pointed at the local edge: its environment's `production` is the WebSocket base."""
    base = f"127.0.0.1:{stack.port}"
    env = DeepgramClientEnvironment(base=f"http://{base}", production=f"ws://{base}", agent=f"ws://{base}",
                                    agent_rest=f"http://{base}")
    return AsyncDeepgramClient(api_key=KEY, environment=env)


async def collect(conn: AsyncV1SocketClient, into: list[Any]) -> None:
    async for message in conn:  # ends when the server closes the socket
        into.append(message)


async def send_audio(conn: AsyncV1SocketClient, pcm: bytes, realtime: float) -> None:
    for i in range(0, len(pcm), CHUNK):
        await asyncio.wait_for(conn.send_media(pcm[i : i + CHUNK]), STEP)
        await asyncio.sleep(CHUNK / (2 * RATE) / realtime)


async def until(messages: list[Any], condition: Any, timeout: float = 60.0) -> Any:
    """The first message (an SDK object) that satisfies ``condition``, polled, bounded."""
    async with asyncio.timeout(timeout):
        while True:
            for message in messages:
                if condition(message):
                    return message
            await asyncio.sleep(0.05)


def finals_of(messages: list[Any]) -> list[Any]:
    return [m for m in messages if getattr(m, "type", None) == "Results" and m.is_final]


async def test_sdk_streams_speech_and_closes_with_metadata(stack: Stack) -> None:
    pcm = pcm_of("three_utterances.wav")
    messages: list[Any] = []
    async with sdk_client(stack).listen.v1.connect(
        model="nova-3", encoding="linear16", sample_rate=RATE, channels=1, interim_results="true",
        vad_events="true", utterance_end_ms=1000, endpointing=500, punctuate="true", smart_format="true",
    ) as conn:
        reader = asyncio.create_task(collect(conn, messages))
        await send_audio(conn, pcm, realtime=1.0)
        await conn.send_close_stream()
        await asyncio.wait_for(reader, 90)  # Metadata, then the server closes

    kinds = [m.type for m in messages]
    assert kinds[-1] == "Metadata", kinds
    assert kinds.count("Metadata") == 1
    finals = finals_of(messages)
    texts = [f.channel.alternatives[0].transcript for f in finals]
    assert len(finals) == 3, texts
    for text, reference in zip(texts, THREE_UTTERANCES, strict=True):
        assert wer(reference, text) <= 0.25, (reference, text)
    # Each utterance ended on a pause: final and speech_final, not from a Finalize.
    assert all(f.speech_final is True and f.from_finalize is False for f in finals), finals
    starts = [f.start for f in finals]
    assert starts == sorted(starts) and all(f.duration > 0 for f in finals)
    # Interim results: not final, never speech_final, each before its utterance's final.
    interims = [(i, m) for i, m in enumerate(messages) if m.type == "Results" and not m.is_final]
    assert interims, "no interim result at all"
    assert all(m.speech_final is False for _, m in interims)
    final_at = [messages.index(f) for f in finals]
    for i, interim in interims:
        owner = next(k for k, f in enumerate(finals) if interim.start < f.start + f.duration)
        assert i < final_at[owner], (i, final_at)
    # vad_events: a SpeechStarted before each final; utterance_end_ms: an UtteranceEnd after each.
    started = [i for i, m in enumerate(messages) if m.type == "SpeechStarted"]
    assert len(started) >= 3 and all(s < f for s, f in zip(started, final_at, strict=False))
    ends = [(i, m) for i, m in enumerate(messages) if m.type == "UtteranceEnd"]
    assert len(ends) == 3, kinds
    for (i, end), at, final in zip(ends, final_at, finals, strict=True):
        assert i > at and end.last_word_end == pytest.approx(final.start + final.duration, abs=0.01)
    metadata = messages[-1]
    assert metadata.duration == pytest.approx(len(pcm) / (2 * RATE), abs=0.01)
    assert metadata.sha256 == hashlib.sha256(pcm).hexdigest()
    assert metadata.request_id == finals[0].metadata.request_id


async def test_sdk_finalize_flushes_the_utterance_and_the_stream_goes_on(stack: Stack) -> None:
    pcm = pcm_of("three_utterances.wav")
    cut = int((FIRST_SPEECH_END_S + 0.12) * RATE) * 2  # just after the first sentence, before any pause
    messages: list[Any] = []
    async with sdk_client(stack).listen.v1.connect(
        model="nova-3", encoding="linear16", sample_rate=RATE, interim_results="false",
    ) as conn:
        reader = asyncio.create_task(collect(conn, messages))
        await send_audio(conn, pcm[:cut], realtime=2.0)
        await conn.send_finalize()
        flushed = await until(messages, lambda m: m.type == "Results" and m.is_final, timeout=60)
        # The service's endpointing (500 ms of silence) had not ended the utterance: Finalize did.
        assert flushed.from_finalize is True and flushed.speech_final is False
        assert wer(THREE_UTTERANCES[0], flushed.channel.alternatives[0].transcript) <= 0.25, flushed
        await conn.send_keep_alive()
        await send_audio(conn, pcm[cut:], realtime=2.0)  # not terminal: the session goes on
        await conn.send_close_stream()
        await asyncio.wait_for(reader, 90)

    assert all(m.type != "Results" or m.is_final for m in messages), "interim_results=false sent interims"
    assert not [m for m in messages if m.type in ("SpeechStarted", "UtteranceEnd")], "events not asked for"
    finals = finals_of(messages)
    texts = [f.channel.alternatives[0].transcript for f in finals]
    assert len(finals) == 3, texts
    for text, reference in zip(texts, THREE_UTTERANCES, strict=True):
        assert wer(reference, text) <= 0.25, (reference, text)
    assert [(f.from_finalize, f.speech_final) for f in finals] == [(True, False), (False, True), (False, True)]
    assert messages[-1].type == "Metadata"


# --- raw WebSocket: the JSON as sent ----------------------------------------------------------

# Field sets of Deepgram's documented live messages (developers.deepgram.com, Live Audio API).
RESULTS_FIELDS = {"type", "channel_index", "duration", "start", "is_final", "speech_final", "channel",
                  "metadata", "from_finalize"}
ALTERNATIVE_FIELDS = {"transcript", "confidence", "words"}
RESULTS_METADATA_FIELDS = {"request_id", "model_info", "model_uuid"}
MODEL_INFO_FIELDS = {"name", "version", "arch"}
METADATA_FIELDS = {"type", "transaction_key", "request_id", "sha256", "created", "duration", "channels"}


def listen_url(stack: Stack, query: str) -> str:
    return f"ws://127.0.0.1:{stack.port}/v1/listen?{query}"


def check_results(msg: dict[str, Any], request_id: str) -> None:
    assert set(msg) == RESULTS_FIELDS, msg
    assert msg["type"] == "Results" and msg["channel_index"] == [0, 1]
    assert isinstance(msg["duration"], float | int) and msg["duration"] >= 0
    assert isinstance(msg["start"], float | int) and msg["start"] >= 0
    for flag in ("is_final", "speech_final", "from_finalize"):
        assert isinstance(msg[flag], bool), (flag, msg)
    assert set(msg["channel"]) == {"alternatives"} and len(msg["channel"]["alternatives"]) == 1
    alternative = msg["channel"]["alternatives"][0]
    assert set(alternative) == ALTERNATIVE_FIELDS
    assert isinstance(alternative["transcript"], str) and alternative["transcript"]
    assert isinstance(alternative["confidence"], float) and 0 <= alternative["confidence"] <= 1
    assert alternative["words"] == []  # no word timings from this recognizer (docs/deepgram.md)
    assert set(msg["metadata"]) == RESULTS_METADATA_FIELDS
    assert msg["metadata"]["request_id"] == request_id
    assert set(msg["metadata"]["model_info"]) == MODEL_INFO_FIELDS
    assert str(uuid.UUID(msg["metadata"]["model_uuid"])) == msg["metadata"]["model_uuid"]


async def test_raw_websocket_json_shapes(stack: Stack, http: aiohttp.ClientSession) -> None:
    url = listen_url(stack, "encoding=linear16&sample_rate=16000&interim_results=true&vad_events=true"
                            "&utterance_end_ms=1000")
    ws = await asyncio.wait_for(http.ws_connect(url, headers={"Authorization": f"Token {KEY}"}), STEP)
    received: list[dict[str, Any]] = []

    async def read() -> None:
        async for frame in ws:  # ends at the server's close frame
            assert frame.type == aiohttp.WSMsgType.TEXT, frame
            received.append(json.loads(frame.data))

    reader = asyncio.create_task(read())
    # A client message Deepgram does not know: an Error, and the stream goes on.
    await ws.send_str(json.dumps({"type": "Sing"}))
    pcm = pcm_of("three_utterances.wav")[: int(7.6 * RATE) * 2]  # the first two sentences
    for i in range(0, len(pcm), CHUNK + 1):  # odd-sized chunks, as Deepgram clients may cut them
        await asyncio.wait_for(ws.send_bytes(pcm[i : i + CHUNK + 1]), STEP)
        await asyncio.sleep(CHUNK / (2 * RATE) / 2.0)
    await ws.send_str(json.dumps({"type": "KeepAlive"}))
    await ws.send_str(json.dumps({"type": "CloseStream"}))
    await asyncio.wait_for(reader, 90)
    assert ws.close_code == 1000

    kinds = [m["type"] for m in received]
    assert "session_started" not in kinds and kinds[-1] == "Metadata", kinds
    error = received[0]
    assert error == {"type": "Error", "variant": "SchemaError", "description": error["description"],
                     "code": "INVALID_MESSAGE"}
    assert "Sing" in error["description"]
    metadata = received[-1]
    assert set(metadata) >= METADATA_FIELDS, metadata
    assert metadata["transaction_key"] == "deprecated" and metadata["channels"] == 1
    assert metadata["duration"] == pytest.approx(len(pcm) / (2 * RATE), abs=0.01)
    assert metadata["sha256"] == hashlib.sha256(pcm).hexdigest()
    request_id = metadata["request_id"]
    assert str(uuid.UUID(request_id)) == request_id
    results = [m for m in received if m["type"] == "Results"]
    for msg in results:
        check_results(msg, request_id)
    finals = [m for m in results if m["is_final"]]
    assert len(finals) == 2, results
    for final, reference in zip(finals, THREE_UTTERANCES[:2], strict=True):
        assert wer(reference, final["channel"]["alternatives"][0]["transcript"]) <= 0.25, final
    speech = [m for m in received if m["type"] == "SpeechStarted"]
    assert speech and all(set(m) == {"type", "channel", "timestamp"} and m["channel"] == [0, 1] for m in speech)
    ends = [m for m in received if m["type"] == "UtteranceEnd"]
    assert len(ends) == 2
    assert all(set(m) == {"type", "channel", "last_word_end"} and m["channel"] == [0, 1] for m in ends)
    assert [kinds.index("UtteranceEnd"), len(kinds) - 1 - kinds[::-1].index("UtteranceEnd")] == [
        received.index(finals[0]) + 1, received.index(finals[1]) + 1]


def g711_encode(pcm: bytes, table: g711.Table) -> bytes:
    """The nearest G.711 code for each sample (the test's encoder: the edge only decodes)."""
    samples = np.frombuffer(pcm, "<i2").astype(np.int32)
    order = np.argsort(table.astype(np.int32), kind="stable")
    levels = table.astype(np.int32)[order]
    i = np.clip(np.searchsorted(levels, samples), 1, 255)
    lower = samples - levels[i - 1] <= levels[i] - samples
    return order[np.where(lower, i - 1, i)].astype(np.uint8).tobytes()


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
async def test_telephone_g711_audio_at_8_khz_is_transcribed(
    stack: Stack, http: aiohttp.ClientSession, encoding: str,
) -> None:
    """What a telephony gateway sends (Twilio: mu-law, 8 kHz, 20 ms frames of 160 bytes)."""
    resampler = StreamResampler(RATE, 8000)
    pcm8k = resampler.process(pcm_of("three_utterances.wav")[: int(7.6 * RATE) * 2]) + resampler.flush()
    line = g711_encode(pcm8k, g711.TABLES[encoding])
    assert len(line) == len(pcm8k) // 2
    url = listen_url(stack, f"encoding={encoding}&sample_rate=8000")
    ws = await asyncio.wait_for(http.ws_connect(url, headers={"Authorization": f"Token {KEY}"}), STEP)
    received: list[dict[str, Any]] = []

    async def read() -> None:
        async for frame in ws:
            received.append(json.loads(frame.data))

    reader = asyncio.create_task(read())
    for i in range(0, len(line), 160):
        await asyncio.wait_for(ws.send_bytes(line[i : i + 160]), STEP)
        if i % 1600 == 0:
            await asyncio.sleep(0.1 / 2.0)  # twice real time
    await ws.send_str(json.dumps({"type": "CloseStream"}))
    await asyncio.wait_for(reader, 90)
    finals = [m for m in received if m["type"] == "Results" and m["is_final"]]
    assert len(finals) == 2, received
    text = " ".join(f["channel"]["alternatives"][0]["transcript"] for f in finals)
    print(f"{encoding}: {text!r}")
    # Telephone band and 8-bit quantisation cost tiny.en a few words ("at noon" -> "afternoon");
    # audio decoded wrongly would be noise: nothing, or words unrelated to the reference.
    assert wer(" ".join(THREE_UTTERANCES[:2]), text) <= 0.3, text
    metadata = received[-1]
    assert metadata["type"] == "Metadata"
    assert metadata["duration"] == pytest.approx(len(line) / 8000, abs=0.01)  # one byte per sample
    assert metadata["sha256"] == hashlib.sha256(line).hexdigest()


@pytest.mark.parametrize(("query", "words"), [
    ("encoding=opus&sample_rate=48000", "encoding=linear16"),
    ("sample_rate=16000", "encoding is missing"),
    ("encoding=linear16&sample_rate=16000&channels=2", "channels must be 1"),
    ("encoding=linear16&sample_rate=16000&diarize=true", "diarize=true is not supported"),
    ("encoding=linear16&sample_rate=16000&redact=pci", "Unsupported query parameter 'redact'"),
])
async def test_unsupported_options_get_http_400_before_the_upgrade(
    stack: Stack, http: aiohttp.ClientSession, query: str, words: str,
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await asyncio.wait_for(http.ws_connect(listen_url(stack, query), headers={"Authorization": f"Token {KEY}"}),
                               STEP)
    assert info.value.status == 400
    async with http.get(listen_url(stack, query).replace("ws://", "http://", 1)) as resp:
        body = await resp.json()
    assert resp.status == 400 and body["err_code"] == "Bad Request" and words in body["err_msg"], body


async def test_token_auth(stack: Stack, http: aiohttp.ClientSession) -> None:
    url = listen_url(stack, "encoding=linear16&sample_rate=16000")
    for headers in ({}, {"Authorization": "Token wrong-key-wrong-key-wrong"}):
        async with http.get(url.replace("ws://", "http://", 1), headers=headers) as resp:
            body = await resp.json()
        assert resp.status == 401 and body["err_code"] == "INVALID_AUTH" and body["err_msg"], body
    by_header = asyncio.wait_for(http.ws_connect(url, headers={"Authorization": f"Token {KEY}"}), STEP)
    by_subprotocol = asyncio.wait_for(http.ws_connect(url, protocols=("token", KEY)), STEP)  # browsers
    for connecting in (by_header, by_subprotocol):
        ws = await connecting
        await ws.send_str(json.dumps({"type": "CloseStream"}))
        frame = await asyncio.wait_for(ws.receive(), 30)
        assert json.loads(frame.data)["type"] == "Metadata"
        assert (await asyncio.wait_for(ws.receive(), STEP)).type == aiohttp.WSMsgType.CLOSE
    assert ws.protocol == "token"  # the browser's handshake needs the server to pick it
