"""benchmarks.capacity: every level scores the same conversations, each once."""

from __future__ import annotations

import pytest

from benchmarks.capacity import Seg, Stream, rounds_of, summarise
from benchmarks.conversations import Conversation, Turn


def conv(name: str, text: str = "one two three four") -> Conversation:
    return Conversation(name, bytes(2 * 16000 * 5), (Turn("a", text, 0.5, 4.0),))


CONVS = [conv(f"c{i:02d}") for i in range(16)]


def names(convs: list[Conversation]) -> list[str]:
    return [c.name for c in convs]


@pytest.mark.parametrize("n", [8, 12, 16])
def test_levels_from_k_over_max_rounds_up_play_every_conversation_once(n: int) -> None:
    rounds = rounds_of(n, CONVS, max_rounds=2)
    assert all(len(r.convs) == n for r in rounds)  # the load is n streams in every round
    scored = [c for r in rounds for c in r.convs[: r.scored]]
    assert names(scored) == names(CONVS)


def test_the_last_rounds_empty_slots_replay_the_first_conversations_unscored() -> None:
    first, second = rounds_of(12, CONVS, max_rounds=2)
    assert (first.scored, second.scored) == (12, 4)
    assert names(second.convs) == [*names(CONVS[12:]), *names(CONVS[:8])]


def test_max_rounds_bounds_a_low_level() -> None:
    rounds = rounds_of(1, CONVS, max_rounds=2)
    assert [names(r.convs) for r in rounds] == [["c00"], ["c01"]]
    assert [r.scored for r in rounds] == [1, 1]


def test_more_streams_than_conversations_score_each_once() -> None:
    (only,) = rounds_of(5, CONVS[:2], max_rounds=2)
    assert names(only.convs) == ["c00", "c01", "c00", "c01", "c00"]
    assert only.scored == 2


@pytest.mark.parametrize(("n", "max_rounds"), [(0, 2), (4, 0)])
def test_nonsense_is_refused(n: int, max_rounds: int) -> None:
    with pytest.raises(ValueError):
        rounds_of(n, CONVS, max_rounds)


def stream(c: Conversation, text: str, *, scored: bool = True) -> Stream:
    s = Stream(c, t0=0.0, ended=True, scored=scored)
    s.finals = [(4.5, Seg(0.5, 4.2, text))]
    return s


def test_replays_count_for_latency_and_load_but_not_for_wer() -> None:
    a, b = conv("a"), conv("b")
    streams = [stream(a, "one two three four"), stream(b, "one two three four"),
               stream(a, "wrong wrong wrong wrong", scored=False)]  # a replay, badly heard
    direct = [{"a": "one two three four", "b": "one two three four"}]
    lv = summarise("ours", streams, 10.0, {"asr": 1.0}, direct, 0.5, 1.5, 0.01, n=2)
    assert (lv.n, lv.sessions, lv.scored) == (2, 3, 2)
    assert lv.wer == 0.0 and lv.direct_wer == 0.0
    assert len(lv.latency_s) == 3 and lv.audio_s == pytest.approx(15.0)
    assert lv.passed
    # Scored, the same replay would have failed the level.
    streams[2].scored = True
    assert not summarise("ours", streams, 10.0, {}, direct, 0.5, 1.5, 0.01, n=2).passed
