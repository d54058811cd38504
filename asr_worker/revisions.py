"""Which finals are revised, and when: the ASR worker's revision policy, without I/O.

After publishing final n, a worker may decode final n-1 again with n's audio after it
(`Transcriber.revise`). `why_not_revise` decides whether n-1 is worth it; when another worker is
still decoding n-1, the worker waits for n-1 to be stored (at most ``revision_max_lag_ms``) and
asks `predecessor_gate` then.

The decode does not run in the final's slot right away: it waits in a `RevisionQueue`, which the
worker's fetch loop serves when a slot is free and no final (or final decoded ahead) waits, before
any partial. Under load, revisions wait instead of delaying finals, and they run in the gaps that
finals leave. A revision that waited longer than ``revision_max_lag_ms``, or was pushed out of a
full queue (``revision_max_pending``), is given up ("late"): the worker publishes an empty outcome
so that an edge ending the session does not wait for it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from common.messages import AsrJob, Transcript
from common.settings import Settings


def why_not_revise(job: AsrJob, last: Transcript | None, stored_index: int, settings: Settings) -> str:
    """Why final ``job`` does not revise the final before it now ("" if it does), given the index
    of the session's latest stored final (``stored_index``, 0 if none) and that final (``last``,
    None if it failed): the predecessor is not stored yet, another worker still decoding it
    ("unstored": the worker waits for it, `predecessor_gate`); a later final is stored, as when a
    job is delivered again, or the predecessor failed ("no_previous"); or `predecessor_gate` says no."""
    previous = job.final_index - 1
    if stored_index < previous:
        return "unstored"
    if stored_index > previous or last is None:
        return "no_previous"
    return predecessor_gate(last, settings)


def predecessor_gate(last: Transcript, settings: Settings) -> str:
    """Why the stored final ``last`` is not worth a revision ("" if it is): it has no text, so no
    seq to revise ("no_previous"); the decoder was sure of it (its ``avg_logprob`` is not below
    ``revision_max_logprob``; "sure")."""
    bound = settings.revision_max_logprob
    if not last.text:
        return "no_previous"
    if bound < 0 and last.avg_logprob >= bound:
        return "sure"
    return ""


@dataclass(frozen=True, slots=True)
class PendingRevision:
    """Final ``last`` (as stored) to decode again with ``following`` (the next final's audio) after
    its own ``audio``; queued at ``queued_at`` (monotonic seconds)."""

    last: Transcript
    audio: bytes
    following: bytes
    queued_at: float

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
    def from_settings(cls, settings: Settings) -> RevisionQueue:
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
