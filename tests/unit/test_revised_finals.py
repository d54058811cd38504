"""common.revised_finals.revised: a session's stored finals with their stored revisions applied."""

from __future__ import annotations

from common.messages import Final, Revision, Transcript, TranscriptionFailed, Word
from common.revised_finals import revised

SID = "session-0001"


def final(index: int, text: str, words: tuple[Word, ...] = ()) -> Transcript:
    return Transcript(session_id=SID, utterance_id=f"u{index}", is_final=True, text=text, start_s=float(index),
                      end_s=index + 0.5, final_index=index, words=words)


def revision(index: int, text: str, utterance_id: str = "", words: tuple[Word, ...] = ()) -> Revision:
    return Revision(session_id=SID, utterance_id=utterance_id or f"u{index}", final_index=index, text=text,
                    start_s=float(index), end_s=index + 0.5, words=words)


def test_a_revision_replaces_the_text_and_words_of_its_final_and_order_is_kept() -> None:
    old_words = (Word("wan", 1.0, 1.4, 0.3),)
    new_words = (Word("one", 1.0, 1.4, 0.9),)
    stored: list[Final | Revision] = [final(1, "wan", old_words), final(2, "two"),
                                      revision(1, "one", words=new_words), final(3, "three")]
    out = revised(stored)
    assert [(f.final_index, f.text) for f in out if isinstance(f, Transcript)] == [(1, "one"), (2, "two"),
                                                                                  (3, "three")]
    assert isinstance(out[0], Transcript) and out[0].words == new_words
    assert out[1] is stored[1]  # finals without a revision are passed through as they are


def test_unchanged_foreign_and_orphan_revisions_change_nothing() -> None:
    failed = TranscriptionFailed(session_id=SID, final_index=2, code="TRANSCRIPTION_FAILED", message="lost")
    stored: list[Final | Revision] = [final(1, "one"), failed, revision(1, ""),  # "" = no change
              revision(1, "not this utterance", utterance_id="u9"), revision(2, "a failure has no text"),
              revision(7, "a final not read")]
    assert revised(stored) == [final(1, "one"), failed]


def test_the_last_revision_of_a_final_wins() -> None:
    assert [f.text for f in revised([final(1, "a"), revision(1, "b"), revision(1, "c")]) if isinstance(f, Transcript)] \
        == ["c"]
