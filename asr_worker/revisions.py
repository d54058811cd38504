"""Which finals are revised or carried, and when: the ASR worker's revision policy, without I/O.

After publishing final n, a worker may decode final n-1 again with n's audio after it
(`Transcriber.revise`). `why_not_revise` decides whether n-1 is worth it. When another worker is
still decoding n-1, final n waits for n-1 to be stored (at most ``revision_max_lag_ms``) before it
is published: the edge hands finals to the client in index order, so n could not reach the client
earlier anyway, and the decision is made with n-1 known.

A final n-1 that decoded to nothing on its own has no ``seq`` the client could see revised. Whole-
file decoding hears such audio (a noisy first sentence, a word too short to stand alone) with what
follows it, and often gets its words. So when n-1 is stored without text, final n is decoded again
with n-1's audio in front of its own (`carries_previous`), and its text holds the words of both.

The decode does not run in the final's slot right away: it waits in a `RevisionQueue`. On CPU
workers (``revision_nice`` 0-19, 19 by default) one child process at that nice value takes them
from the queue, oldest first (`asr_worker.background_reviser`): the kernel gives it the CPU that
finals and partials leave, so a final never waits for a revision. Otherwise (``revision_nice`` -1,
GPU workers) the worker's fetch loop serves the queue when a slot is free and no final (or final
decoded ahead) waits, before any partial. Either way, under load revisions wait instead of
delaying finals. A revision that waited longer than ``revision_max_lag_ms``, or was pushed out of a
full queue (``revision_max_pending``), is given up ("late"): the worker publishes an empty outcome
so that an edge ending the session does not wait for it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from asr_worker.asr_settings import AsrSettings
from asr_worker.hallucinations import normalise
from common.messages import AsrJob, Transcript


def why_not_revise(job: AsrJob, last: Transcript | None, stored_index: int, settings: AsrSettings) -> str:
    """Why final ``job`` does not revise the final before it now ("" if it does), given the index
    of the session's latest stored final (``stored_index``, 0 if none) and that final (``last``,
    None if it failed): the predecessor is not stored yet, another worker still decoding it
    ("unstored": asked again once the worker has waited for it); a later final is stored, as when a
    job is delivered again, or the predecessor failed ("no_previous"); or `predecessor_gate` says no."""
    previous = job.final_index - 1
    if stored_index < previous:  # after waiting revision_max_lag_ms for it
        return "unstored"
    if stored_index > previous or last is None:
        return "no_previous"
    return predecessor_gate(last, settings)


def predecessor_gate(last: Transcript, settings: AsrSettings) -> str:
    """Why the stored final ``last`` is not worth a revision ("" if it is): it has no text, so no
    seq to revise ("no_previous"); it carries its own predecessor's words, which a revision (of its
    own audio only) would drop ("carried"); the decoder was sure of it (its ``avg_logprob`` is not
    below ``revision_max_logprob``; "sure")."""
    bound = settings.revision_max_logprob
    if not last.text:
        return "no_previous"
    if last.carried_s > 0:
        return "carried"
    if bound < 0 and last.avg_logprob >= bound:
        return "sure"
    return ""


def carries_previous(job: AsrJob, last: Transcript | None, stored_index: int, heard: str,
                     settings: AsrSettings) -> bool:
    """Whether final ``job``, which alone was heard as ``heard``, is decoded again with its
    predecessor's audio (``job.previous_audio``) in front: `carry_empty_finals` is on, the
    predecessor is stored (``last``, index ``stored_index``) and has no text, and this final has
    words. A final without words of its own is not decoded again: two utterances the decoder found
    empty are mostly noise, and a second decode of every noise blip would double its cost."""
    return (settings.carry_empty_finals and job.is_final and bool(job.previous_audio) and bool(heard)
            and stored_index == job.final_index - 1 and last is not None and not last.text)


TRAILING_OFF = ("...", "\u2026")
"""How Whisper ends a word it heard trail off: "And...". At a cut, a breath or the first sound of
the next utterance in the final's last 0.2 s reads this way (a LibriVox reading in the corpus:
"...where abundance lies. And...", twice in 15 lines; decoded with the next final's audio, no
"And")."""


def revision_outcome(old: str, new: str) -> str:
    """What a revision that decoded ``new`` does to a final that reads ``old``: "ok" (replace it),
    "same" (the same words), "empty" (nothing decoded), or "shorter": ``new`` is ``old`` without
    its last words. That is not a correction: Whisper stretches a sentence's last word over the
    pause after it, and by its times the word can fall in the next final's audio (`word_split`
    moves it back only when the next final's text says so; in each of the 5 such cases in the
    accuracy runs on record, before that, the dropped word was right). Unless the one word dropped
    is one the final itself heard trail off (`TRAILING_OFF`): with the audio that followed, the
    decoder no longer hears a word there, and the revision is a correction ("ok")."""
    if not new:
        return "empty"
    before, after = normalise(old).split(), normalise(new).split()
    if after == before:
        return "same"
    if len(after) < len(before) and before[: len(after)] == after:
        return "ok" if len(before) - len(after) == 1 and old.rstrip().endswith(TRAILING_OFF) else "shorter"
    return "ok"


@dataclass(frozen=True, slots=True)
class PendingRevision:
    """Final ``last`` (as stored) to decode again with ``following`` (the next final's audio) after
    its own ``audio``; queued at ``queued_at`` (monotonic seconds). ``following_text``: the next
    final's text as published, which tells where its words begin in the revision's decode."""

    last: Transcript
    audio: bytes
    following: bytes
    queued_at: float
    following_text: str = ""

    @property
    def session_id(self) -> str:
        return self.last.session_id

    @property
    def prompt(self) -> str:
        """The prompt the final had: its stored context without its own text."""
        old = self.last.text.strip()
        return self.last.context[: -len(old)].strip() if old and self.last.context.endswith(old) else ""


class RevisionQueue:
    """Revisions waiting for a free slot, oldest first, at most ``max_pending`` of them, each for at
    most ``max_wait_s``. `put` and `take` return the revisions they give up."""

    def __init__(self, max_pending: int, max_wait_s: float) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.max_pending = max_pending
        self.max_wait_s = max_wait_s
        self._queue: deque[PendingRevision] = deque()

    @classmethod
    def from_settings(cls, settings: AsrSettings) -> RevisionQueue:
        return cls(settings.revision_max_pending, settings.revision_max_lag_ms / 1000)

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, pending: PendingRevision) -> list[PendingRevision]:
        """Queues ``pending``; when the queue is full, the oldest are pushed out and returned."""
        self._queue.append(pending)
        pushed: list[PendingRevision] = []
        while len(self._queue) > self.max_pending:
            pushed.append(self._queue.popleft())
        return pushed

    def take(self, now: float) -> tuple[PendingRevision | None, list[PendingRevision]]:
        """The oldest revision still within ``max_wait_s`` of being queued (None if none), and the
        older ones that waited too long."""
        late: list[PendingRevision] = []
        while self._queue:
            head = self._queue.popleft()
            if now - head.queued_at <= self.max_wait_s:
                return head, late
            late.append(head)
        return None, late

    def drain(self) -> list[PendingRevision]:
        """Everything still queued (the worker is stopping)."""
        out = list(self._queue)
        self._queue.clear()
        return out
