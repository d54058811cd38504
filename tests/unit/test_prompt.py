"""The prompt a session's next final is given (`asr_worker.prompt.next_prompt`)."""

from __future__ import annotations

from asr_worker.prompt import next_prompt


def test_the_finals_text_follows_the_prompt() -> None:
    assert next_prompt("Good morning.", "Did you get the budget?", 200) == "Good morning. Did you get the budget?"


def test_the_first_final_starts_the_prompt() -> None:
    assert next_prompt("", "Hello there.", 200) == "Hello there."


def test_an_empty_final_leaves_the_prompt_as_it_was() -> None:
    assert next_prompt("Hello there.", "", 200) == "Hello there."


def test_only_the_end_is_kept() -> None:
    assert next_prompt("one two three", "four five", 9) == "four five"
    assert len(next_prompt("a" * 500, "b" * 10, 200)) == 200


def test_zero_characters_means_no_prompt() -> None:
    assert next_prompt("one two", "three", 0) == ""
