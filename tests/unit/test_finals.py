"""ingest.finals.FinalOrderer: index order, seq numbering, duplicates, completeness."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from common.messages import Final, Transcript, TranscriptionFailed
from ingest.finals import FinalOrderer


def final(index: int, text: str = "", *, worker: str = "asr-1") -> Transcript:
    return Transcript(
        session_id="session-0001", utterance_id=f"u{index}", is_final=True, text=text, start_s=float(index),
        end_s=index + 0.5, final_index=index, worker_id=worker,
    )


def said(index: int) -> Transcript:
    return final(index, f"words of utterance {index}")


def released(pairs: list[tuple[int, Final]]) -> list[tuple[int, int]]:
    """(seq, final_index) pairs: what the client gets, in order."""
    return [(seq, t.final_index) for seq, t in pairs]


def test_in_order_finals_are_released_at_once_with_seq_from_1() -> None:
    orderer = FinalOrderer()
    for i in range(1, 6):
        assert released(orderer.add(said(i))) == [(i, i)]
    assert orderer.seq == 5
    assert orderer.released == 5
    assert orderer.missing(5) == []


def test_release_returns_the_final_itself() -> None:
    orderer = FinalOrderer()
    t = said(1)
    assert orderer.add(t) == [(1, t)]


def test_out_of_order_finals_wait_for_the_gap() -> None:
    orderer = FinalOrderer()
    assert orderer.add(said(3)) == []
    assert orderer.add(said(2)) == []
    assert orderer.missing(3) == [1]
    assert orderer.released == 0
    assert released(orderer.add(said(1))) == [(1, 1), (2, 2), (3, 3)]
    assert orderer.missing(3) == []
    assert released(orderer.add(said(5))) == []
    assert orderer.missing(5) == [4]
    assert released(orderer.add(said(4))) == [(4, 4), (5, 5)]


def test_empty_finals_take_an_index_but_no_seq() -> None:
    orderer = FinalOrderer()
    assert released(orderer.add(said(1))) == [(1, 1)]
    assert orderer.add(final(2, "")) == []
    assert orderer.released == 2
    assert released(orderer.add(said(3))) == [(2, 3)]
    assert orderer.seq == 2


def test_an_empty_final_can_unblock_the_ones_behind_it() -> None:
    orderer = FinalOrderer()
    orderer.add(said(3))
    orderer.add(said(2))
    assert released(orderer.add(final(1, ""))) == [(1, 2), (2, 3)]


def test_duplicates_are_ignored_before_release() -> None:
    orderer = FinalOrderer()
    orderer.add(said(2))
    assert orderer.add(final(2, "a redelivered job heard something else", worker="asr-2")) == []
    pairs = orderer.add(said(1))
    assert released(pairs) == [(1, 1), (2, 2)]
    second = pairs[1][1]
    assert isinstance(second, Transcript) and second.worker_id == "asr-1"  # the first copy wins


def test_duplicates_are_ignored_after_release() -> None:
    orderer = FinalOrderer()
    orderer.add(said(1))
    orderer.add(final(2, ""))
    assert orderer.add(said(1)) == []
    assert orderer.add(said(2)) == []  # an empty final stays empty: its index is consumed
    assert orderer.seq == 1
    assert released(orderer.add(said(3))) == [(2, 3)]


def test_missing_counts_up_to_what_is_asked() -> None:
    orderer = FinalOrderer()
    assert orderer.missing(0) == []
    orderer.add(said(2))
    orderer.add(said(5))
    assert orderer.missing(orderer.highest_waiting) == [1, 3, 4]
    assert orderer.missing(7) == [1, 3, 4, 6, 7]
    orderer.add(said(1))
    assert orderer.missing(7) == [3, 4, 6, 7]


def test_failures_take_their_index_and_are_released_in_order_without_seq() -> None:
    orderer = FinalOrderer()
    failed = TranscriptionFailed(session_id="session-0001", final_index=2, code="TRANSCRIPTION_FAILED",
                                 message="no", utterance_id="u1")
    assert released(orderer.add(said(3))) == []
    assert released(orderer.add(failed)) == []
    assert released(orderer.add(said(1))) == [(1, 1), (0, 2), (2, 3)]
    assert orderer.add(said(2)) == []  # the transcript that lost the race for index 2


def test_a_resumed_orderer_starts_at_the_stored_position() -> None:
    orderer = FinalOrderer(next_index=301, seq=290)
    assert orderer.add(said(300)) == []  # released before the resume
    assert released(orderer.add(said(301))) == [(291, 301)]


def test_overfull_past_the_bound_of_waiting_finals() -> None:
    orderer = FinalOrderer(max_waiting=3)
    for i in range(2, 5):
        orderer.add(said(i))
    assert not orderer.overfull
    orderer.add(said(5))
    assert orderer.overfull


@st.composite
def arrivals(draw: st.DrawFn) -> tuple[list[Transcript], list[Transcript]]:
    """All finals of a session (some empty), and an arrival order with redeliveries."""
    n = draw(st.integers(min_value=0, max_value=25))
    texts = draw(st.lists(st.sampled_from(["", "yes", "no"]), min_size=n, max_size=n))
    finals = [final(i, text) for i, text in enumerate(texts, start=1)]
    again = draw(st.lists(st.sampled_from(finals), max_size=10)) if finals else []
    order = draw(st.permutations(finals + again))
    return finals, list(order)


@given(arrivals())
def test_seq_depends_only_on_the_set_of_finals(case: tuple[list[Transcript], list[Transcript]]) -> None:
    finals, order = case
    expected = [(seq, t.final_index) for seq, t in enumerate((t for t in finals if t.text), start=1)]

    orderer = FinalOrderer()
    got: list[tuple[int, int]] = []
    for t in order:
        got += released(orderer.add(t))

    assert got == expected
    assert orderer.released == len(finals)
    assert orderer.missing(len(finals)) == []
