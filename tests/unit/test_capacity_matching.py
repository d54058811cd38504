"""benchmarks.capacity: how finals and partials are matched to the reference turns."""

from __future__ import annotations

import pytest

from benchmarks.capacity import Seg, Stream, first_partials, speech_end, truncate, utterance_openers
from benchmarks.conversations import Conversation, Turn

TURNS = (
    Turn("a", "one two", 0.5, 2.0),
    Turn("b", "three four", 2.3, 4.0),  # 0.3 s after the first: the same utterance for the endpointer
    Turn("a", "five six", 6.0, 8.0),
)
CONV = Conversation("c", bytes(2 * 16000 * 10), TURNS)


def test_a_final_closes_the_turn_whose_end_is_nearest() -> None:
    assert speech_end(TURNS, 4.2) == 4.0  # end_s carries the trailing pad
    assert speech_end(TURNS, 7.5) == 8.0  # within 1.5 s either way
    assert speech_end(TURNS, 11.0) == 11.0  # nothing near: the final's own end


def test_turns_closer_than_the_endpointer_do_not_open_utterances() -> None:
    assert utterance_openers(TURNS, 0.5) == [TURNS[0], TURNS[2]]
    assert utterance_openers(TURNS, 0.2) == list(TURNS)


def test_first_partial_is_the_first_message_covering_the_opening_turn() -> None:
    s = Stream(CONV, t0=100.0)
    s.updates = [
        (101.0, [Seg(0.2, 1.2, "")]),  # empty text does not count
        (101.5, [Seg(0.2, 1.6, "one")]),
        (107.4, [Seg(0.2, 4.2, "one two three four")]),  # the previous utterance's final
        (107.6, [Seg(5.7, 7.0, "five")]),
    ]
    assert first_partials(s, 0.5) == pytest.approx([1.5 - 0.5, 7.6 - 6.0])


def test_hypothesis_keeps_finals_then_text_never_completed() -> None:
    s = Stream(CONV, finals=[(1.0, Seg(0, 2, "one two")), (2.0, Seg(2, 4, "three four"))], tail_text="five")
    assert s.hypothesis() == "one two three four five"


def test_truncation_stops_before_a_turn_it_would_cut() -> None:
    short = truncate(CONV, 7.0)
    assert short.turns == TURNS[:2]
    assert short.duration_s <= 6.0
    assert truncate(CONV, 0) is CONV
