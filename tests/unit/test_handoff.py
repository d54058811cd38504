"""vad_worker.handoff: what is submitted in one turn of the loop leaves as one executor job."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from vad_worker.handoff import Handoff


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(1, thread_name_prefix="test-vad")
    yield pool
    pool.shutdown(wait=True)


async def test_work_of_one_turn_is_one_job_each_caller_gets_its_own_result(executor: ThreadPoolExecutor) -> None:
    handoff = Handoff(executor)
    ran: list[int] = []
    threads: set[int] = set()

    def work(i: int) -> int:
        ran.append(i)
        threads.add(threading.get_ident())
        return i * 10

    futures = [handoff.run(functools.partial(work, i)) for i in range(5)]
    results = await asyncio.wait_for(asyncio.gather(*futures), 10)
    assert results == [0, 10, 20, 30, 40]
    assert ran == [0, 1, 2, 3, 4]  # in the order they came
    assert handoff.handoffs == 1
    assert threading.get_ident() not in threads  # never on the event loop's thread


async def test_work_of_later_turns_goes_in_later_jobs(executor: ThreadPoolExecutor) -> None:
    handoff = Handoff(executor)
    assert await asyncio.wait_for(handoff.run(lambda: "a"), 10) == "a"
    assert await asyncio.wait_for(handoff.run(lambda: "b"), 10) == "b"
    assert handoff.handoffs == 2


async def test_one_failing_function_fails_only_its_own_caller(executor: ThreadPoolExecutor) -> None:
    handoff = Handoff(executor)

    def broken() -> int:
        raise ValueError("bad frame")

    first, failing, last = handoff.run(lambda: 1), handoff.run(broken), handoff.run(lambda: 3)
    outcomes = await asyncio.wait_for(asyncio.gather(first, failing, last, return_exceptions=True), 10)
    assert outcomes[0] == 1 and outcomes[2] == 3
    assert isinstance(outcomes[1], ValueError) and str(outcomes[1]) == "bad frame"
    assert handoff.handoffs == 1


async def test_a_cancelled_caller_does_not_keep_the_others_from_their_results(executor: ThreadPoolExecutor) -> None:
    handoff = Handoff(executor)
    release = threading.Event()
    gone = handoff.run(lambda: release.wait(10))
    kept = handoff.run(lambda: "kept")
    await asyncio.sleep(0)  # handed off: the job waits in the thread
    gone.cancel()
    release.set()
    assert await asyncio.wait_for(kept, 10) == "kept"
    assert gone.cancelled()


async def test_after_the_executor_shut_down_callers_get_an_error_not_a_hang() -> None:
    pool = ThreadPoolExecutor(1)
    pool.shutdown(wait=True)
    handoff = Handoff(pool)
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(handoff.run(lambda: 1), 10)
    assert handoff.handoffs == 0
