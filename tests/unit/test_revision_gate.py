"""Which finals revise the final before them (`asr_worker.revisions.why_not_revise`, `predecessor_gate`),
and which carry its audio because it had no words (`carries_previous`)."""

from __future__ import annotations

from dataclasses import replace

import msgspec

from asr_worker.asr_settings import AsrSettings
from asr_worker.revisions import carries_previous, predecessor_gate, revision_outcome, why_not_revise
from common.messages import AsrJob, Transcript
from common.settings import Settings

SETTINGS = AsrSettings.from_settings(Settings())  # revision_max_logprob -0.2
JOB = AsrJob(session_id="s", utterance_id="u4", is_final=True, audio=b"\0" * 3200, start_s=9.0, end_s=9.1,
             final_index=5, previous_audio=b"\0" * 3200)


def stored(index: int = 4, text: str = "words", avg_logprob: float = -0.5, carried_s: float = 0.0) -> Transcript:
    return Transcript(session_id="s", utterance_id=f"u{index - 1}", is_final=True, text=text, start_s=8.0,
                      end_s=8.9, final_index=index, avg_logprob=avg_logprob, carried_s=carried_s)


def test_an_unsure_predecessor_is_revised() -> None:
    assert why_not_revise(JOB, stored(), 4, SETTINGS) == ""


def test_a_predecessor_not_stored_yet_is_waited_for_and_one_without_text_is_not_revised() -> None:
    assert why_not_revise(JOB, None, 0, SETTINGS) == "unstored"
    assert why_not_revise(JOB, stored(index=3), 3, SETTINGS) == "unstored"  # 4 still being decoded
    assert why_not_revise(JOB, stored(index=5), 5, SETTINGS) == "no_previous"  # this job delivered again
    assert why_not_revise(JOB, stored(text=""), 4, SETTINGS) == "no_previous"  # no seq to revise
    assert why_not_revise(JOB, None, 4, SETTINGS) == "no_previous"  # 4 failed for good
    assert predecessor_gate(stored(text=""), SETTINGS) == "no_previous"
    assert predecessor_gate(stored(), SETTINGS) == ""
    assert predecessor_gate(stored(avg_logprob=-0.1), SETTINGS) == "sure"


def test_a_final_the_decoder_was_sure_of_is_kept_unless_every_final_is_revised() -> None:
    assert why_not_revise(JOB, stored(avg_logprob=-0.15), 4, SETTINGS) == "sure"
    assert why_not_revise(JOB, stored(avg_logprob=-0.2), 4, SETTINGS) == "sure"
    every = replace(SETTINGS, revision_max_logprob=0.0)
    assert why_not_revise(JOB, stored(avg_logprob=-0.01), 4, every) == ""
    assert why_not_revise(JOB, stored(avg_logprob=0.0), 4, every) == ""


def test_a_final_that_carries_its_predecessors_words_is_not_revised() -> None:
    # A revision decodes the final's own audio only: the words carried into it would be lost.
    assert predecessor_gate(stored(carried_s=2.5), SETTINGS) == "carried"
    assert why_not_revise(JOB, stored(carried_s=2.5), 4, SETTINGS) == "carried"
    every = replace(SETTINGS, revision_max_logprob=0.0)
    assert why_not_revise(JOB, stored(carried_s=2.5), 4, every) == "carried"


def test_a_stored_predecessor_without_words_is_carried_by_a_final_with_words() -> None:
    assert carries_previous(JOB, stored(text=""), 4, "heard words", SETTINGS)


def test_nothing_is_carried_unless_the_predecessor_is_known_empty_and_this_final_has_words() -> None:
    assert not carries_previous(JOB, stored(), 4, "heard words", SETTINGS)  # it has words: revised instead
    assert not carries_previous(JOB, stored(text=""), 4, "", SETTINGS)  # empty pair: noise, no second decode
    assert not carries_previous(JOB, stored(index=3, text=""), 3, "heard words", SETTINGS)  # 4 not stored
    assert not carries_previous(JOB, stored(index=5, text=""), 5, "heard words", SETTINGS)  # delivered again
    assert not carries_previous(JOB, None, 4, "heard words", SETTINGS)  # 4 failed for good: nothing to hear
    no_audio = msgspec.structs.replace(JOB, previous_audio=b"")  # the pair did not fit one window, or revisions are off
    assert not carries_previous(no_audio, stored(text=""), 4, "heard words", SETTINGS)
    off = replace(SETTINGS, carry_empty_finals=False)
    assert not carries_previous(JOB, stored(text=""), 4, "heard words", off)


def test_a_revision_that_only_drops_the_finals_last_words_is_not_a_correction() -> None:
    final = "A gentle breeze carried the smell of the sea into the room."
    assert revision_outcome(final, "A gentle breeze carried the smell of the sea into the") == "shorter"
    assert revision_outcome(final, "a gentle breeze carried the smell of the sea") == "shorter"
    assert revision_outcome(final, "A gentle breeze carried the smell of the sea into the room") == "same"
    assert revision_outcome(final, "") == "empty"
    # Different words, even fewer of them, or more words: a correction.
    assert revision_outcome(final, "A gentle breeze carried the smell of the sea into the rooms.") == "ok"
    assert revision_outcome(final, "Gentle breeze carried the smell of the sea into the room.") == "ok"
    assert revision_outcome("Please end your work", "Please send your work") == "ok"
    assert revision_outcome("into the", "into the room.") == "ok"


def test_a_revision_that_drops_only_a_word_the_final_heard_trail_off_is_a_correction() -> None:
    """A breath at the cut: "...lies. And..." decoded again with the next final's audio after it."""
    final = "making a famine where abundance lies. And..."
    assert revision_outcome(final, "making a famine where abundance lies.") == "ok"
    assert revision_outcome("the gaudy spring, and\u2026", "the gaudy spring,") == "ok"
    # More than that one word dropped, or a last word said in full: not a correction.
    assert revision_outcome(final, "making a famine where abundance") == "shorter"
    assert revision_outcome("where abundance lies. And", "where abundance lies.") == "shorter"
    assert revision_outcome(final, final) == "same"
