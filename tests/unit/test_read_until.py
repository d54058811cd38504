"""A revision's decode stops after the window that reaches past the revised final."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from asr_worker.transcriber import LastWindow, read_until


@dataclass(frozen=True)
class Seg:
    end: float


class Model:
    """faster-whisper's segment generator over windows: each window is decoded (counted) only when
    the reader gets that far, and not at all once told that the last one is done (it raises
    `LastWindow` where it would start it, as `_WindowedWhisper.encode` does)."""

    def __init__(self, *windows: list[float]) -> None:
        self.windows = windows
        self.decoded = 0
        self.last = False

    def last_window(self) -> None:
        self.last = True

    def segments(self) -> Iterator[Seg]:
        for window in self.windows:
            if self.last:
                raise LastWindow
            self.decoded += 1
            yield from (Seg(e) for e in window)


def test_the_window_that_passes_the_final_is_read_whole_and_no_later_one_decoded() -> None:
    model = Model([2.0, 4.1, 5.0], [6.0], [8.0])
    got = read_until(model.segments(), 4.0, model.last_window)
    assert got == [Seg(2.0), Seg(4.1), Seg(5.0)]  # 5.0: the next final's first words, for the split
    assert model.decoded == 1


def test_a_window_that_stops_inside_the_final_is_followed() -> None:
    model = Model([1.5], [3.0, 4.0], [6.0])
    got = read_until(model.segments(), 4.0, model.last_window)
    assert got == [Seg(1.5), Seg(3.0), Seg(4.0)]  # a segment ending on the boundary has reached it
    assert model.decoded == 2


def test_without_a_bound_every_window_is_decoded() -> None:
    model = Model([1.0], [2.0])
    assert read_until(model.segments(), math.inf, model.last_window) == [Seg(1.0), Seg(2.0)]
    assert model.decoded == 2
