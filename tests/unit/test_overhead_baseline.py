"""benchmarks.capacity: each figure-4 stack is compared with the direct timings around it."""

from __future__ import annotations

import pytest

from benchmarks.capacity import HEADLINE, OVERHEAD_RUNS, bracketed, overhead_runs, parse_args


def test_each_stack_gets_the_mean_of_the_timings_before_and_after_it() -> None:
    assert bracketed([0.040, 0.036, 0.038, 0.034]) == pytest.approx([0.038, 0.037, 0.036])


def test_one_timing_more_than_stacks_gives_one_baseline_per_stack() -> None:
    timings = [0.03 + i / 1000 for i in range(len(OVERHEAD_RUNS) + 1)]
    assert len(bracketed(timings)) == len(OVERHEAD_RUNS)


def test_a_single_timing_brackets_nothing() -> None:
    with pytest.raises(ValueError):
        bracketed([0.04])


def test_the_headline_stack_repeats_first_each_under_its_own_label() -> None:
    runs = overhead_runs(3)
    labels = [label for label, _ in runs]
    assert labels[:3] == [HEADLINE, f"{HEADLINE}#2", f"{HEADLINE}#3"]
    assert labels[3:] == [label for label, _ in OVERHEAD_RUNS[1:]]
    assert runs[1][1] == runs[0][1] == OVERHEAD_RUNS[0][1]  # the same stack each time
    assert len(set(labels)) == len(labels)  # each run keeps its own results and bracket


def test_one_repeat_is_the_stacks_as_they_were() -> None:
    assert overhead_runs(1) == list(OVERHEAD_RUNS)


def test_repeats_below_one_are_refused() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--overhead-repeats", "0"])
    assert parse_args(["--overhead-repeats", "3"]).overhead_repeats == 3
