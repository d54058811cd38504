"""End to end through real processes: edge → JetStream → VAD → ASR → edge → client.

The stack is what `asr dev` runs (cli.dev.Stack): a private nats-server on a free port with its
own data folder, and `python -m ingest`, `python -m vad_worker`, `python -m asr_worker` with the
real tiny.en model, fed the committed espeak-ng speech.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import nats
import pytest
from nats.aio.msg import Msg

from cli.dev import Stack
from common import subjects
from common.messages import Revision, result_decoder
from tests.conftest import ONE_SENTENCE, THREE_UTTERANCES, pcm_of
from tests.helpers import connect, metrics_once_idle, running_stack, stored_results, wer

pytestmark = pytest.mark.slow


# Every final is revised here (not only those the decoder was unsure of, the default), so that the
# revision path runs on this clean speech; the gate itself is tests/unit/test_revision_gate.py.
EVERY_FINAL_REVISED = {"ASR_REVISION_MAX_LOGPROB": "0"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack"), 0, env=EVERY_FINAL_REVISED) as stack:
        yield stack


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def url(stack: Stack) -> str:
    return f"ws://127.0.0.1:{stack.port}/v1/stream"


async def test_three_utterances_in_order_with_partials_first(stack: Stack, http: aiohttp.ClientSession) -> None:
    client = await connect(http, url(stack))
    await client.stream(pcm_of("three_utterances.wav"), chunk_ms=100, realtime=1.0)
    await client.send_json({"type": "end"})
    ended = await client.until("session_ended", timeout=60)
    assert await client.recv() is None and client.close_code == 1000

    finals = client.finals()
    assert [f["seq"] for f in finals] == [1, 2, 3], client.messages
    for final, reference in zip(finals, THREE_UTTERANCES, strict=True):
        assert wer(reference, final["text"]) <= 0.25, (reference, final["text"])
    starts = [f["start_s"] for f in finals]
    assert starts == sorted(starts) and all(f["end_s"] > f["start_s"] for f in finals)
    assert len({f["utterance_id"] for f in finals}) == 3
    assert [f["reason"] for f in finals] == ["endpoint"] * 3  # each ended on its pause

    # Streamed in real time, utterances get partials (a busy ASR worker may skip stale ones, so
    # not necessarily each), and every partial of an utterance comes before its final.
    order = [(m["utterance_id"], m["is_final"]) for m in client.of_type("transcript")]
    assert any(not is_final for _, is_final in order), f"no partial at all: {order}"
    for final in finals:
        uid = final["utterance_id"]
        positions = [i for i, (u, is_final) in enumerate(order) if u == uid and not is_final]
        assert all(i < order.index((uid, True)) for i in positions), order
    started = [m["utterance_id"] for m in client.of_type("speech_started")]
    assert started[:3] == [f["utterance_id"] for f in finals]
    assert ended["metrics"]["transcripts_sent"] == 3
    assert ended["metrics"]["audio_bytes_received"] == len(pcm_of("three_utterances.wav"))


async def test_bad_input_gets_errors_and_the_connection_stays_usable(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    client = await connect(http, url(stack))
    cases = [
        ("text", "{not json", "INVALID_MESSAGE"),
        ("text", '{"type": "sing"}', "INVALID_MESSAGE"),
        ("text", '["audio"]', "INVALID_MESSAGE"),
        ("text", '{"type": "audio", "data": "%%%not base64%%%"}', "INVALID_AUDIO"),
        ("text", '{"type": "audio", "data": "' + base64.b64encode(b"abc").decode() + '"}', "INVALID_AUDIO"),
        ("binary", b"\x01\x02\x03", "INVALID_AUDIO"),
    ]
    for kind, payload, code in cases:
        if kind == "text":
            assert isinstance(payload, str)
            await client.ws.send_str(payload)
        else:
            assert isinstance(payload, bytes)
            await client.ws.send_bytes(payload)
        error = await client.until("error", timeout=10)
        assert error["code"] == code, (payload, error)
        assert error["message"]
    # Good audio after all that still transcribes, as base64 JSON this time.
    pcm = pcm_of("one_sentence.wav")
    for i in range(0, len(pcm), 3200):
        await client.send_json({"type": "audio", "data": base64.b64encode(pcm[i : i + 3200]).decode()})
    await client.send_json({"type": "end"})
    await client.until("session_ended", timeout=60)
    finals = client.finals()
    assert len(finals) == 1 and finals[0]["seq"] == 1
    assert wer(ONE_SENTENCE, finals[0]["text"]) <= 0.25, finals[0]["text"]


async def test_finalize_cuts_the_utterance_now(stack: Stack, http: aiohttp.ClientSession) -> None:
    client = await connect(http, url(stack))
    pcm = pcm_of("one_sentence.wav")
    # The sentence without its trailing silence (its speech ends at 3.06 s): no endpoint can fire,
    # only finalize ends it. (At 3.3 s the 240 ms endpoint of a long utterance fired first.)
    await client.stream(pcm[: int(3.1 * 32000)])
    await client.send_json({"type": "finalize"})
    final = await client.until("transcript", timeout=30)
    while not final["is_final"]:
        final = await client.until("transcript", timeout=30)
    assert final["seq"] == 1 and wer(ONE_SENTENCE, final["text"]) <= 0.25, final
    assert final["reason"] == "finalize"
    await client.send_json({"type": "keepalive"})
    await client.send_json({"type": "end"})
    ended = await client.until("session_ended", timeout=30)
    assert ended["metrics"]["transcripts_sent"] == 1


async def test_silence_and_noise_give_no_transcript(stack: Stack, http: aiohttp.ClientSession) -> None:
    import numpy as np

    rng = np.random.default_rng(7)
    noise = (rng.normal(0, 60, 16000 * 3)).astype("<i2").tobytes()  # about -55 dBFS
    client = await connect(http, url(stack))
    await client.stream(bytes(16000 * 2 * 2) + noise)
    await client.send_json({"type": "end"})
    ended = await client.until("session_ended", timeout=30)
    assert client.finals() == [] and ended["metrics"]["transcripts_sent"] == 0


async def test_other_sample_rates_are_converted_by_the_edge(stack: Stack, http: aiohttp.ClientSession) -> None:
    import numpy as np

    pcm16 = np.frombuffer(pcm_of("one_sentence.wav"), "<i2").astype(np.float64)
    # 8 kHz by taking every second sample of a smoothed signal (the sentence is band-limited speech).
    pcm8 = np.convolve(pcm16, [0.25, 0.5, 0.25], "same")[::2].astype("<i2").tobytes()
    ws = await asyncio.wait_for(http.ws_connect(url(stack) + "?sample_rate=8000"), 10)
    from tests.helpers import Client

    client = Client(ws)
    started = await client.recv()
    assert started is not None and started["sample_rate"] == 8000
    await client.stream(pcm8, chunk_ms=200)
    await client.send_json({"type": "end"})
    await client.until("session_ended", timeout=60)
    finals = client.finals()
    assert len(finals) == 1 and wer(ONE_SENTENCE, finals[0]["text"]) <= 0.25, finals


async def test_bad_sample_rate_is_refused_before_upgrade(stack: Stack, http: aiohttp.ClientSession) -> None:
    async with http.get(f"http://127.0.0.1:{stack.port}/v1/stream?sample_rate=123") as resp:
        assert resp.status == 400
        body = await resp.json()
        assert body["code"] == "INVALID_MESSAGE" and "sample_rate" in body["message"]


async def test_readyz_and_json_metrics(stack: Stack, http: aiohttp.ClientSession) -> None:
    async with http.get(f"http://127.0.0.1:{stack.port}/readyz") as resp:
        body = await resp.json()
        assert resp.status == 200 and body["checks"] == {
            "nats": True, "not_draining": True, "vad_worker": True, "asr_worker": True,
        }
    # The sessions of the tests before this one may still be closing (their clients went with their
    # tests' HTTP sessions a moment ago): the count comes back to 0, within seconds.
    body = await metrics_once_idle(http, stack.port)
    assert body["active_sessions"] == 0 and body["max_sessions"] == 200


def test_logs_say_what_happened(stack: Stack) -> None:
    log = Path(stack.data_dir / "stack.log").read_text()
    assert "effective configuration" in log
    assert "final 1" in log


async def test_resume_on_the_same_edge_without_redis(stack: Stack, http: aiohttp.ClientSession) -> None:
    """The in-memory store resumes a dropped session on its own edge and replays missed finals."""
    pcm = pcm_of("three_utterances.wav")
    cut = 6 * 32000
    client = await connect(http, url(stack))
    started = client.messages[0]
    await client.stream(pcm[:cut], chunk_ms=100, realtime=2.0)
    final = await client.until("transcript", timeout=30)
    while not final["is_final"]:
        final = await client.until("transcript", timeout=30)
    await client.ws.close()  # the phone drops; the client saw final 1 but pretends it did not

    again = await connect(http, url(stack))
    await again.send_json({"type": "reconnect", "previous_session_id": started["session_id"],
                           "resume_token": started["resume_token"], "last_seq": 0})
    recovered = await again.until("session_recovered", timeout=15)
    assert recovered["previous_metrics"]["transcripts_sent"] == 1
    assert recovered["previous_metrics"]["audio_bytes_received"] == cut
    await again.stream(pcm[cut:], chunk_ms=100, realtime=4.0)
    await again.send_json({"type": "end"})
    await again.until("session_ended", timeout=60)
    finals = again.finals()
    assert [f["seq"] for f in finals] == [1, 2, 3], again.messages  # seq 1 replayed from the stream
    for f, reference in zip(finals, THREE_UTTERANCES, strict=True):
        assert wer(reference, f["text"]) <= 0.25, (reference, f["text"])
    # Resuming needs the first message to be reconnect, and a valid token.
    third = await connect(http, url(stack))
    await third.send_json({"type": "keepalive"})
    await third.send_json({"type": "reconnect", "previous_session_id": started["session_id"],
                           "resume_token": started["resume_token"], "last_seq": 3})
    error = await third.until("error", timeout=10)
    assert error["code"] == "INVALID_MESSAGE" and "first message" in error["message"]
    fourth = await connect(http, url(stack))
    await fourth.send_json({"type": "reconnect", "previous_session_id": started["session_id"],
                            "resume_token": started["resume_token"], "last_seq": 3})
    error = await fourth.until("error", timeout=10)
    assert error["code"] == "RESUME_FAILED" and "closed" in error["message"]  # it ended with `end`


async def test_each_final_after_the_first_brings_the_revision_of_the_one_before(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    """revise_finals (on by default; here for every final): the ASR worker that decodes final n
    decodes final n-1 again with final n's audio after it and publishes the outcome (new text, or
    "" for no change) unless it skipped it and said why in its log (only "late" or "no_previous"
    can happen here); a changed text reaches the client as `revision` naming a seq it has, and
    `end` waits for the last one."""
    nc = await nats.connect(stack.nats.url)
    outcomes: list[Revision] = []

    async def note(msg: Msg) -> None:
        result = result_decoder.decode(msg.data)
        assert isinstance(result, Revision)
        outcomes.append(result)

    try:
        client = await connect(http, url(stack))
        sid = client.of_type("session_started")[0]["session_id"]
        await nc.subscribe(subjects.result_revision(sid), cb=note)
        await nc.flush()
        await client.stream(pcm_of("three_utterances.wav"), chunk_ms=100, realtime=1.0)
        await client.send_json({"type": "end"})
        await client.until("session_ended", timeout=60)
        stored = await stored_results(nc.jetstream(), subjects.result_revision(sid))
    finally:
        await nc.close()
    assert stored == sorted(outcomes, key=lambda r: r.final_index)  # each kept in RESULTS, as published
    finals = client.finals()
    assert [f["seq"] for f in finals] == [1, 2, 3]
    log = await asyncio.to_thread((stack.data_dir / "stack.log").read_text)
    skipped = {i for i in (1, 2) if re.search(rf"session {sid}: final {i} revision: no_previous", log)}
    assert sorted(r.final_index for r in outcomes) == sorted({1, 2} - skipped), (outcomes, skipped)
    assert all(r.utterance_id == finals[r.final_index - 1]["utterance_id"] for r in outcomes)
    changed = {r.final_index: r.text for r in outcomes if r.text}
    sent = client.of_type("revision")
    # A revision of a final still in the client's queue replaced its text there instead.
    for index, text in changed.items():
        shown = [m["text"] for m in sent if m["seq"] == index] or [finals[index - 1]["text"]]
        assert shown == [text], (index, text, sent, finals)
    assert all(m["seq"] in changed for m in sent)
