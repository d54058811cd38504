"""Unit tests of the pure endpointing engine.

Most tests drive it with a fake classifier over synthetic frames: 8 kHz, 10 ms frames (80 samples,
160 bytes, 0.01 s each) whose first byte is 1 for speech, built from pattern strings such as
"0" * 10 + "1" * 20. Frame k therefore covers [k / 100, (k + 1) / 100) seconds.
"""

from __future__ import annotations

import wave
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from vad_worker.segmenter import (
    Event,
    FinalReady,
    PartialReady,
    Segmenter,
    SegmenterOptions,
    SpeechStarted,
    UtteranceEnded,
)

FB = 160  # bytes per frame at 8 kHz / 10 ms
OPTS = SegmenterOptions(
    sample_rate=8000,
    frame_ms=10,
    pre_roll_ms=50,  # 5 frames
    min_speech_ms=30,  # 3 frames
    endpointing_ms=100,  # 10 frames
    trailing_pad_ms=40,  # 4 frames
    partial_interval_ms=10_000,  # out of the way unless a test sets it
    max_utterance_ms=20_000,
)
a = pytest.approx
DATA = Path(__file__).resolve().parents[1] / "data"


def fake_is_speech(frame: bytes) -> bool:
    assert len(frame) == FB, "the classifier must always get whole frames"
    return frame[0] == 1


def pcm(pattern: str) -> bytes:
    return b"".join(bytes([int(c)]) + bytes(FB - 1) for c in pattern)


def segmenter(**overrides: Any) -> Segmenter:
    return Segmenter(replace(OPTS, **overrides), fake_is_speech)


def summary(events: list[Event]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for e in events:
        match e:
            case SpeechStarted():
                out.append(("start", e.utterance_index, e.start_s))
            case PartialReady():
                out.append(("partial", e.utterance_index, len(e.audio), e.start_s, e.end_s))
            case FinalReady():
                n = len(e.audio)
                out.append(("final", e.utterance_index, e.final_index, n, e.start_s, e.end_s, e.reason))
            case UtteranceEnded():
                out.append(("ended", e.utterance_index, e.end_s))
    return out


def test_simple_utterance_with_pre_roll() -> None:
    seg = segmenter(partial_interval_ms=200)  # 20 frames
    audio = pcm("0" * 10 + "1" * 20 + "0" * 10)
    events = seg.push(audio)
    # Voiced frames 10..29; the third one (12) starts it with 5 frames of pre-roll (5..9).
    # The partial comes when the utterance holds 20 frames (5..24). The 10th silent frame (39)
    # ends it; the final keeps 4 frames of pad after the last voiced frame: 5..33.
    assert summary(events) == [
        ("start", 0, a(0.05)),
        ("partial", 0, 20 * FB, a(0.05), a(0.25)),
        ("final", 0, 1, 29 * FB, a(0.05), a(0.34), "endpoint"),
        ("ended", 0, a(0.34)),
    ]
    final = events[2]
    assert isinstance(final, FinalReady)
    assert final.audio == audio[5 * FB : 34 * FB]
    assert not seg.in_speech
    assert seg.finals_emitted == 1
    assert seg.samples_seen == 40 * 80


def test_speech_started_is_emitted_on_the_frame_that_completes_min_speech() -> None:
    seg = segmenter()
    assert seg.push(pcm("0" * 10 + "11")) == []
    assert summary(seg.push(pcm("1"))) == [("start", 0, a(0.05))]
    assert seg.in_speech


def test_pre_roll_is_clipped_at_the_start_of_the_stream() -> None:
    seg = segmenter()
    events = seg.push(pcm("00" + "1" * 5 + "0" * 10))
    assert summary(events) == [
        ("start", 0, a(0.0)),
        ("final", 0, 1, 11 * FB, a(0.0), a(0.11), "endpoint"),
        ("ended", 0, a(0.11)),
    ]


def test_zero_pre_roll_starts_at_the_first_voiced_frame() -> None:
    seg = segmenter(pre_roll_ms=0)
    events = seg.push(pcm("0" * 10 + "1" * 5 + "0" * 10))
    assert summary(events)[0] == ("start", 0, a(0.10))


@pytest.mark.parametrize("pattern", ["0" * 5 + "11" + "0" * 30, "1", "10" * 40, "110" * 30, "11"])
def test_blips_shorter_than_min_speech_are_ignored(pattern: str) -> None:
    seg = segmenter()
    assert seg.push(pcm(pattern)) == []
    assert seg.end() == []


def test_endpoint_needs_exactly_endpointing_ms_of_silence() -> None:
    seg = segmenter()
    assert summary(seg.push(pcm("1" * 5 + "0" * 9))) == [("start", 0, a(0.0))]
    assert seg.in_speech
    assert summary(seg.push(pcm("0"))) == [
        ("final", 0, 1, 9 * FB, a(0.0), a(0.09), "endpoint"),
        ("ended", 0, a(0.09)),
    ]


def test_speech_inside_the_silence_run_resets_it() -> None:
    seg = segmenter()
    events = seg.push(pcm("1" * 5 + "0" * 9 + "1" + "0" * 9))
    assert summary(events) == [("start", 0, a(0.0))]
    assert summary(seg.push(pcm("0")))[0] == ("final", 0, 1, 19 * FB, a(0.0), a(0.19), "endpoint")


def test_durations_are_rounded_up_to_whole_frames() -> None:
    # 500 ms of 30 ms frames is 16.7 frames, rounded up to 17 (0.51 s).
    seg = Segmenter(SegmenterOptions(trailing_pad_ms=0), lambda f: f[0] == 1)
    frame = 960
    speech, silence = b"\x01" + bytes(frame - 1), bytes(frame)
    assert len(seg.push(speech * 3 + silence * 16)) == 1
    events = seg.push(silence)
    assert summary(events) == [("final", 0, 1, 3 * frame, a(0.0), a(0.09), "endpoint"), ("ended", 0, a(0.09))]


@pytest.mark.parametrize(("pad_ms", "end_s"), [(0, 0.05), (40, 0.09), (70, 0.12), (200, 0.15)])
def test_trailing_pad_is_capped_at_the_audio_appended(pad_ms: int, end_s: float) -> None:
    seg = segmenter(trailing_pad_ms=pad_ms)
    events = seg.push(pcm("1" * 5 + "0" * 10))
    final = events[1]
    assert isinstance(final, FinalReady)
    assert final.start_s == 0.0
    assert final.end_s == a(end_s)
    assert len(final.audio) == round(end_s * 100) * FB


def test_two_utterances_have_their_own_indices_and_pre_roll() -> None:
    seg = segmenter()
    events = seg.push(pcm("0" * 10 + "1" * 10 + "0" * 12 + "1" * 10 + "0" * 10))
    # The second utterance's pre-roll is the silence after the first one's cut (0.24): 27..31.
    assert summary(events) == [
        ("start", 0, a(0.05)),
        ("final", 0, 1, 19 * FB, a(0.05), a(0.24), "endpoint"),
        ("ended", 0, a(0.24)),
        ("start", 1, a(0.27)),
        ("final", 1, 2, 19 * FB, a(0.27), a(0.46), "endpoint"),
        ("ended", 1, a(0.46)),
    ]
    assert seg.finals_emitted == 2


def test_pre_roll_never_reaches_back_into_the_previous_utterance() -> None:
    seg = segmenter(trailing_pad_ms=80)  # the first cut is at 0.18, leaving 2 silent frames
    events = seg.push(pcm("1" * 10 + "0" * 10 + "1" * 10 + "0" * 10))
    assert summary(events)[:4] == [
        ("start", 0, a(0.0)),
        ("final", 0, 1, 18 * FB, a(0.0), a(0.18), "endpoint"),
        ("ended", 0, a(0.18)),
        ("start", 1, a(0.18)),
    ]


def test_partial_cadence() -> None:
    seg = segmenter(partial_interval_ms=200)
    events = seg.push(pcm("0" * 5 + "1" * 60 + "0" * 10))
    assert summary(events) == [
        ("start", 0, a(0.0)),
        ("partial", 0, 20 * FB, a(0.0), a(0.20)),
        ("partial", 0, 40 * FB, a(0.0), a(0.40)),
        ("partial", 0, 60 * FB, a(0.0), a(0.60)),
        ("final", 0, 1, 69 * FB, a(0.0), a(0.69), "endpoint"),
        ("ended", 0, a(0.69)),
    ]


def test_no_partial_on_the_frame_that_ends_the_utterance() -> None:
    seg = segmenter(partial_interval_ms=200)
    events = seg.push(pcm("1" * 10 + "0" * 10))  # the endpoint frame makes 20 frames
    assert [type(e) for e in events] == [SpeechStarted, FinalReady, UtteranceEnded]


def test_max_length_cut_continues_while_speech_goes_on() -> None:
    seg = segmenter(max_utterance_ms=1000)  # 100 frames
    events = seg.push(pcm("1" * 150 + "0" * 10))
    assert summary(events) == [
        ("start", 0, a(0.0)),
        ("final", 0, 1, 100 * FB, a(0.0), a(1.0), "max_length"),
        ("ended", 0, a(1.0)),
        ("start", 1, a(1.0)),
        ("final", 1, 2, 54 * FB, a(1.0), a(1.54), "endpoint"),
        ("ended", 1, a(1.54)),
    ]


def test_max_length_cut_on_silence_goes_back_to_silence() -> None:
    seg = segmenter(max_utterance_ms=1000)
    events = seg.push(pcm("1" * 95 + "0" * 5 + "1" * 5 + "0" * 10))
    # After the cut at 1.0 no pre-roll is available: the next utterance starts at 1.0 too.
    assert summary(events) == [
        ("start", 0, a(0.0)),
        ("final", 0, 1, 100 * FB, a(0.0), a(1.0), "max_length"),
        ("ended", 0, a(1.0)),
        ("start", 1, a(1.0)),
        ("final", 1, 2, 9 * FB, a(1.0), a(1.09), "endpoint"),
        ("ended", 1, a(1.09)),
    ]


def test_finalize_mid_utterance_then_speech_goes_on() -> None:
    seg = segmenter()
    assert len(seg.push(pcm("0" * 5 + "1" * 10) + b"\x01" * 50)) == 1
    assert summary(seg.finalize()) == [
        ("final", 0, 1, 15 * FB, a(0.0), a(0.15), "finalize"),
        ("ended", 0, a(0.15)),
    ]
    assert not seg.in_speech
    # The 50 buffered bytes were kept: they complete frame 15.
    events = seg.push(b"\x01" * (FB - 50) + pcm("1" * 4 + "0" * 10))
    assert summary(events) == [
        ("start", 1, a(0.15)),
        ("final", 1, 2, 9 * FB, a(0.15), a(0.24), "endpoint"),
        ("ended", 1, a(0.24)),
    ]


def test_finalize_in_silence_emits_nothing() -> None:
    seg = segmenter()
    seg.push(pcm("0" * 20 + "11"))
    assert seg.finalize() == []
    assert summary(seg.push(pcm("1"))) == [("start", 0, a(0.15))]


def test_end_closes_an_open_utterance() -> None:
    seg = segmenter()
    seg.push(pcm("1" * 5 + "000"))
    assert summary(seg.end()) == [("final", 0, 1, 8 * FB, a(0.0), a(0.08), "end"), ("ended", 0, a(0.08))]


def test_end_classifies_the_zero_padded_remainder_but_keeps_only_real_bytes() -> None:
    seg = segmenter()
    seg.push(pcm("11") + b"\x01" + bytes(50))  # 51 bytes: 25 samples and a dangling byte
    assert seg.samples_seen == 2 * 80 + 25
    events = seg.end()
    end_s = (2 * 80 + 25) / 8000
    assert summary(events) == [
        ("start", 0, a(0.0)),
        ("final", 0, 1, 2 * FB + 50, a(0.0), a(end_s), "end"),
        ("ended", 0, a(end_s)),
    ]


def test_end_in_silence_with_a_remainder_emits_nothing() -> None:
    seg = segmenter()
    seg.push(pcm("000") + bytes(33))
    assert seg.end() == []


def test_push_and_end_after_end_raise() -> None:
    seg = segmenter()
    seg.end()
    with pytest.raises(RuntimeError):
        seg.push(pcm("1"))
    with pytest.raises(RuntimeError):
        seg.end()
    assert seg.finalize() == []


LONG_PATTERN = (
    "0" * 7 + "1" * 40 + "0" * 12 + "1" * 2 + "0" * 30 + "1" * 130 + "0" * 3 + "1" * 9 + "0" * 11 + "1" * 25
)


@pytest.mark.parametrize("chunk", [1, 7, 159, 161, 333, 4096])
def test_chunking_does_not_change_events(chunk: int) -> None:
    overrides = {"partial_interval_ms": 200, "max_utterance_ms": 1000}
    audio = pcm(LONG_PATTERN) + b"\x01" * 70
    whole = segmenter(**overrides)
    expected = [e for i in range(0, len(audio) - 70, FB) for e in whole.push(audio[i : i + FB])]
    expected += whole.push(audio[-70:]) + whole.end()
    assert [type(e) for e in expected].count(FinalReady) == 4
    chunked = segmenter(**overrides)
    got = [e for i in range(0, len(audio), chunk) for e in chunked.push(audio[i : i + chunk])]
    assert got + chunked.end() == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample_rate": 44100}, "sample_rate must be"),
        ({"frame_ms": 25}, "frame_ms must be 10, 20 or 30"),
        ({"endpointing_ms": 0}, "endpointing_ms must be positive"),
        ({"min_speech_ms": -30}, "min_speech_ms must be positive"),
        ({"max_utterance_ms": 0}, "max_utterance_ms must be positive"),
        ({"partial_interval_ms": 0}, "partial_interval_ms must be positive"),
        ({"pre_roll_ms": -1}, "pre_roll_ms must be zero or positive"),
        ({"trailing_pad_ms": -1}, "trailing_pad_ms must be zero or positive"),
        ({"max_utterance_ms": 390}, "max_utterance_ms must be longer than"),
    ],
)
def test_options_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SegmenterOptions(**kwargs)


def test_zero_pre_roll_and_pad_are_allowed() -> None:
    opts = SegmenterOptions(pre_roll_ms=0, trailing_pad_ms=0, frame_ms=20)
    assert (opts.frame_bytes, opts.frames(500)) == (640, 25)


def test_memory_stays_bounded_after_a_long_silence() -> None:
    seg = segmenter()
    minute = pcm("0" * 6000)
    for _ in range(10):
        seg.push(minute + b"\0" * 17)
    # Pre-roll (5 frames) + min_speech (3 frames) + less than one frame of input.
    assert seg.buffered_bytes <= 8 * FB + FB


@settings(max_examples=60, deadline=None)
@given(
    runs=st.lists(st.tuples(st.booleans(), st.integers(1, 60)), max_size=40),
    chunk=st.integers(1, 3 * FB),
)
def test_invariants_on_random_streams(runs: list[tuple[bool, int]], chunk: int) -> None:
    seg = segmenter(partial_interval_ms=200, max_utterance_ms=500)
    audio = pcm("".join(("1" if voiced else "0") * n for voiced, n in runs))
    events: list[Event] = []
    for i in range(0, len(audio), chunk):
        events += seg.push(audio[i : i + chunk])
        assert seg.buffered_bytes <= 50 * FB + 8 * FB + FB
    events += seg.end()
    open_index, finals, last_end = None, 0, 0.0
    for e in events:
        if isinstance(e, SpeechStarted):
            assert open_index is None and e.start_s >= last_end
            open_index = e.utterance_index
        elif isinstance(e, PartialReady | FinalReady):
            assert e.utterance_index == open_index and len(e.audio) <= 50 * FB
            assert e.end_s == a(e.start_s + len(e.audio) / 2 / 8000)
            if isinstance(e, FinalReady):
                finals += 1
                assert e.final_index == finals
        else:
            assert e.utterance_index == open_index
            open_index, last_end = None, e.end_s
    assert open_index is None and seg.finals_emitted == finals


def _speech_bounds(samples: bytes, rate: int) -> list[tuple[float, float]]:
    """Sentence boundaries from 10 ms RMS energy: loud runs, merging gaps under 0.5 s."""
    import numpy as np

    x = np.frombuffer(samples, dtype="<i2").astype(np.float64)
    hop = rate // 100
    rms = np.sqrt((x[: len(x) // hop * hop].reshape(-1, hop) ** 2).mean(axis=1))
    loud = np.flatnonzero(rms > 300)  # the noise floor is ~10, speech peaks in the thousands
    bounds: list[tuple[float, float]] = []
    for i in loud:
        if bounds and i / 100 - bounds[-1][1] < 0.5:
            bounds[-1] = (bounds[-1][0], (i + 1) / 100)
        else:
            bounds.append((i / 100, (i + 1) / 100))
    return bounds


def test_real_webrtcvad_finds_the_three_sentences() -> None:
    import webrtcvad

    with wave.open(str(DATA / "three_utterances.wav"), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        samples = w.readframes(w.getnframes())
    bounds = _speech_bounds(samples, 16000)
    assert [t for bound in bounds for t in bound] == a([0.55, 2.72, 4.62, 7.06, 8.95, 11.61])

    vad = webrtcvad.Vad(2)
    # webrtcvad flags 90 ms of the lead-in noise while it adapts (0.03-0.12 s), which the default
    # min_speech_ms would take as speech, so this test asks for 150 ms. Its voiced runs overhang the
    # energy bounds by ~0.1 s at each end, so a shorter pre-roll and pad keep ±0.3 s meaningful.
    opts = SegmenterOptions(min_speech_ms=150, pre_roll_ms=150, trailing_pad_ms=60)
    seg = Segmenter(opts, lambda frame: vad.is_speech(frame, 16000))
    events = [e for i in range(0, len(samples), 3200) for e in seg.push(samples[i : i + 3200])] + seg.end()
    finals = [e for e in events if isinstance(e, FinalReady)]
    assert [f.reason for f in finals] == ["endpoint"] * 3
    for final, (start, end) in zip(finals, bounds, strict=True):
        assert final.start_s == pytest.approx(start, abs=0.3)
        assert final.end_s == pytest.approx(end, abs=0.3)


# --- max_buffer_bytes: a hard cap on the open utterance's audio -------------------------------


def numbered(pattern: str) -> bytes:
    """Like `pcm`, but every frame also carries its index, so audio slices can be told apart."""
    return b"".join(bytes([int(c), k % 256, k // 256]) + bytes(FB - 3) for k, c in enumerate(pattern))


def test_trimming_keeps_the_last_max_buffer_bytes_and_moves_start_forward() -> None:
    audio = numbered("0" * 10 + "1" * 30 + "0" * 10)
    uncapped = segmenter()
    assert summary(uncapped.push(audio))[1] == ("final", 0, 1, 39 * FB, a(0.05), a(0.44), "endpoint")
    seg = segmenter(max_buffer_bytes=20 * FB)
    events = seg.push(audio)
    # The utterance held frames 5..49 (45) when the endpoint came; only 30..49 were kept. Its final
    # is 30..43 (the last voiced frame, 39, plus 4 frames of pad): it starts 25 frames later.
    assert summary(events) == [
        ("start", 0, a(0.05)),
        ("final", 0, 1, 14 * FB, a(0.30), a(0.44), "endpoint"),
        ("ended", 0, a(0.44)),
    ]
    final = events[1]
    assert isinstance(final, FinalReady)
    assert final.audio == audio[30 * FB : 44 * FB]
    assert seg.overflow_bytes == 25 * FB
    assert uncapped.overflow_bytes == 0
    assert "overflow_bytes=4000" in repr(seg)


def test_overflow_bytes_add_up_over_utterances() -> None:
    seg = segmenter(max_buffer_bytes=20 * FB)
    seg.push(pcm("0" * 10 + "1" * 30 + "0" * 10))  # 25 frames dropped
    assert seg.overflow_bytes == 25 * FB
    seg.push(pcm("1" * 15 + "0" * 10))  # frames 45..74 with pre-roll 45..49: 30 frames, 10 dropped
    assert seg.overflow_bytes == 35 * FB
    seg.push(pcm("1" * 5 + "0" * 10))  # 15 frames: nothing dropped
    assert seg.overflow_bytes == 35 * FB


def test_partials_after_trimming_carry_the_kept_audio_at_the_usual_cadence() -> None:
    audio = numbered("1" * 70 + "0" * 10)
    seg = segmenter(max_buffer_bytes=20 * FB, partial_interval_ms=200)
    events = seg.push(audio)
    # The cadence counts the whole utterance (every 20 frames); each partial holds the last 20.
    assert summary(events) == [
        ("start", 0, a(0.0)),
        ("partial", 0, 20 * FB, a(0.0), a(0.20)),
        ("partial", 0, 20 * FB, a(0.20), a(0.40)),
        ("partial", 0, 20 * FB, a(0.40), a(0.60)),
        ("final", 0, 1, 14 * FB, a(0.60), a(0.74), "endpoint"),
        ("ended", 0, a(0.74)),
    ]
    partials = [e.audio for e in events if isinstance(e, PartialReady)]
    assert partials == [audio[0 : 20 * FB], audio[20 * FB : 40 * FB], audio[40 * FB : 60 * FB]]
    assert seg.overflow_bytes == 60 * FB


def test_max_length_still_cuts_on_the_total_duration() -> None:
    seg = segmenter(max_utterance_ms=1000, max_buffer_bytes=30 * FB)  # 100 frames, 30 kept
    events = seg.push(pcm("1" * 150 + "0" * 10))
    # As in test_max_length_cut_continues_while_speech_goes_on, cut at 1.0 s and 1.54 s, but each
    # final holds only its last 30 frames (the second ends 60 frames after 1.0 s, 24 of them kept).
    assert summary(events) == [
        ("start", 0, a(0.0)),
        ("final", 0, 1, 30 * FB, a(0.70), a(1.0), "max_length"),
        ("ended", 0, a(1.0)),
        ("start", 1, a(1.0)),
        ("final", 1, 2, 24 * FB, a(1.30), a(1.54), "endpoint"),
        ("ended", 1, a(1.54)),
    ]
    assert seg.overflow_bytes == (70 + 30) * FB


def test_the_opening_audio_is_trimmed_but_speech_started_reports_the_true_start() -> None:
    seg = segmenter(max_buffer_bytes=2 * FB, partial_interval_ms=10)
    audio = numbered("0" * 10 + "111")
    events = seg.push(audio)
    # Pre-roll 5..9 and voiced 10..12 open it at 0.05; only 11..12 are kept, as the partial shows.
    assert summary(events) == [("start", 0, a(0.05)), ("partial", 0, 2 * FB, a(0.11), a(0.13))]
    partial = events[1]
    assert isinstance(partial, PartialReady)
    assert partial.audio == audio[11 * FB :]
    assert seg.overflow_bytes == 6 * FB


def test_a_cap_shorter_than_the_trailing_silence_gives_an_empty_final() -> None:
    seg = segmenter(max_buffer_bytes=5 * FB)
    events = seg.push(pcm("1" * 10 + "0" * 10))
    # At the endpoint only silent frames 15..19 are kept; the voiced audio and its pad are gone.
    assert summary(events) == [
        ("start", 0, a(0.0)),
        ("final", 0, 1, 0, a(0.15), a(0.15), "endpoint"),
        ("ended", 0, a(0.15)),
    ]
    assert seg.overflow_bytes == 15 * FB


def test_finalize_and_end_after_trimming() -> None:
    seg = segmenter(max_buffer_bytes=10 * FB)
    seg.push(pcm("1" * 25))
    assert summary(seg.finalize()) == [
        ("final", 0, 1, 10 * FB, a(0.15), a(0.25), "finalize"),
        ("ended", 0, a(0.25)),
    ]
    seg.push(pcm("1" * 20) + b"\x01" * 51)  # a new utterance from 0.25 (no pre-roll left)
    # end() adds the 50 real bytes of the remainder; the last 10 frames' worth of bytes are kept.
    end_s = 0.45 + 25 / 8000
    assert summary(seg.end()) == [
        ("final", 1, 2, 10 * FB, a(end_s - 0.10), a(end_s), "end"),
        ("ended", 1, a(end_s)),
    ]
    assert seg.overflow_bytes == 15 * FB + (20 * FB + 50 - 10 * FB)


def test_max_buffer_bytes_is_rounded_down_to_whole_frames() -> None:
    audio = pcm(LONG_PATTERN)
    exact, rounded = segmenter(max_buffer_bytes=20 * FB), segmenter(max_buffer_bytes=21 * FB - 2)
    assert rounded.push(audio) + rounded.end() == exact.push(audio) + exact.end()
    assert rounded.overflow_bytes == exact.overflow_bytes > 0


@pytest.mark.parametrize("cap", [0, 100 * FB, 10**9])
def test_a_cap_at_or_above_max_utterance_changes_nothing(cap: int) -> None:
    overrides = {"partial_interval_ms": 200, "max_utterance_ms": 1000}  # 100 frames
    audio = pcm(LONG_PATTERN) + b"\x01" * 70
    plain, capped = segmenter(**overrides), segmenter(**overrides, max_buffer_bytes=cap)
    assert capped.push(audio) + capped.end() == plain.push(audio) + plain.end()
    assert capped.overflow_bytes == 0


@pytest.mark.parametrize(("cap", "ok"), [(0, True), (1, False), (-960, False), (959, False), (960, True)])
def test_max_buffer_bytes_validation(cap: int, ok: bool) -> None:
    if ok:
        assert SegmenterOptions(max_buffer_bytes=cap).max_buffer_bytes == cap
    else:
        with pytest.raises(ValueError, match=r"max_buffer_bytes must be 0 \(off\) or at least one frame \(960 bytes\)"):
            SegmenterOptions(max_buffer_bytes=cap)


@settings(max_examples=60, deadline=None)
@given(
    runs=st.lists(st.tuples(st.booleans(), st.integers(1, 60)), max_size=40),
    chunk=st.integers(1, 3 * FB),
    cap_frames=st.integers(8, 60),
    cap_extra=st.integers(0, FB - 1),
    remainder=st.integers(0, FB - 1),
)
# Found by hypothesis: silence after a max-length cut, longer than the cap, was trimmed and then
# taken for trimmed speech (a final of silence where the uncapped stream had none).
@example(runs=[(False, 1), (True, 49), (False, 9)], chunk=1, cap_frames=8, cap_extra=0, remainder=0)
def test_capped_streams_match_uncapped_ones_but_keep_only_the_newest_audio(
    runs: list[tuple[bool, int]], chunk: int, cap_frames: int, cap_extra: int, remainder: int
) -> None:
    # With a cap of at least pre-roll + min_speech (8 frames), the cap changes no decision: the same
    # events come, but partials and finals keep only their newest `cap` bytes and start later.
    overrides = {"partial_interval_ms": 200, "max_utterance_ms": 500}
    cap = cap_frames * FB
    plain, seg = segmenter(**overrides), segmenter(**overrides, max_buffer_bytes=cap + cap_extra)
    audio = pcm("".join(("1" if voiced else "0") * n for voiced, n in runs)) + b"\x01" * remainder
    expected: list[Event] = []
    got: list[Event] = []
    for i in range(0, len(audio), chunk):
        expected += plain.push(audio[i : i + chunk])
        got += seg.push(audio[i : i + chunk])
        # In speech the kept utterance, in silence the pre-roll candidates; plus a partial frame.
        assert seg.buffered_bytes < max(cap, 8 * FB) + FB
        assert seg.buffered_bytes <= cap + cap_extra + OPTS.frames(OPTS.pre_roll_ms) * FB + FB
    expected += plain.end()
    got += seg.end()
    assert len(got) == len(expected)
    lost = 0
    for mine, theirs in zip(got, expected, strict=True):
        if isinstance(mine, PartialReady | FinalReady):
            assert isinstance(theirs, type(mine))
            assert len(mine.audio) <= cap
            assert mine.audio == theirs.audio[len(theirs.audio) - len(mine.audio) :]
            assert mine.end_s == theirs.end_s
            assert mine.start_s == a(theirs.start_s + (len(theirs.audio) - len(mine.audio)) / 2 / 8000)
            assert mine.end_s == a(mine.start_s + len(mine.audio) / 2 / 8000)
            assert replace(mine, audio=b"", start_s=0.0) == replace(theirs, audio=b"", start_s=0.0)
            if isinstance(mine, FinalReady):
                lost += len(theirs.audio) - len(mine.audio)
        else:
            assert mine == theirs
    assert lost <= seg.overflow_bytes
    if seg.overflow_bytes == 0:
        assert got == expected
