"""benchmarks.packing's pure parts: which finals share a window, and the words counted as a neighbour's."""

from __future__ import annotations

import numpy as np

from benchmarks.packing import Member, foreign_words, groups, in_turns


def _audio(seconds: float) -> bytes:
    return np.zeros(int(seconds * 16000), dtype="<i2").tobytes()


def test_finals_are_taken_in_turns_across_clips() -> None:
    members = in_turns([[_audio(1), _audio(1), _audio(1)], [_audio(1)], [_audio(1), _audio(1)]])
    assert [(m.clip, m.index) for m in members] == [(0, 0), (1, 0), (2, 0), (0, 1), (2, 1), (0, 2)]


def test_a_pack_holds_at_most_k_finals_and_max_seconds_with_gaps() -> None:
    members = in_turns([[_audio(3)], [_audio(3)], [_audio(3)], [_audio(6)], [_audio(2)]])
    packs = groups(members, 3, max_pack_s=10.0, gap_s=1.0)
    # 3 + 1 + 3 = 7 s, then 7 + 1 + 3 = 11 s would not fit; 3 + 1 + 6 = 10 s fits; 2 s starts the next
    assert [[m.clip for m in p] for p in packs] == [[0, 1], [2, 3], [4]]
    assert all(len(p) <= 2 for p in groups(members, 2, max_pack_s=100.0, gap_s=1.0))


def test_words_from_a_neighbour_are_those_missing_from_the_own_reference_only() -> None:
    pack = [Member(0, 0, np.zeros(1, dtype="<i2")), Member(1, 0, np.zeros(1, dtype="<i2"))]
    vocabulary = [{"the", "cat", "sat"}, {"the", "dog", "ran"}]
    texts = {(0, 0): "The cat sat ran away", (1, 0): "the dog ran"}
    # "ran" is the neighbour's and not its own; "away" is nobody's (a plain error); "the" is both
    assert foreign_words([pack], texts, vocabulary) == 1
    assert foreign_words([pack], {(0, 0): "the cat sat", (1, 0): "the dog ran"}, vocabulary) == 0
