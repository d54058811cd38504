"""Orders a session's finals and numbers them for the client.

ASR workers finish finals in any order and may deliver one twice (a redelivered job). The VAD
worker numbers finals 1, 2, 3, … (``final_index``) and the ASR worker publishes a result for
every index, with empty text when nothing real was said. This engine releases finals strictly
in index order, skips the empty ones, and gives the rest the client's ``seq`` (1, 2, 3, …).
``seq`` is a pure function of the stored finals, so any edge replaying them gets the same numbers.
"""

from __future__ import annotations

from common.messages import Transcript


class FinalOrderer:
    def __init__(self) -> None:
        self._next_index = 1
        self._waiting: dict[int, Transcript] = {}
        self.seq = 0  # seq of the last final released with text
        self.expected_total: int | None = None  # from the VAD worker's session_flushed

    def add(self, final: Transcript) -> list[tuple[int, Transcript]]:
        """Takes one final; returns the (seq, final) pairs now ready to send, in order."""
        if final.final_index < self._next_index or final.final_index in self._waiting:
            return []  # duplicate
        self._waiting[final.final_index] = final
        ready: list[tuple[int, Transcript]] = []
        while self._next_index in self._waiting:
            item = self._waiting.pop(self._next_index)
            self._next_index += 1
            if item.text:
                self.seq += 1
                ready.append((self.seq, item))
        return ready

    @property
    def released(self) -> int:
        """Finals (with or without text) released so far."""
        return self._next_index - 1

    @property
    def missing(self) -> list[int]:
        """Indices not yet seen that are needed to release what is waiting or expected."""
        top = max([*self._waiting, self.expected_total or 0], default=0)
        return [i for i in range(self._next_index, top + 1) if i not in self._waiting]

    @property
    def complete(self) -> bool:
        return self.expected_total is not None and self.released >= self.expected_total

    def is_finalized(self, final_index_upto: int) -> bool:
        return final_index_upto < self._next_index
