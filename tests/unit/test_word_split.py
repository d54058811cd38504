"""Where a revision's decode of two finals is split between them (`asr_worker.word_split`)."""

from __future__ import annotations

from asr_worker.word_split import split_index

# "...drove across it." then the next final "The light was perfect."; the first final's audio ends
# at 1.9 s. Whisper stretched "it" over the pause that VAD cut out: its middle (2.0 s) lies past 1.9.
STRETCHED = [("drove", 1.0, 1.3), ("across", 1.3, 1.6), ("it", 1.6, 2.4), ("The", 2.45, 2.6),
             ("light", 2.6, 2.9), ("was", 2.9, 3.1), ("perfect.", 3.1, 3.5)]


def test_a_stretched_last_word_stays_with_its_final_when_the_next_final_does_not_begin_with_it() -> None:
    assert split_index(STRETCHED, 1.9, "") == 2  # the times alone lose "it"
    assert split_index(STRETCHED, 1.9, "The light was perfect.") == 3


def test_the_next_finals_first_word_stretched_backwards_goes_back_to_it() -> None:
    words = [("drove", 1.0, 1.3), ("across", 1.3, 1.6), ("it.", 1.6, 1.75), ("The", 1.76, 1.98),
             ("light", 2.0, 2.3)]
    assert split_index(words, 1.9, "") == 4  # "The"'s middle (1.87 s) is before 1.9
    assert split_index(words, 1.9, "the light") == 3


def test_a_word_wholly_after_the_boundary_is_never_pulled_in() -> None:
    # The next final's first decode missed "The"; the revision heard it, wholly in the next audio.
    words = [("across", 1.3, 1.6), ("it.", 1.6, 1.85), ("The", 1.95, 2.1), ("light", 2.1, 2.4)]
    assert split_index(words, 1.9, "light") == 2


def test_a_word_wholly_before_the_boundary_is_never_pushed_out() -> None:
    words = [("drove", 1.0, 1.3), ("across", 1.3, 1.6), ("it", 1.6, 1.8), ("light", 2.0, 2.3)]
    assert split_index(words, 1.9, "it light") == 3


def test_a_tie_keeps_the_split_the_times_give() -> None:
    # "it" straddles the boundary; the next final read "a light": both splits are one edit away.
    words = [("across", 1.3, 1.6), ("it", 1.7, 2.2), ("light", 2.3, 2.6)]
    assert split_index(words, 1.9, "a light") == 1
    words = [("across", 1.3, 1.6), ("it", 1.6, 2.0), ("light", 2.3, 2.6)]
    assert split_index(words, 1.9, "a light") == 2


def test_at_most_reach_words_cross() -> None:
    # b, c and d straddle 1.0 s (all three after it by their middles); the next final read "e".
    words = [("a", 0.0, 0.5), ("b", 0.5, 2.0), ("c", 0.6, 2.1), ("d", 0.7, 2.2), ("e", 2.3, 2.5)]
    assert split_index(words, 1.0, "e") == 3
    assert split_index(words, 1.0, "e", reach=1) == 2


def test_punctuation_and_case_do_not_count() -> None:
    assert split_index(STRETCHED, 1.9, "the LIGHT, was... perfect") == 3


def test_no_words() -> None:
    assert split_index([], 1.0, "anything") == 0
