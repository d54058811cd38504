"""CaptionState, the pure part of caption fan-out: what viewers of one session are sent."""

from __future__ import annotations

from common.messages import Revision, SessionFlushed, SpeechStarted, Transcript
from common.settings import Settings
from ingest.captions import CaptionState
from ingest.edge_settings import EdgeSettings
from ingest.viewer_tokens import token_valid, viewer_token


def final(index: int, text: str) -> Transcript:
    return Transcript(session_id="s" * 8, utterance_id=f"u{index}", is_final=True, text=text, start_s=float(index),
                      end_s=index + 0.5, final_index=index)


def partial(utterance: int, text: str) -> Transcript:
    return Transcript(session_id="s" * 8, utterance_id=f"u{utterance}", is_final=False, text=text, start_s=0.0,
                      end_s=1.0)


def texts(out: list[tuple[dict[str, object], str]]) -> list[tuple[object, object, bool]]:
    """(seq, text or type, is a partial) of what viewers are handed."""
    return [(m.get("seq"), m.get("text", m["type"]), kind == "partial") for m, kind in out]


def test_finals_in_index_order_numbered_like_the_speaker_and_empty_ones_skipped() -> None:
    state = CaptionState(backlog=10)
    assert state.add(final(2, "")) == []
    assert state.add(final(3, "three")) == []
    assert texts(state.add(final(1, "one"))) == [(1, "one", False), (2, "three", False)]
    assert state.add(final(3, "three")) == []  # a redelivered final
    assert texts(state.add(SpeechStarted(session_id="s" * 8, utterance_id="u4", start_s=4.0))) == []


def test_partials_pass_until_their_final_and_never_after() -> None:
    state = CaptionState(backlog=10)
    assert texts(state.add(partial(1, "on"))) == [(None, "on", True)]
    assert state.add(partial(1, "")) == []
    state.add(final(1, "one"))
    assert state.add(partial(1, "late")) == []
    assert texts(state.add(partial(2, "next"))) == [(None, "next", True)]


def test_backlog_holds_the_last_finals_and_the_end() -> None:
    state = CaptionState(backlog=2)
    for i in range(1, 5):
        state.add(final(i, f"f{i}"))
    assert [m["seq"] for m in state.joiner_backlog()] == [3, 4]
    assert not state.ended
    out = state.add(SessionFlushed(session_id="s" * 8, finals_total=5, audio_s=9.0))
    assert out == [] and not state.ended  # final 5 is still on its way
    out = state.add(final(5, ""))
    assert texts(out) == [(None, "session_ended", False)] and out[0][0] == {"type": "session_ended", "finals": 4}
    assert [m.get("seq") for m in state.joiner_backlog()] == [3, 4, None]
    assert CaptionState(backlog=0).joiner_backlog() == []


def test_a_drain_flush_does_not_end_the_captions() -> None:
    state = CaptionState(backlog=2)
    state.add(final(1, "one"))
    assert state.add(SessionFlushed(session_id="s" * 8, finals_total=1, audio_s=1.0, ended=False)) == []
    assert not state.ended


def test_viewer_tokens_are_per_session_and_per_secret() -> None:
    a = EdgeSettings.from_settings(Settings(), viewer_token_secret="a" * 32)
    b = EdgeSettings.from_settings(Settings(), viewer_token_secret="b" * 32)
    token = viewer_token(a, "session-1")
    assert len(token) == 43 and token_valid(a, "session-1", token)
    assert not token_valid(a, "session-2", token) and not token_valid(b, "session-1", token)
    # Without a secret, this process's random key: stable within the process.
    empty = EdgeSettings.from_settings(Settings())
    assert token_valid(empty, "session-1", viewer_token(empty, "session-1"))
    assert viewer_token(empty, "session-1") != token


def test_viewer_settings_are_validated_with_what_to_use_instead() -> None:
    import pytest

    from common.settings import SettingsError, from_mapping

    with pytest.raises(SettingsError) as info:
        from_mapping({"viewer_token_secret": "short", "max_viewers_per_edge": -1, "viewer_backlog_finals": 10**6})
    problems = " ".join(info.value.problems)
    assert "viewer_token_secret is shorter than 16 characters" in problems and "openssl rand" in problems
    assert "max_viewers_per_edge=-1" in problems and "viewer_backlog_finals=1000000" in problems


def test_viewers_get_a_revision_and_a_late_joiner_gets_finals_as_revised() -> None:
    state = CaptionState(backlog=10)
    state.add(final(1, "wan"))
    state.add(final(2, "two"))
    revision = Revision(session_id="s" * 8, utterance_id="u1", final_index=1, text="one", start_s=1.0, end_s=1.5)
    out = state.add(revision)
    assert [(m["type"], m["seq"], m["text"], kind) for m, kind in out] == [("revision", 1, "one", "revision")]
    assert state.add(revision) == []  # the same revision again (read back, then live): once
    assert [(m["seq"], m["text"]) for m in state.joiner_backlog()] == [(1, "one"), (2, "two")]
