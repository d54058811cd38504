"""Unit tests of the segmenter's long-utterance behaviours: the shorter endpoint of a long
utterance and the soft cut at the best pause. Same synthetic frames as test_segmenter.py: 8 kHz,
10 ms frames (0.01 s each); "1" is speech, "0" silent non-speech, "2" non-speech with some energy.
"""

from __future__ import annotations

import itertools
import wave
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_segmenter import DATA, FB, a, pcm, segmenter, summary
from vad_worker.segmenter import (
    Event,
    FinalReady,
    PartialReady,
    Segmenter,
    SegmenterOptions,
    SpeechStarted,
    UtteranceEnded,
)

LONG = {"long_utterance_ms": 300, "long_endpointing_ms": 50}  # from 30 frames of speech on, 5 frames end it
SOFT = {"soft_utterance_ms": 1000, "max_utterance_ms": 2000, "min_cut_pause_ms": 20}  # cut from 100 frames


def test_a_short_pause_ends_an_utterance_only_once_it_is_long() -> None:
    seg = segmenter(**LONG)
    events = seg.push(pcm("1" * 20 + "0" * 6 + "1" * 20 + "0" * 5 + "1" * 5 + "0" * 10))
    # Frames 20..25: 6 silent frames after 20 voiced ones, short of the 10-frame endpoint. Speech
    # up to frame 45 makes 46 frames (>= 30): now 5 silent frames (46..50) end it; the final keeps
    # 4 frames of pad. The next utterance (51..55) is short again, so it needs the full 10 frames.
    assert summary(events) == [
        ("start", 0, a(0.0)),
        ("final", 0, 1, 50 * FB, a(0.0), a(0.50), "endpoint"),
        ("ended", 0, a(0.50)),
        ("start", 1, a(0.50)),
        ("final", 1, 2, 10 * FB, a(0.50), a(0.60), "endpoint"),
        ("ended", 1, a(0.60)),
    ]


def test_without_the_long_endpoint_the_same_stream_is_one_utterance() -> None:
    events = segmenter().push(pcm("1" * 20 + "0" * 6 + "1" * 20 + "0" * 5 + "1" * 5 + "0" * 10))
    assert summary(events)[1] == ("final", 0, 1, 60 * FB, a(0.0), a(0.60), "endpoint")


def test_soft_cut_at_the_longest_pause_of_the_second_half() -> None:
    seg = segmenter(**SOFT)
    pattern = "1" * 30 + "0" * 3 + "1" * 40 + "0" * 4 + "1" * 40 + "0" * 2 + "1" * 20 + "0" * 10
    events = seg.push(pcm(pattern))
    # At frame 99 the utterance reaches 100 frames. Complete pauses: 30..32 (middle 31, before the
    # second half that begins at frame 50: not eligible) and 73..76 (middle 75). It is cut at 75;
    # the rest (75..99) opens utterance 1, which ends at the endpoint: last voiced frame 138 + 4 pad.
    assert summary(events) == [
        ("start", 0, a(0.0)),
        ("final", 0, 1, 75 * FB, a(0.0), a(0.75), "soft_length"),
        ("ended", 0, a(0.75)),
        ("start", 1, a(0.75)),
        ("final", 1, 2, 68 * FB, a(0.75), a(1.43), "endpoint"),
        ("ended", 1, a(1.43)),
    ]
    final = events[1]
    assert isinstance(final, FinalReady) and final.audio == pcm(pattern)[: 75 * FB]
    assert isinstance(events[4], FinalReady) and events[4].audio == pcm(pattern)[75 * FB : 143 * FB]


def test_the_longer_pause_wins_over_a_later_shorter_one() -> None:
    seg = segmenter(**SOFT)
    events = seg.push(pcm("1" * 60 + "0" * 6 + "1" * 20 + "0" * 2 + "1" * 20))
    # Pauses 60..65 (6 frames, middle 63) and 86..87 (2 frames): the 6-frame one wins.
    assert summary(events)[1] == ("final", 0, 1, 63 * FB, a(0.0), a(0.63), "soft_length")


@pytest.mark.parametrize(
    ("first", "second", "cut"),
    [("000", "222", 56), ("222", "000", 79), ("000", "000", 79)],
)
def test_equal_pauses_go_to_the_quieter_then_the_later(first: str, second: str, cut: int) -> None:
    seg = segmenter(**SOFT)
    events = seg.push(pcm("1" * 55 + first + "1" * 20 + second + "1" * 30))
    assert summary(events)[1] == ("final", 0, 1, cut * FB, a(0.0), a(cut / 100), "soft_length")


def voiced(pattern: str) -> bytes:
    """Frames the fake classifier calls speech, by level: "L" loud, "m" medium, "q" quiet;
    "0" and "2" as in ``pcm``."""
    levels = {"L": 1000, "m": 300, "q": 0}
    return b"".join(
        b"\x01\x00" + levels[c].to_bytes(2, "little", signed=True) * (FB // 2 - 1) if c in levels else pcm(c)
        for c in pattern
    )


def test_without_a_pause_the_quietest_stretch_of_the_second_half_is_cut() -> None:
    """Noise can hide every pause from the VAD (webrtcvad calls speech in -28 dBFS white noise
    all of it): the utterance is cut where it is quietest rather than only at max_utterance_ms."""
    seg = segmenter(**SOFT)
    pattern = "L" * 10 + "q" * 4 + "L" * 56 + "mm" + "L" * 40
    events = seg.push(voiced(pattern))
    # No complete pause at frame 99. The quiet frames 10..13 lie in the first half; in the second
    # half the quietest boundary is the middle of the medium frames 70..71: cut at 71.
    assert summary(events) == [
        ("start", 0, a(0.0)),
        ("final", 0, 1, 71 * FB, a(0.0), a(0.71), "soft_length"),
        ("ended", 0, a(0.71)),
        ("start", 1, a(0.71)),
    ]
    final = events[1]
    assert isinstance(final, FinalReady) and final.audio == voiced(pattern)[: 71 * FB]
    assert seg.in_speech


def test_real_speech_in_noise_that_hides_every_pause_is_cut_under_the_soft_length() -> None:
    """The real classifier on real speech: 22 s of continuous speech (pauses of 0.3-0.5 s) in white
    noise at -28 dBFS, where webrtcvad calls every frame speech. Before the quietest-stretch cut
    this was one 23 s final (30 s on a longer stream), decoded and shown only at the end."""
    import webrtcvad

    with wave.open(str(DATA / "continuous_22s.wav"), "rb") as w:
        speech = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    noise = np.random.default_rng(7).normal(0.0, 32768 * 10 ** (-28 / 20), speech.size)
    audio = np.clip(np.round(speech + noise), -32768, 32767).astype("<i2").tobytes()
    options = SegmenterOptions(soft_utterance_ms=10_000, long_utterance_ms=2000, long_endpointing_ms=240)
    frame = options.frame_bytes
    vad = webrtcvad.Vad(2)
    heard = [vad.is_speech(audio[i : i + frame], 16000) for i in range(0, len(audio) - frame + 1, frame)]
    assert sum(heard) / len(heard) > 0.99  # the VAD hears no pause at all
    vad = webrtcvad.Vad(2)
    seg = Segmenter(options, lambda f: vad.is_speech(f, 16000))
    finals = [e for e in seg.push(audio) + seg.end() if isinstance(e, FinalReady)]
    assert [f.reason for f in finals][:-1] == ["soft_length"] * (len(finals) - 1) and len(finals) >= 3
    assert all(f.end_s - f.start_s <= 10.0 for f in finals)
    assert b"".join(f.audio for f in finals) == audio[round(finals[0].start_s * 32000) :]  # nothing lost


def test_a_pause_wins_over_a_quieter_stretch() -> None:
    seg = segmenter(**SOFT)
    events = seg.push(voiced("L" * 60 + "22" + "L" * 18 + "qqqq" + "L" * 30))
    # The pause 60..61 (louder than the quiet voiced frames 80..83) is complete: cut at its middle.
    assert summary(events)[1] == ("final", 0, 1, 61 * FB, a(0.0), a(0.61), "soft_length")


def test_uniform_speech_is_cut_at_the_latest_boundary() -> None:
    seg = segmenter(**SOFT)
    events = seg.push(voiced("L" * 120))
    # Every boundary scores the same: the latest whose four frames precede frame 99 (97).
    assert summary(events)[1] == ("final", 0, 1, 97 * FB, a(0.0), a(0.97), "soft_length")


def test_gaps_shorter_than_min_cut_pause_are_cut_only_as_the_quietest_stretch() -> None:
    seg = segmenter(**{**SOFT, "min_cut_pause_ms": 30})
    events = seg.push(pcm(("1" * 20 + "00") * 10))
    # Only 2-frame gaps, no pause of 3 frames: at frame 99 the quietest boundaries are the middles
    # of the gaps 64..65 and 86..87 (second half); the later wins. Never the max_length cut.
    assert summary(events)[1] == ("final", 0, 1, 87 * FB, a(0.0), a(0.87), "soft_length")
    assert "max_length" not in [e.reason for e in events if isinstance(e, FinalReady)]


def test_a_pause_still_running_is_left_to_the_endpoint() -> None:
    seg = segmenter(**SOFT)
    events = seg.push(pcm("1" * 99 + "0" * 10))
    # The pause at the end is not complete: no soft cut, the endpoint closes it normally.
    assert summary(events)[1] == ("final", 0, 1, 103 * FB, a(0.0), a(1.03), "endpoint")


def test_partials_of_the_new_utterance_follow_its_own_cadence() -> None:
    seg = segmenter(**SOFT, partial_interval_ms=200)
    events = seg.push(pcm("1" * 60 + "0" * 6 + "1" * 80))
    parts: list[tuple[object, ...]] = [
        (e.utterance_index, e.start_s, e.end_s) for e in events if isinstance(e, PartialReady)
    ]
    # Utterance 0: partials at 20..80 frames; soft cut at frame 99 (pause middle 63). Utterance 1
    # opens holding 63..99 (37 frames, past one interval): a partial at once, then at 40, 60, 80.
    assert parts == [
        (0, a(0.0), a(0.2)), (0, a(0.0), a(0.4)), (0, a(0.0), a(0.6)), (0, a(0.0), a(0.8)),
        (1, a(0.63), a(1.0)), (1, a(0.63), a(1.03)), (1, a(0.63), a(1.23)), (1, a(0.63), a(1.43)),
    ]


def test_soft_cut_inside_trimmed_audio_uses_only_kept_pauses() -> None:
    # 50 frames of cap: a pause that was trimmed away cannot be cut at.
    seg = segmenter(**SOFT, max_buffer_bytes=50 * FB)
    events = seg.push(pcm("1" * 70 + "0" * 4 + "1" * 60))
    # Pause 70..73 (middle 72) is kept (the kept audio at frame 99 is 50..99): cut there. The
    # final carries the kept audio from 50 to 72.
    final = events[1]
    assert summary([final]) == [("final", 0, 1, 22 * FB, a(0.50), a(0.72), "soft_length")]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"long_endpointing_ms": 600}, "long_endpointing_ms must be 0"),
        ({"soft_utterance_ms": 30000}, "soft_utterance_ms must be 0"),
        ({"soft_utterance_ms": -1}, "soft_utterance_ms must be zero or positive"),
        ({"min_cut_pause_ms": -1}, "min_cut_pause_ms must be zero or positive"),
    ],
)
def test_options_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SegmenterOptions(**kwargs)


@pytest.mark.parametrize("chunk", [1, 7, 161, 4096])
def test_chunking_does_not_change_soft_cuts(chunk: int) -> None:
    audio = pcm(("1" * 37 + "0" * 4 + "1" * 23 + "000") * 8 + "0" * 20)
    whole = segmenter(**SOFT, **LONG)
    expected = whole.push(audio) + whole.end()
    assert [type(e) for e in expected].count(FinalReady) >= 3
    chunked = segmenter(**SOFT, **LONG)
    got = [e for i in range(0, len(audio), chunk) for e in chunked.push(audio[i : i + chunk])]
    assert got + chunked.end() == expected


@settings(max_examples=60, deadline=None)
@given(runs=st.lists(st.tuples(st.booleans(), st.integers(1, 40)), max_size=40))
def test_soft_cuts_keep_every_byte_in_order_and_stay_short(runs: list[tuple[bool, int]]) -> None:
    """Every final is at most the soft length plus the endpoint it may wait for (a pause running
    at the soft length), far under max_utterance_ms, whatever the VAD hears."""
    seg = segmenter(soft_utterance_ms=300, max_utterance_ms=600, min_cut_pause_ms=20, **LONG)
    audio = pcm("".join(("1" if voiced else "0") * n for voiced, n in runs))
    events: list[Event] = seg.push(audio) + seg.end()
    finals = [e for e in events if isinstance(e, FinalReady)]
    for prev, nxt in itertools.pairwise(finals):
        if prev.reason == "soft_length":  # nothing lost at a soft cut: the next one goes on from there
            assert nxt.start_s == a(prev.end_s)
            assert audio[round(prev.start_s * 16000) : round(nxt.start_s * 16000)] == prev.audio
    for f in finals:
        assert len(f.audio) <= (30 + 10) * FB and f.end_s > f.start_s
    starts = [e.start_s for e in events if isinstance(e, SpeechStarted)]
    assert starts == sorted(starts)


def test_speech_that_stops_exactly_at_a_max_length_cut_gives_no_empty_final() -> None:
    """Found by the property test above: the last voiced frame fills the utterance to
    max_utterance_ms, the cut reopens an utterance for the speech that goes on, and then the
    audio ends. The reopened utterance holds nothing said: it ends without a final. (Soft cuts
    off: with them, an utterance never reaches max_utterance_ms any more.)"""
    seg = segmenter(max_utterance_ms=600, **LONG)
    events = seg.push(pcm("0" * 5 + "1" * 55)) + seg.end()
    finals = [e for e in events if isinstance(e, FinalReady)]
    assert [(f.final_index, f.reason) for f in finals] == [(1, "max_length")]
    assert all(f.audio and f.end_s > f.start_s for f in finals)
    started = [e.utterance_index for e in events if isinstance(e, SpeechStarted)]
    ended = [e.utterance_index for e in events if isinstance(e, UtteranceEnded)]
    assert started == ended == [0, 1]
