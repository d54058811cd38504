"""Unit tests of the segmenter's long-utterance behaviours: the shorter endpoint of a long
utterance and the soft cut at the best pause. Same synthetic frames as test_segmenter.py: 8 kHz,
10 ms frames (0.01 s each); "1" is speech, "0" silent non-speech, "2" non-speech with some energy.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_segmenter import FB, a, pcm, segmenter, summary
from vad_worker.segmenter import (
    Event,
    FinalReady,
    PartialReady,
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


def test_without_a_pause_it_waits_for_the_next_one() -> None:
    seg = segmenter(**SOFT)
    events = seg.push(pcm("1" * 120 + "000" + "1" * 10))
    # Nothing to cut at frame 99; the pause 120..122 is complete at frame 123, and is cut at 121.
    assert summary(events) == [
        ("start", 0, a(0.0)),
        ("final", 0, 1, 121 * FB, a(0.0), a(1.21), "soft_length"),
        ("ended", 0, a(1.21)),
        ("start", 1, a(1.21)),
    ]
    assert seg.in_speech


def test_pauses_shorter_than_min_cut_pause_are_never_cut() -> None:
    seg = segmenter(**{**SOFT, "min_cut_pause_ms": 30})
    events = seg.push(pcm(("1" * 20 + "00") * 10))
    # Only 2-frame pauses: no soft cut, the hard cut at max_utterance_ms (200 frames) happens.
    assert [e.reason for e in events if isinstance(e, FinalReady)] == ["max_length"]
    assert summary(events)[1] == ("final", 0, 1, 200 * FB, a(0.0), a(2.0), "max_length")


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
    seg = segmenter(soft_utterance_ms=300, max_utterance_ms=600, min_cut_pause_ms=20, **LONG)
    audio = pcm("".join(("1" if voiced else "0") * n for voiced, n in runs))
    events: list[Event] = seg.push(audio) + seg.end()
    finals = [e for e in events if isinstance(e, FinalReady)]
    for prev, nxt in itertools.pairwise(finals):
        if prev.reason == "soft_length":  # nothing lost at a soft cut: the next one goes on from there
            assert nxt.start_s == a(prev.end_s)
            assert audio[round(prev.start_s * 16000) : round(nxt.start_s * 16000)] == prev.audio
    for f in finals:
        assert len(f.audio) <= 60 * FB and f.end_s > f.start_s
    starts = [e.start_s for e in events if isinstance(e, SpeechStarted)]
    assert starts == sorted(starts)


def test_speech_that_stops_exactly_at_a_max_length_cut_gives_no_empty_final() -> None:
    """Found by the property test above: the last voiced frame fills the utterance to
    max_utterance_ms, the cut reopens an utterance for the speech that goes on, and then the
    audio ends. The reopened utterance holds nothing said: it ends without a final."""
    seg = segmenter(soft_utterance_ms=300, max_utterance_ms=600, min_cut_pause_ms=20, **LONG)
    events = seg.push(pcm("0" * 5 + "1" * 55)) + seg.end()
    finals = [e for e in events if isinstance(e, FinalReady)]
    assert [(f.final_index, f.reason) for f in finals] == [(1, "max_length")]
    assert all(f.audio and f.end_s > f.start_s for f in finals)
    started = [e.utterance_index for e in events if isinstance(e, SpeechStarted)]
    ended = [e.utterance_index for e in events if isinstance(e, UtteranceEnded)]
    assert started == ended == [0, 1]
