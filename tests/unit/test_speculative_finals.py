"""Speculative finals in the endpointing engine, the digest that decides whether a final may
take a speculative decode (asr_worker.speculation), and the decoding slot a waiting final lends.

Frames as in test_segmenter: 8 kHz, 10 ms, "1" speech, "0" non-speech. Pad 4 frames, endpoint 10:
the speculation comes on the 4th non-speech frame, 6 frames (60 ms) before the endpoint, which the
tests' minimum gain of 9 frames would forbid, so they use a 20-frame endpoint."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asr_worker import speculation
from asr_worker.transcriber import TranscriberOptions
from asr_worker.worker import Slot
from common.messages import AsrJob
from vad_worker.segmenter import (
    SPECULATION_MIN_GAIN_MS,
    Event,
    FinalReady,
    PartialReady,
    Segmenter,
    SpeculativeReady,
)

from .test_segmenter import FB, OPTS, fake_is_speech, pcm

SPEC = replace(OPTS, endpointing_ms=200, speculative_finals=True)  # endpoint 20 frames, pad 4


def seg(**overrides: Any) -> Segmenter:
    return Segmenter(replace(SPEC, **overrides), fake_is_speech)


def of(events: list[Event], kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, kind)]


def test_the_speculation_carries_the_final_s_audio_before_the_endpoint() -> None:
    s = seg()
    before = s.push(pcm("0" * 10 + "1" * 30 + "000"))
    assert of(before, SpeculativeReady) == []  # 3 frames of pause: the pad is not complete
    at_pad = s.push(pcm("0"))
    [spec] = of(at_pad, SpeculativeReady)
    assert of(at_pad, FinalReady) == []
    rest = s.push(pcm("0" * 16))  # frame 20 of the pause: the endpoint
    [final] = of(rest, FinalReady)
    assert (spec.utterance_index, spec.final_index) == (final.utterance_index, final.final_index) == (0, 1)
    assert spec.audio == final.audio
    assert (spec.start_s, spec.end_s) == (final.start_s, final.end_s)


def test_speech_that_resumes_leaves_the_speculation_unconfirmed() -> None:
    s = seg()
    first = of(s.push(pcm("0" * 10 + "1" * 30 + "0" * 8)), SpeculativeReady)
    events = s.push(pcm("1" * 10 + "0" * 20))
    second = of(events, SpeculativeReady)
    [final] = of(events, FinalReady)
    assert len(first) == len(second) == 1
    assert first[0].final_index == second[0].final_index == final.final_index == 1
    assert first[0].audio != final.audio  # the first guess was too short: not the final
    assert second[0].audio == final.audio
    assert final.audio.startswith(first[0].audio)


def test_no_partial_in_a_pause_the_cadence_catches_up_when_speech_resumes() -> None:
    s = seg(partial_interval_ms=100)  # a partial every 10 frames of utterance audio
    speech = s.push(pcm("0" * 10 + "1" * 21))  # the utterance holds frames 5-30: partials at 10 and 20
    assert [len(p.audio) // FB for p in of(speech, PartialReady)] == [10, 20]
    pause = s.push(pcm("0" * 19))  # the pause crosses 30 and 40 frames: no partial, one speculation
    assert of(pause, PartialReady) == [] and len(of(pause, SpeculativeReady)) == 1
    resumed = s.push(pcm("1"))
    [partial] = of(resumed, PartialReady)  # the cadence catches up with the new word at once
    assert len(partial.audio) == 46 * FB  # frames 5 (pre-roll) to 50


def test_no_speculation_when_the_endpoint_is_nearly_there() -> None:
    gain = SPECULATION_MIN_GAIN_MS // 10  # frames
    near = seg(endpointing_ms=(4 + gain - 1) * 10)
    assert of(near.push(pcm("0" * 10 + "1" * 30 + "0" * 40)), SpeculativeReady) == []
    far = seg(endpointing_ms=(4 + gain) * 10)
    assert len(of(far.push(pcm("0" * 10 + "1" * 30 + "0" * 40)), SpeculativeReady)) == 1


def test_the_long_endpoint_decides_the_gain() -> None:
    s = seg(long_utterance_ms=200, long_endpointing_ms=100)  # long: 10-frame endpoint, 6 frames of gain
    assert of(s.push(pcm("0" * 10 + "1" * 30 + "0" * 40)), SpeculativeReady) == []


def test_off_by_default() -> None:
    s = Segmenter(replace(OPTS, endpointing_ms=200), fake_is_speech)
    assert of(s.push(pcm("0" * 10 + "1" * 30 + "0" * 40)), SpeculativeReady) == []


def test_zero_pad_speculates_on_the_first_non_speech_frame() -> None:
    s = seg(trailing_pad_ms=0)
    [spec] = of(s.push(pcm("0" * 10 + "1" * 30 + "0")), SpeculativeReady)
    [final] = of(s.push(pcm("0" * 19)), FinalReady)
    assert spec.audio == final.audio


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 30)), min_size=1, max_size=20))
def test_every_endpoint_final_was_speculated_with_its_own_audio(runs: list[tuple[bool, int]]) -> None:
    """Whatever the speech, the last speculation before an endpoint final is that final."""
    s = seg(partial_interval_ms=150)
    events = s.push(pcm("".join(("1" if voiced else "0") * n for voiced, n in runs)))
    last: SpeculativeReady | None = None
    for event in events:
        if isinstance(event, SpeculativeReady):
            last = event
        elif isinstance(event, FinalReady):
            assert event.reason == "endpoint"
            assert last is not None and last.final_index == event.final_index
            assert last.audio == event.audio
            last = None


def job(**fields: object) -> AsrJob:
    base: dict[str, object] = dict(session_id="sess-0001", utterance_id="u0", is_final=True, audio=b"\1\2" * 800,
                                   start_s=0.0, end_s=0.1, final_index=1, context_audio=b"")
    return AsrJob(**(base | fields))  # type: ignore[arg-type]


@pytest.mark.parametrize("change", [
    {"audio": b"\1\3" * 800}, {"context_audio": b"\0\0" * 100},
])
def test_the_digest_changes_with_any_input_of_the_decode(change: dict[str, object]) -> None:
    assert speculation.digest(job(), "", "opts") != speculation.digest(job(**change), "", "opts")


def test_the_digest_changes_with_the_prompt_and_the_decoder_and_not_with_the_job_kind() -> None:
    d = speculation.digest(job(), "hello", "opts")
    assert d != speculation.digest(job(), "hello.", "opts")
    assert d != speculation.digest(job(), "hello", "beam 1")
    spec = job(is_final=False, speculative=True, created_at=5.0)
    assert d == speculation.digest(spec, "hello", "opts")
    # Parts are length-prefixed: moving bytes from the audio to the context is another input.
    assert speculation.digest(job(audio=b"ab", context_audio=b"c"), "", "") != speculation.digest(
        job(audio=b"a", context_audio=b"bc"), "", "")


async def test_a_final_s_slot_serves_other_jobs_while_it_waits() -> None:
    slots = asyncio.Semaphore(1)
    await slots.acquire()
    slot = Slot(slots)
    slot.release()
    slot.release()  # once only: the semaphore is not over-released
    assert not slots.locked()
    await slots.acquire()  # another job takes it
    taking = asyncio.create_task(slot.take())
    await asyncio.sleep(0.05)
    assert not taking.done() and not slot.held  # the final must wait for a free slot to decode
    slots.release()
    await asyncio.wait_for(taking, 1)
    assert slot.held and slots.locked()
    slot.release()
    assert not slots.locked()


def test_the_decoder_id_is_the_same_in_every_worker_process() -> None:
    """Two ASR processes must agree on a final's digest. The hallucination filter holds sets,
    whose repr order follows each process's string hash seed: the id must not depend on it."""
    script = ("from asr_worker.speculation import decoder_id; from asr_worker.transcriber import TranscriberOptions; "
              "print(decoder_id(TranscriberOptions()))")
    ids = {subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": seed},
                          capture_output=True, text=True, check=True).stdout for seed in ("1", "2", "3")}
    assert len(ids) == 1
    assert speculation.decoder_id(TranscriberOptions(beam_size=5)) != speculation.decoder_id(TranscriberOptions())
