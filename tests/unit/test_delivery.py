"""ingest.delivery.Delivery: what a client is sent and when (a pure engine, driven by a fake clock)."""

from __future__ import annotations

from typing import Any

from common.messages import Final, Revision, SessionFlushed, Transcript, TranscriptionFailed, UtteranceEnd
from ingest.delivery import Delivery, DeliveryOptions, GiveUp, Repair

SID = "session-0001"


def final(index: int, text: str | None = None) -> Transcript:
    return Transcript(session_id=SID, utterance_id=f"u{index - 1}", is_final=True,
                      text=f"words {index}" if text is None else text, start_s=float(index), end_s=index + 0.5,
                      final_index=index)


def partial(utterance: int, text: str = "partial words") -> Transcript:
    return Transcript(session_id=SID, utterance_id=f"u{utterance}", is_final=False, text=text, start_s=0.0,
                      end_s=1.0)


def sent(delivery: Delivery, room: int = 10_000) -> list[dict[str, Any]]:
    return delivery.take(room)


def seqs(messages: list[dict[str, Any]]) -> list[int]:
    return [m["seq"] for m in messages if m["type"] == "transcript"]


def test_finals_go_out_in_index_order_with_seq_and_partials_of_finalised_utterances_are_dropped() -> None:
    d = Delivery()
    assert d.add(partial(0), 0.0).now[0]["text"] == "partial words"
    assert d.add(final(2), 0.0).finals == []
    assert [f.final_index for f in d.add(final(1), 0.0).finals] == [1, 2]
    assert seqs(sent(d)) == [1, 2]
    assert d.add(partial(0, "late partial of a finished utterance"), 0.0).now == []
    assert d.add(partial(2), 0.0).now != []


def test_a_missing_final_is_repaired_then_given_up_and_never_blocks_for_longer() -> None:
    d = Delivery(DeliveryOptions(repair_after_s=2.0, give_up_after_s=30.0))
    d.add(final(1), 0.0)
    d.add(final(3), 1.0)  # index 2 is now known to be missing
    assert seqs(sent(d)) == [1]
    assert d.due(2.9) == []
    assert d.due(3.0) == [Repair()]
    assert d.due(4.0) == []  # not again before another repair_after_s
    assert d.due(5.0) == [Repair()]
    assert GiveUp(2) in d.due(31.0)
    failure = TranscriptionFailed(session_id=SID, final_index=2, code="TRANSCRIPTION_FAILED", message="lost")
    d.add(failure, 31.1, live=False)
    out = sent(d)
    assert [m["type"] for m in out] == ["error", "transcript"]
    assert out[0]["code"] == "TRANSCRIPTION_FAILED" and out[0]["final_index"] == 2
    assert out[1]["seq"] == 2
    assert d.due(100.0) == []


def test_a_probe_of_the_stream_reveals_a_lost_last_final() -> None:
    d = Delivery(DeliveryOptions(repair_after_s=2.0))
    d.add(final(1), 0.0)
    assert d.due(10.0) == []  # nothing says more exists
    d.note_stored(2, 10.0)
    assert d.due(12.0) == [Repair()]
    d.add(final(2), 12.1, live=False)
    assert seqs(sent(d)) == [1, 2]
    assert d.due(20.0) == []


def test_overfull_waiting_gives_the_oldest_gap_up_at_once() -> None:
    d = Delivery(DeliveryOptions(max_waiting_finals=10, give_up_after_s=1000.0))
    for i in range(2, 13):
        d.add(final(i), 0.0)
    assert d.due(0.0)[-1] == GiveUp(1)


def test_end_and_drain_targets() -> None:
    d = Delivery()
    d.add(final(1), 0.0)
    assert not d.complete
    d.add(SessionFlushed(session_id=SID, finals_total=2, audio_s=3.0, ended=False), 0.0)
    assert d.drain_target == 2 and not d.drained
    d.add(final(2, ""), 0.0)
    assert d.drained
    d.add(SessionFlushed(session_id=SID, finals_total=3, audio_s=4.0), 0.0)
    assert not d.complete
    d.add(final(3), 0.0)
    assert d.complete and d.seq == 2


def test_resume_with_last_seq_0_after_300_finals_queues_all_300_in_order_paced() -> None:
    stored = [final(i, "" if i % 10 == 0 else None) for i in range(1, 331)]  # 300 with text, 30 empty
    d = Delivery()
    d.resume(reversed(stored), anchor_index=330, anchor_seq=297, last_seq=0, now=0.0)
    assert d.live_backlog == 0  # the service's own backlog never counts as a slow client
    got: list[int] = []
    while batch := sent(d, room=40):
        assert len(batch) <= 40
        got += seqs(batch)
    assert got == list(range(1, 298))


def test_resume_counts_seq_back_from_the_anchor_and_goes_on_after_it() -> None:
    stored = [final(i) for i in range(1, 9)]
    d = Delivery()
    # The store last saw index 6 / seq 6; the client had seq 4; 7 and 8 were stored since.
    d.resume(stored, anchor_index=6, anchor_seq=6, last_seq=4, now=0.0)
    assert seqs(sent(d)) == [5, 6, 7, 8]
    d.add(final(9), 0.0)
    assert seqs(sent(d)) == [9]


def test_resume_when_the_client_is_ahead_of_the_stored_position() -> None:
    d = Delivery()
    d.resume([final(i) for i in range(1, 9)], anchor_index=6, anchor_seq=6, last_seq=8, now=0.0)
    assert sent(d) == []
    d.add(final(9), 0.0)
    assert seqs(sent(d)) == [9]


def test_resume_after_the_results_expired_continues_with_the_next_seq() -> None:
    d = Delivery()
    d.resume([], anchor_index=40, anchor_seq=37, last_seq=37, now=0.0)
    d.add(final(41), 0.0)
    assert seqs(sent(d)) == [38]
    assert d.due(100.0) == []  # nothing below the anchor is missing


def test_live_backlog_counts_only_live_finals() -> None:
    d = Delivery()
    d.resume([final(i) for i in range(1, 51)], anchor_index=50, anchor_seq=50, last_seq=0, now=0.0)
    for i in range(51, 56):
        d.add(final(i), 0.0)
    assert len(d.ready) == 55 and d.live_backlog == 5
    d.take(52)
    assert d.live_backlog == 3


def test_vad_events_are_droppable_and_pass_through() -> None:
    d = Delivery()
    out = d.add(UtteranceEnd(session_id=SID, utterance_id="u0", end_s=1.23456), 0.0).now
    assert out == [{"type": "utterance_end", "utterance_id": "u0", "end_s": 1.235}]


def revision(index: int, text: str) -> Revision:
    return Revision(session_id=SID, utterance_id=f"u{index - 1}", final_index=index, text=text,
                    start_s=float(index), end_s=index + 0.5)


def test_a_revision_of_a_final_the_client_has_goes_out_at_once_naming_its_seq() -> None:
    d = Delivery()
    d.add(final(1), 0.0)
    d.add(final(2, ""), 0.0)  # no text: no seq
    d.add(final(3), 0.0)
    assert seqs(sent(d)) == [1, 2]
    out = d.add(revision(3, "better words"), 1.0).now
    assert out == [{"type": "revision", "seq": 2, "utterance_id": "u2", "text": "better words",
                    "start_s": 3.0, "end_s": 3.5}]
    assert sent(d) == []  # droppable, not queued with the finals


def test_a_revision_of_a_final_still_queued_replaces_its_text_there() -> None:
    d = Delivery()
    d.add(final(1), 0.0)
    d.add(final(2), 0.0)
    assert d.add(revision(1, "better words"), 1.0).now == []
    queued = sent(d)
    assert [(m["seq"], m["text"]) for m in queued] == [(1, "better words"), (2, "words 2")]


def test_revisions_of_unknown_finals_and_unchanged_ones_send_nothing() -> None:
    d = Delivery()
    d.add(final(1), 0.0)
    sent(d)
    assert d.add(revision(5, "not yet released"), 1.0).now == []
    assert d.add(revision(1, ""), 1.0).now == []  # "" = the final stays as it is
    wrong_utterance = Revision(session_id=SID, utterance_id="u9", final_index=1, text="x", start_s=0, end_s=1)
    assert d.add(wrong_utterance, 1.0).now == []


def test_end_can_wait_for_the_revision_a_live_final_announced() -> None:
    d = Delivery()
    d.add(final(1), 0.0)
    assert d.revisions_settled
    announcing = Transcript(session_id=SID, utterance_id="u1", is_final=True, text="words 2", start_s=2.0,
                            end_s=2.5, final_index=2, revising=True)
    d.add(announcing, 0.0)
    assert not d.revisions_settled
    d.add(revision(1, ""), 1.0)  # unchanged, but it came
    assert d.revisions_settled
    d.add(Transcript(session_id=SID, utterance_id="u2", is_final=True, text="words 3", start_s=3.0, end_s=3.5,
                     final_index=3, revising=True), 2.0, live=False)  # read back on resume: nothing will come
    assert d.revisions_settled


def test_finals_queued_again_on_resume_carry_their_stored_revision() -> None:
    # RESULTS holds finals 1-3 and, after final 2, the revision of final 1 (stream order).
    stored: list[Final | Revision] = [final(1), final(2), revision(1, "revised one"), final(3), revision(2, "")]
    d = Delivery()
    assert d.resume(stored, anchor_index=3, anchor_seq=3, last_seq=0, now=0.0) == []  # nothing to resend
    assert [(m["seq"], m["text"]) for m in sent(d)] == [(1, "revised one"), (2, "words 2"), (3, "words 3")]


def test_a_revision_read_back_and_then_live_reaches_the_client_once() -> None:
    d = Delivery()
    d.add(final(1), 0.0)
    d.add(final(2), 0.0)
    sent(d)
    first = d.add(revision(1, "better words"), 1.0, live=False).now  # a repair read it from RESULTS
    assert [m["type"] for m in first] == ["revision"]
    assert d.add(revision(1, "better words"), 1.1).now == []  # the live copy: nothing new
    assert [m["text"] for m in d.add(revision(1, "other words"), 1.2).now] == ["other words"]


def test_a_resume_sends_again_the_revisions_of_finals_the_client_has_and_keeps_them_revisable() -> None:
    stored: list[Final | Revision] = [final(1), final(2), revision(1, "revised one"), final(3), final(4)]
    d = Delivery()
    # The client has seq 1-3 (it may have missed the revision of 1); 4 was stored since.
    missed = d.resume(stored, anchor_index=4, anchor_seq=4, last_seq=3, now=0.0)
    assert [(m["type"], m["seq"], m["text"]) for m in missed] == [("revision", 1, "revised one")]
    assert [(m["seq"], m["text"]) for m in sent(d)] == [(4, "words 4")]
    # The revision of final 3, decoded after the client went away, still reaches it.
    out = d.add(revision(3, "revised three"), 1.0).now
    assert [(m["type"], m["seq"], m["text"]) for m in out] == [("revision", 3, "revised three")]


def test_a_resume_resends_at_most_recent_utterances_revisions() -> None:
    stored: list[Final | Revision] = [final(i) for i in range(1, 11)]
    stored += [revision(i, f"r{i}") for i in range(1, 11)]
    d = Delivery(DeliveryOptions(recent_utterances=3))
    missed = d.resume(stored, anchor_index=10, anchor_seq=10, last_seq=10, now=0.0)
    assert [m["seq"] for m in missed] == [8, 9, 10]


def test_a_resume_behind_the_client_keeps_the_newest_finals_it_has_revisable() -> None:
    # The store's position lags: it says index 2 / seq 2, the client has seq 4; 3 and 4 go
    # through the orderer and are skipped, but their revisions (stored and later) reach the client.
    stored: list[Final | Revision] = [final(1), final(2), final(3), final(4), revision(3, "revised three")]
    d = Delivery()
    missed = d.resume(stored, anchor_index=2, anchor_seq=2, last_seq=4, now=0.0)
    assert [(m["seq"], m["text"]) for m in missed] == [(3, "revised three")]
    assert sent(d) == []
    out = d.add(revision(4, "revised four"), 1.0).now
    assert [(m["type"], m["seq"], m["text"]) for m in out] == [("revision", 4, "revised four")]
