"""How long an idle ASR worker's fetch loop parks (`asr_worker.worker.park_wait`)."""

from __future__ import annotations

from asr_worker.worker import PARK_S, RETRY_SLACK_S, park_wait


def test_with_no_retry_pending_the_loop_parks_the_whole_park() -> None:
    assert park_wait(now=100.0, polled_at=99.9, retry_at=0.0) == PARK_S


def test_a_retry_that_comes_due_before_the_park_ends_wakes_the_loop_just_after_it() -> None:
    assert park_wait(now=100.0, polled_at=99.9, retry_at=100.5) == 0.5 + RETRY_SLACK_S


def test_a_retry_due_after_the_park_waits_for_the_next_park() -> None:
    assert park_wait(now=100.0, polled_at=99.9, retry_at=100.0 + PARK_S + 5) == PARK_S


def test_a_retry_that_came_due_after_the_polls_began_is_looked_for_soon() -> None:
    # The round of polls started before the retry was due: it may have missed it.
    assert park_wait(now=100.0, polled_at=99.8, retry_at=99.9) == RETRY_SLACK_S


def test_a_retry_the_last_round_of_polls_already_covered_is_not_waited_for() -> None:
    assert park_wait(now=100.0, polled_at=99.95, retry_at=99.9) == PARK_S
