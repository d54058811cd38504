"""Orders a session's finals and numbers them for the client.

ASR workers finish finals in any order and may deliver one twice (a redelivered job). The VAD
worker numbers finals 1, 2, 3, … (``final_index``); for every index RESULTS ends up holding one
``Transcript`` (empty text when nothing real was said) or one ``TranscriptionFailed``. This engine
releases them strictly in index order, skips the empty ones, and gives each transcript with text
the client's ``seq`` (1, 2, 3, …). ``seq`` is a pure function of the stored finals, so any edge
replaying them from the same position gets the same numbers.

A resumed session starts at a stored position (``next_index``, ``seq``) instead of 1 and 0, so
the cost of a resume does not grow with the session. What waits behind a gap is bounded: past
``max_waiting`` the owner must resolve the gap (``overfull``).
"""

from __future__ import annotations

from common.messages import Final, Transcript


class FinalOrderer:
    def __init__(self, next_index: int = 1, seq: int = 0, max_waiting: int = 1000) -> None:
        self._next_index = next_index
        self._waiting: dict[int, Final] = {}
        self.seq = seq  # seq of the last transcript released with text
        self.max_waiting = max_waiting

    def __repr__(self) -> str:
        return f"FinalOrderer(next_index={self._next_index}, seq={self.seq}, waiting={sorted(self._waiting)})"

    def add(self, final: Final) -> list[tuple[int, Final]]:
        """Takes one final; returns what is now ready, in index order: (seq, transcript) for
        transcripts with text, (0, failure) for failures. Empty transcripts are released silently."""
        if final.final_index < self._next_index or final.final_index in self._waiting:
            return []  # duplicate, or a redelivery of something already released
        self._waiting[final.final_index] = final
        ready: list[tuple[int, Final]] = []
        while self._next_index in self._waiting:
            item = self._waiting.pop(self._next_index)
            self._next_index += 1
            if isinstance(item, Transcript):
                if item.text:
                    self.seq += 1
                    ready.append((self.seq, item))
            else:
                ready.append((0, item))
        return ready

    @property
    def next_index(self) -> int:
        return self._next_index

    @property
    def released(self) -> int:
        """Highest final index released (with or without text)."""
        return self._next_index - 1

    @property
    def highest_waiting(self) -> int:
        return max(self._waiting, default=0)

    @property
    def overfull(self) -> bool:
        """More finals wait behind a gap than allowed: the gap must be resolved now."""
        return len(self._waiting) > self.max_waiting

    def missing(self, upto: int) -> list[int]:
        """Indices not yet seen from the next one up to ``upto``."""
        return [i for i in range(self._next_index, upto + 1) if i not in self._waiting]
