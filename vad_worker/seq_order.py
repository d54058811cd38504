"""A session's messages back in ``Asr-Seq`` order, whatever order the AUDIO stream stored them in.

After a bus outage the edge publishes its unacknowledged messages again, so JetStream can store
message 47 after messages 51..110 (which nats-py had buffered and flushed on reconnect). The
stream position of a message therefore says nothing about its place in the session: a reader
that goes on "after the last message it processed" misses what was stored earlier.

``SeqOrder`` is the pure part of the VAD worker's ordering (the worker does the reads):

- messages in order, with nothing held back, pass straight through (``in_order``);
- otherwise every message past the last processed one that the worker has seen (from its
  consumer or from reading the stream) is held, the stream is read on from ``scan_from`` (where
  reading stopped last time) to its end, and ``take`` releases the run that continues the session;
- a missing message is waited for up to ``wait_s`` from when its hole was first seen; then the
  hole is skipped (the segmenter counts it as silence) and the rest goes on;
- ``floor`` is the lowest stream position a new owner must read from to see every held message
  (it goes into the session's checkpoint), so a crash while waiting loses nothing either.

Held audio is bounded by the wait: the edge admits at most ``max_realtime_factor`` × real time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Chunk:
    """One message of a session's audio subject."""

    seq: int
    kind: str  # audio | finalize | drain | end
    pcm: bytes
    stream_seq: int = 0  # sequence in the AUDIO stream
    offset: int = -1  # Asr-Offset: bytes of session audio before this chunk; -1: not given


@dataclass(frozen=True, slots=True)
class Taken:
    ready: list[Chunk]
    """Messages to process now, in seq order."""
    waiting_for: int = 0
    """A hole was first seen now: the seq being waited for (0: none new)."""
    skipped: list[int] = field(default_factory=list)
    """Seqs given up on (their wait ran out)."""


class SeqOrder:
    def __init__(self, last_seq: int, last_stream_seq: int, *, read_from: int = 0, wait_s: float) -> None:
        """``last_seq``/``last_stream_seq``: the last processed message and the highest stream
        position processed; ``read_from``: a checkpoint's ``floor`` (0: none, the session was in
        order)."""
        self.last_seq = last_seq
        self.last_stream_seq = last_stream_seq
        self.wait_s = wait_s
        self.held: dict[int, Chunk] = {}
        self.gap_since: float | None = None
        self.scan_from = read_from  # 0: reading is not needed while messages come in order

    @property
    def waiting(self) -> bool:
        """Messages are held back, or the stream must be read before going on."""
        return bool(self.held) or self.gap_since is not None or self.scan_from != 0

    @property
    def floor(self) -> int:
        """Where a new owner must start reading to see every message past ``last_seq`` (0: just
        after ``last_stream_seq``, as in the ordinary case)."""
        if not self.waiting:
            return 0
        positions = [c.stream_seq for c in self.held.values() if c.stream_seq]
        positions.append(self.scan_from or self.last_stream_seq + 1)
        return min(positions)

    def in_order(self, chunks: Iterable[Chunk]) -> list[Chunk] | None:
        """The new ones among ``chunks`` if they continue the session exactly and nothing is held
        back (no read needed); None if the stream must be read (``read_from``, ``add``, ``take``)."""
        new = sorted((c for c in chunks if c.seq > self.last_seq), key=lambda c: c.seq)
        if self.waiting:
            return None
        if [c.seq for c in new] != list(range(self.last_seq + 1, self.last_seq + 1 + len(new))):
            return None
        self._processed(new)
        return new

    def read_from(self) -> int:
        """The stream position to read on from (to the end of the session's messages)."""
        if not self.scan_from:
            self.scan_from = self.last_stream_seq + 1
        return self.scan_from

    def add(self, chunks: Iterable[Chunk], read_to: int = 0) -> None:
        """Holds the messages past ``last_seq``; ``read_to``: the stream was read up to this
        position (the next read starts after it)."""
        for chunk in chunks:
            if chunk.seq > self.last_seq:
                self.held.setdefault(chunk.seq, chunk)
        if read_to:
            self.scan_from = max(self.read_from(), read_to + 1)

    def take(self, now: float) -> Taken:
        """Releases the held run that continues the session; starts or ends a hole's wait."""
        ready: list[Chunk] = []
        skipped: list[int] = []
        waiting_for = 0
        while True:
            while self.last_seq + 1 in self.held:
                ready.append(self.held.pop(self.last_seq + 1))
                self._processed(ready[-1:])
            if not self.held:
                self.gap_since = None
                self.scan_from = 0  # read to the end with nothing left over: in order again
                break
            if ready and self.gap_since is not None and not skipped:
                self.gap_since = now  # progress: the next hole gets its own wait
            if self.gap_since is None:
                self.gap_since = now
                waiting_for = self.last_seq + 1
            if now - self.gap_since < self.wait_s:
                break
            skipped.append(self.last_seq + 1)
            self.last_seq = min(self.held) - 1  # give the hole up: the next held one goes on
            self.gap_since = now
        return Taken(ready, waiting_for, skipped)

    def _processed(self, chunks: list[Chunk]) -> None:
        if chunks:
            self.last_seq = chunks[-1].seq
            self.last_stream_seq = max([self.last_stream_seq, *(c.stream_seq for c in chunks)])
