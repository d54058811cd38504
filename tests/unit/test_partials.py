"""Unit tests of the partial-stability engine (ingest/partials.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.partials import PartialStabilizer, PartialView, word_key


def views(stab: PartialStabilizer, *texts: str, utt: str = "u0") -> list[tuple[str, str] | None]:
    out: list[tuple[str, str] | None] = []
    for i, text in enumerate(texts):
        view = stab.partial(utt, text, end_s=float(i + 1))
        out.append(None if view is None else (view.stable_text, view.text))
    return out


def test_the_first_partial_is_all_unstable() -> None:
    view = PartialStabilizer().partial("u0", "Hello there", 1.0)
    assert view == PartialView("u0", "Hello there", "")
    assert view.unstable_text == "Hello there"


def test_words_two_partials_agree_on_become_stable() -> None:
    assert views(PartialStabilizer(), "hello there", "Hello, there how are", "hello there how are you") == [
        ("", "hello there"),
        ("Hello, there", "Hello, there how are"),  # the newer partial's spelling of agreed words
        ("Hello, there how are", "Hello, there how are you"),
    ]


def test_a_revised_tail_replaces_the_old_one() -> None:
    assert views(PartialStabilizer(), "hello there", "hello there how are", "hello there who are you") == [
        ("", "hello there"),
        ("hello there", "hello there how are"),
        ("hello there", "hello there who are you"),
    ]


def test_a_shorter_partial_that_only_drops_words_does_not_shorten_the_text() -> None:
    got = views(PartialStabilizer(), "one two", "one two three four five", "one two three")
    # The third partial says nothing different, it just stopped early: the screen keeps "four
    # five", and "three" (agreed twice now) becomes stable.
    assert got[2] == ("one two three", "one two three four five")


def test_an_empty_partial_changes_nothing() -> None:
    assert views(PartialStabilizer(), "good morning everyone", "") == [("", "good morning everyone"), None]


def test_a_contradicted_stable_prefix_is_kept() -> None:
    got = views(PartialStabilizer(), "hello there friend", "hello there my", "yellow there my good friend")
    # "hello there" is stable; the third partial hears "yellow" but the prefix stays, and its words
    # after "there" are the new tail, on which "my" agrees with the previous tail.
    assert got[1] == ("hello there", "hello there my")
    assert got[2] == ("hello there my", "hello there my good friend")


def test_a_contradicted_prefix_resumes_after_its_last_word() -> None:
    got = views(PartialStabilizer(), "we met at the", "we met at the station", "and we met at the station at noon")
    assert got[1] == ("we met at the", "we met at the station")
    # The decoder added a leading word; the stable prefix ends after "the" in the new partial.
    assert got[2] == ("we met at the station", "we met at the station at noon")


def test_stale_and_unchanged_partials_send_nothing() -> None:
    stab = PartialStabilizer()
    assert stab.partial("u0", "a b c", 2.0) is not None
    assert stab.partial("u0", "a b c d", 1.5) is None  # older audio than the last one
    assert stab.partial("u0", "a b c d", 2.0) is None  # not newer either
    assert stab.partial("u0", "a b c", 3.0) == PartialView("u0", "a b c", "a b c")  # now stable: sent
    assert stab.partial("u0", "A, b. c", 4.0) is None  # the same words: nothing new


def test_partials_after_the_final_are_dropped_and_a_new_utterance_starts_afresh() -> None:
    stab = PartialStabilizer()
    views(stab, "first words", "first words here")
    stab.final("u0")
    assert stab.partial("u0", "first words here now", 9.0) is None
    assert stab.partial("u1", "second", 10.0) == PartialView("u1", "second", "")


def test_a_new_utterance_id_forgets_the_previous_one() -> None:
    stab = PartialStabilizer()
    views(stab, "alpha beta", "alpha beta gamma")
    assert stab.partial("u1", "delta", 5.0) == PartialView("u1", "delta", "")


def test_word_key() -> None:
    assert word_key("Hello,") == word_key("hello") == "hello"
    assert word_key("don't") == "dont"


words = st.lists(st.sampled_from(["a", "b", "c", "d", "A,", "b."]), max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.lists(words, min_size=1, max_size=12))
def test_stable_text_only_grows_and_text_keeps_it(hypotheses: list[list[str]]) -> None:
    stab = PartialStabilizer()
    stable: list[str] = []
    shown: list[str] = []
    for i, hyp in enumerate(hypotheses):
        view = stab.partial("u0", " ".join(hyp), float(i))
        if view is None:
            continue
        new_stable, new_text = view.stable_text.split(), view.text.split()
        assert new_stable[: len(stable)] == stable  # stable words never change
        assert new_text[: len(new_stable)] == new_stable  # text starts with the stable prefix
        if len(new_text) < len(shown):  # shorter only after a real revision of the tail
            rest = [word_key(w) for w in new_text[len(stable) :]]
            old = [word_key(w) for w in shown[len(stable) :]]
            assert rest != old[: len(rest)]
        stable, shown = new_stable, new_text
