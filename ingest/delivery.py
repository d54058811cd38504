"""What one client is sent, and when: the delivery policy of a session. Pure and synchronous.

The connection feeds it every result of its session (live from the bus, or read back from the
RESULTS stream) and the clock; it answers with the client messages to send. It owns:

* **Order and numbering** of finals (``FinalOrderer``): strictly by ``final_index``, ``seq`` from
  the session's stored position.
* **Skip**: finals the client already has (``last_seq`` of its ``reconnect``) are not sent again.
* **Pacing**: finals and failure errors wait in ``ready`` until the connection has room in the
  client's bounded queue (``take``), so a backlog the service itself produced (a resume after
  300 finals) never makes a client look slow. ``live_backlog`` counts only finals that arrived
  live: that is what says the client is too slow.
* **Gaps**: an index that is missing while a later one (or the expected total, or a probe of the
  stream) says it exists is asked for from the stream after ``repair_after_s`` (``Repair``) and
  declared failed after ``give_up_after_s`` (``GiveUp``), so a lost final is late but never blocks
  the ones after it for longer than that.
* **Partials**: dropped once their utterance has a final; shown through the stability rule
  (``PartialStabilizer``: a ``stable_text`` prefix that later partials keep, never shorter
  without a revision).
* **Revisions**: a final's ``Revision`` (its text decoded again with the audio after it) replaces
  the text of the final in ``ready`` if it is still waiting there; if the client has it, a
  ``revision`` message naming its ``seq`` goes out now (droppable, like partials). A revision of a
  final this connection never queued (not yet released, or older than ``recent_utterances``
  finals) is dropped. A live final announces the revision of the final before it
  (``Transcript.revising``); ``revisions_settled`` says whether every announced one has come
  (changed or not), so that ``end`` can wait for the last of them. Revisions are stored after
  their finals: finals queued again on resume carry their revised text; the finals a resuming
  client already has are kept for their revisions, and the stored ones are sent again (the client
  may have missed them); a revision that comes both read back and live is applied once.
* **Targets**: ``expected_total`` (after ``end``) and ``drain_target`` (after ``drain``).

Times are the caller's monotonic clock, in seconds.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from common.messages import (
    Final,
    Result,
    Revision,
    SessionError,
    SessionFlushed,
    SpeechStarted,
    StoredFinal,
    Transcript,
    TranscriptionFailed,
    UtteranceEnd,
    Word,
)
from common.revised_finals import revised
from ingest import protocol as p
from ingest.finals import FinalOrderer
from ingest.partials import PartialStabilizer


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    repair_after_s: float = 2.0
    """A final missing this long is read back from the RESULTS stream (and again every as long)."""
    give_up_after_s: float = 60.0
    """A final missing this long is declared failed; the client gets TRANSCRIPTION_FAILED for it."""
    max_waiting_finals: int = 1000
    """Finals held behind a gap; past this the oldest gap is given up at once (memory bound)."""
    recent_utterances: int = 256
    """Finalised utterance ids remembered to drop their late partials (and finals kept for revisions)."""


@dataclass(frozen=True, slots=True)
class Repair:
    """Read the session's finals back from the RESULTS stream."""


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Declare ``final_index`` failed (store a TranscriptionFailed for it, then feed it back)."""

    final_index: int


Action = Repair | GiveUp


@dataclass(slots=True)
class Released:
    """What one result released: droppable messages to send now, finals now queued in order."""

    now: list[dict[str, Any]] = field(default_factory=list)
    finals: list[Transcript] = field(default_factory=list)


class Delivery:
    def __init__(
        self, options: DeliveryOptions | None = None, *, next_index: int = 1, seq: int = 0, skip_upto_seq: int = 0
    ) -> None:
        self.options = options or DeliveryOptions()
        self.orderer = FinalOrderer(next_index, seq, self.options.max_waiting_finals)
        self.skip_upto_seq = skip_upto_seq  # the client already has finals up to this seq
        self.ready: deque[tuple[dict[str, Any], bool]] = deque()  # (message, arrived live)
        self.expected_total: int | None = None  # from session_flushed after `end`
        self.drain_target: int | None = None  # from session_flushed after `drain`
        self.stored_index = 0  # highest final index known to exist in RESULTS
        self.sent_finals = 0  # transcripts handed to the client by this connection
        self._finalised: OrderedDict[str, None] = OrderedDict()
        self._queued: OrderedDict[int, dict[str, Any]] = OrderedDict()  # final index -> its message, for revisions
        self._revisions_due: set[int] = set()  # final indexes whose announced revision has not come
        self.partials = PartialStabilizer()  # what partials show: a stable prefix, a tail that may change
        self._missing_since: dict[int, float] = {}
        self._last_repair = float("-inf")
        self._live_in_ready = 0

    def __repr__(self) -> str:
        return (f"<Delivery released={self.released} seq={self.seq} ready={len(self.ready)} "
                f"missing={sorted(self._missing_since)}>")

    # --- state --------------------------------------------------------------------------------

    @property
    def released(self) -> int:
        """Highest final index released to the client's queue (with or without text)."""
        return self.orderer.released

    @property
    def seq(self) -> int:
        return self.orderer.seq

    @property
    def live_backlog(self) -> int:
        """Finals that arrived live and still wait for room in the client's queue."""
        return self._live_in_ready

    @property
    def complete(self) -> bool:
        """Every final announced by the VAD's ``end`` flush is released."""
        return self.expected_total is not None and self.released >= self.expected_total

    @property
    def revisions_settled(self) -> bool:
        """Every revision announced by a live final has come (changed or not)."""
        return not self._revisions_due

    @property
    def drained(self) -> bool:
        return self.drain_target is not None and self.released >= self.drain_target

    # --- input --------------------------------------------------------------------------------

    def add(self, result: Result, now: float, *, live: bool = True) -> Released:
        out = Released()
        match result:
            case Transcript(is_final=True) | TranscriptionFailed():
                if live and isinstance(result, Transcript) and result.revising and result.final_index > self.released:
                    self._revisions_due.add(result.final_index - 1)
                    if len(self._revisions_due) > self.options.recent_utterances:  # never answered: forget
                        self._revisions_due.discard(min(self._revisions_due))
                self._add_final(result, now, live, out)
            case Transcript():
                if result.text and result.utterance_id not in self._finalised:
                    view = self.partials.partial(result.utterance_id, result.text, result.end_s)
                    if view is not None:
                        message = p.transcript(is_final=False, utterance_id=result.utterance_id, text=view.text,
                                               start_s=result.start_s, end_s=result.end_s)
                        message["stable_text"] = view.stable_text
                        out.now.append(message)
            case Revision():
                self._revise(result, out)
            case SpeechStarted():
                out.now.append({"type": "speech_started", "utterance_id": result.utterance_id,
                                "start_s": round(result.start_s, 3)})
            case UtteranceEnd():
                out.now.append({"type": "utterance_end", "utterance_id": result.utterance_id,
                                "end_s": round(result.end_s, 3)})
            case SessionFlushed(ended=False):
                self.drain_target = result.finals_total
                self._note_gaps(now)
            case SessionFlushed():
                self.expected_total = result.finals_total
                self._note_gaps(now)
            case SessionError():
                self.ready.append((p.error(result.code, result.message), False))
        return out

    def note_stored(self, final_index: int, now: float) -> None:
        """A probe of the stream saw finals up to ``final_index``."""
        self.stored_index = max(self.stored_index, final_index)
        self._note_gaps(now)

    def resume(self, stored: Iterable[StoredFinal], *, anchor_index: int, anchor_seq: int, last_seq: int,
               now: float) -> list[dict[str, Any]]:
        """Positions a resumed session: ``anchor_index``/``anchor_seq`` is the last position the
        session store holds; the client has finals up to ``last_seq``. Finals at or below the
        anchor that the client lacks are queued again with the seq they had (counted back from the
        anchor while the stream still holds them), with the text of their stored revision if they
        have one; later ones go through the orderer.

        Returns the ``revision`` messages to send now (droppable): for the finals the client has
        (the last ``recent_utterances`` of them), the stored revisions that changed them, which it
        may have missed while away or had dropped under pressure; a client applies a revision it
        already has without change. Those finals are kept for revisions still to come."""
        items = list(stored)
        as_first: dict[int, Final] = {}
        for item in items:
            if not isinstance(item, Revision):
                as_first.setdefault(item.final_index, item)
        first: dict[int, Final] = {}
        for stored_final in revised(items):
            first.setdefault(stored_final.final_index, stored_final)
        self.orderer = FinalOrderer(anchor_index + 1, anchor_seq, self.options.max_waiting_finals)
        self.skip_upto_seq = last_seq
        again: list[tuple[int, Transcript]] = []
        had: list[tuple[int, Transcript]] = []  # the client has these, newest first
        seq = anchor_seq
        for index in range(anchor_index, 0, -1):
            kept = first.get(index)
            if kept is None:
                break  # older finals expired from the stream: they cannot be sent again
            if isinstance(kept, Transcript) and kept.text:
                if seq > last_seq:
                    again.append((seq, kept))
                elif len(had) < self.options.recent_utterances:
                    had.append((seq, kept))
                seq -= 1
        for seq_no, final in reversed(had):
            self._keep(seq_no, final)
        for seq_no, final in reversed(again):
            self._queue_final(seq_no, final, live=False)
        for index in sorted(i for i in first if i > anchor_index):
            self._add_final(first[index], now, False, Released())
        waiting = {id(message) for message, _ in self.ready}
        revisions: list[dict[str, Any]] = []
        for index, message in self._queued.items():  # the stored revisions of finals the client has
            original = as_first.get(index)
            if id(message) not in waiting and isinstance(original, Transcript) and original.text != message["text"]:
                revisions.append(p.revision(seq=message["seq"], utterance_id=message["utterance_id"],
                                            text=message["text"], start_s=message["start_s"],
                                            end_s=message["end_s"], words=message.get("words")))
        return revisions

    # --- output -------------------------------------------------------------------------------

    def take(self, room: int) -> list[dict[str, Any]]:
        """Up to ``room`` queued finals / failure errors, in order."""
        out: list[dict[str, Any]] = []
        while self.ready and len(out) < room:
            message, live = self.ready.popleft()
            self._live_in_ready -= live
            out.append(message)
        return out

    def due(self, now: float) -> list[Action]:
        """What the connection should do about gaps now."""
        self._note_gaps(now)
        actions: list[Action] = []
        if not self._missing_since:
            return actions
        oldest = min(self._missing_since.values())
        if now - oldest >= self.options.repair_after_s and now - self._last_repair >= self.options.repair_after_s:
            self._last_repair = now
            actions.append(Repair())
        overfull = self.orderer.overfull
        for index, since in sorted(self._missing_since.items()):
            if overfull or now - since >= self.options.give_up_after_s:
                actions.append(GiveUp(index))
                overfull = False  # one at a time: the next result re-checks
        return actions

    # --- internals ----------------------------------------------------------------------------

    def _add_final(self, final: Final, now: float, live: bool, out: Released) -> None:
        self.stored_index = max(self.stored_index, final.final_index)
        for seq, item in self.orderer.add(final):
            self._missing_since.pop(item.final_index, None)
            if isinstance(item, Transcript):
                self._remember(item.utterance_id)
                if seq > self.skip_upto_seq:
                    self._queue_final(seq, item, live)
                    out.finals.append(item)
                else:
                    self._keep(seq, item)
            else:
                self._remember(item.utterance_id)
                message = p.error(p.TRANSCRIPTION_FAILED, item.message)
                message.update(utterance_id=item.utterance_id, final_index=item.final_index)
                self.ready.append((message, live))
                self._live_in_ready += live
        self._note_gaps(now)

    def _queue_final(self, seq: int, final: Transcript, live: bool) -> None:
        message = self._keep(seq, final)
        self.ready.append((message, live))
        self._live_in_ready += live
        self.sent_finals += 1

    def _keep(self, seq: int, final: Transcript) -> dict[str, Any]:
        """The final's message, kept (the last ``recent_utterances``) so that its revision can
        reach the client, whether it is queued now or the client had it before a resume."""
        message = _final_message(seq, final)
        self._queued[final.final_index] = message
        while len(self._queued) > self.options.recent_utterances:
            self._queued.popitem(last=False)
        return message

    def _revise(self, revision: Revision, out: Released) -> None:
        self._revisions_due.discard(revision.final_index)
        if not revision.text:  # nothing changed
            return
        final = self._queued.get(revision.final_index)
        if final is None or final["utterance_id"] != revision.utterance_id or final["text"] == revision.text:
            return  # not ours to revise, or already revised (read back from RESULTS, then live)
        final["text"] = revision.text
        if revision.words:
            final["words"] = _word_list(revision.words)
        if not any(message is final for message, _ in self.ready):  # the client has it: say what changed
            out.now.append(p.revision(seq=final["seq"], utterance_id=revision.utterance_id, text=revision.text,
                                      start_s=revision.start_s, end_s=revision.end_s,
                                      words=final.get("words")))

    def _remember(self, utterance_id: str) -> None:
        if not utterance_id:
            return
        self.partials.final(utterance_id)
        self._finalised[utterance_id] = None
        while len(self._finalised) > self.options.recent_utterances:
            self._finalised.popitem(last=False)

    def _note_gaps(self, now: float) -> None:
        known = max(self.orderer.highest_waiting, self.expected_total or 0, self.drain_target or 0,
                    self.stored_index)
        missing = set(self.orderer.missing(known)) if known >= self.orderer.next_index else set()
        for index in list(self._missing_since):
            if index not in missing:
                del self._missing_since[index]
        for index in missing:
            self._missing_since.setdefault(index, now)


def _final_message(seq: int, final: Transcript) -> dict[str, Any]:
    message = p.transcript(is_final=True, seq=seq, utterance_id=final.utterance_id, text=final.text,
                           start_s=final.start_s, end_s=final.end_s, reason=final.reason)
    if final.words:  # word_timestamps is on
        message["words"] = _word_list(final.words)
    return message


def _word_list(words: Iterable[Word]) -> list[dict[str, Any]]:
    """A final's ``words`` (word_timestamps on), for the client."""
    return [{"word": w.word, "start_s": round(w.start_s, 3), "end_s": round(w.end_s, 3),
             "probability": round(w.probability, 3)} for w in words]
