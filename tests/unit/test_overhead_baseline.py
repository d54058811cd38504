"""benchmarks.capacity: each figure-4 stack is compared with the direct timings around it."""

from __future__ import annotations

import pytest

from benchmarks.capacity import OVERHEAD_RUNS, bracketed


def test_each_stack_gets_the_mean_of_the_timings_before_and_after_it() -> None:
    assert bracketed([0.040, 0.036, 0.038, 0.034]) == pytest.approx([0.038, 0.037, 0.036])


def test_one_timing_more_than_stacks_gives_one_baseline_per_stack() -> None:
    timings = [0.03 + i / 1000 for i in range(len(OVERHEAD_RUNS) + 1)]
    assert len(bracketed(timings)) == len(OVERHEAD_RUNS)


def test_a_single_timing_brackets_nothing() -> None:
    with pytest.raises(ValueError):
        bracketed([0.04])
