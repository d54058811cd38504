"""Speculative finals end to end, in the dictation profile (800 ms endpoint, 400 ms once an
utterance holds 4 s of speech), where each final's audio is known 200-600 ms before its endpoint.

The ASR workers' metrics say whether each final took its speculative decode; the finals must be
the same words either way."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cli.dev import Stack
from tests.conftest import THREE_UTTERANCES, pcm_of
from tests.helpers import connect, running_stack, wer

pytestmark = pytest.mark.slow

DICTATION = {"ASR_ENDPOINTING_MS": "800", "ASR_LONG_UTTERANCE_SECONDS": "4", "ASR_LONG_ENDPOINTING_MS": "400"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("spec"), 0, env=DICTATION) as stack:
        yield stack


def outcomes(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {s.labels["outcome"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "asr_speculative_finals_total"}


async def test_finals_take_their_speculative_decode(stack: Stack) -> None:
    before = outcomes(stack.asr_http_port)
    pcm = pcm_of("three_utterances.wav") + bytes(32000)  # a second of silence: the last endpoint too
    async with aiohttp.ClientSession() as http:
        client = await connect(http, f"ws://127.0.0.1:{stack.port}/v1/stream")
        await client.stream(pcm, chunk_ms=100, realtime=1.0)  # a live speaker: the pauses take their time
        await client.send_json({"type": "end"})
        await client.until("session_ended", timeout=60)
    finals = client.finals()
    assert len(finals) == 3, finals
    assert wer(" ".join(THREE_UTTERANCES), " ".join(f["text"] for f in finals)) <= 0.15, finals
    after = outcomes(stack.asr_http_port)
    moved = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in ("used", "waited", "timeout", "none")}
    assert sum(moved.values()) == 3, moved  # every final looked for its speculation
    assert moved["timeout"] == 0, moved
    # Each pause was long enough for a speculation; at least one final (in practice all three)
    # came from it instead of a second decode.
    assert moved["used"] + moved["waited"] >= 1, moved
