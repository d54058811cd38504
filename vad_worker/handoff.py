"""One hand-off to the VAD thread per turn of the event loop, whatever the number of shards.

Each shard of the VAD worker runs its own loop, and each batch it takes holds the chunks of a few
sessions: at a few streams per shard, one. Handed to the executor one by one (``run_in_executor``
per session), every 100 ms chunk then costs a wake-up of the VAD thread and one of the event loop
for a few microseconds of webrtcvad: profiled at 12 streams, waking the thread and handing the
work over took five times the CPU of the VAD itself (docs/benchmarks.md, "Where the VAD worker's
CPU goes").

``Handoff.run(fn)`` returns a future as ``run_in_executor`` does, but what every caller submits
before the event loop's next turn leaves as one executor job, which runs the functions in the
order they came and settles their futures with one call back into the loop. The linger of the
edge's publishes (``publish_linger_ms``) makes the chunks of many sessions arrive together, so
they share one hand-off. Each function's result or exception is its own: one that raises fails
only its future. The work still runs on the bounded executor, never on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Outcome = tuple[bool, Any]  # (raised, the value or the exception)


def _run_all(work: list[Callable[[], Any]]) -> list[_Outcome]:
    """Runs in the executor's thread: every function, each with its own outcome."""
    out: list[_Outcome] = []
    for fn in work:
        try:
            out.append((False, fn()))
        except Exception as exc:  # carried to its own caller's future
            out.append((True, exc))
    return out


class Handoff:
    def __init__(self, executor: concurrent.futures.Executor) -> None:
        self.executor = executor
        self._work: list[Callable[[], Any]] = []
        self._futures: list[asyncio.Future[Any]] = []
        self.handoffs = 0  # executor jobs submitted so far (the tests read it)

    def __repr__(self) -> str:
        return f"<Handoff waiting={len(self._work)} handoffs={self.handoffs}>"

    def run(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """``fn`` runs in the executor with whatever else is submitted in this turn of the loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._work:
            loop.call_soon(self._hand_off)
        self._work.append(fn)
        self._futures.append(future)
        return future

    def _hand_off(self) -> None:
        work, futures = self._work, self._futures
        self._work, self._futures = [], []
        try:
            job = self.executor.submit(_run_all, work)
        except RuntimeError as exc:  # the executor is shut down
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            return
        self.handoffs += 1
        loop = asyncio.get_running_loop()

        def done(job: concurrent.futures.Future[list[_Outcome]]) -> None:  # in the executor's thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, futures, job)

        job.add_done_callback(done)


def _settle(futures: list[asyncio.Future[Any]], job: concurrent.futures.Future[list[_Outcome]]) -> None:
    """In the loop: each caller's future gets its own function's outcome (a cancelled caller none)."""
    if job.cancelled():  # the executor shut down before running it
        for future in futures:
            future.cancel()
        return
    error = job.exception()
    outcomes: list[_Outcome] = [(True, error)] * len(futures) if error is not None else job.result()
    for future, (raised, value) in zip(futures, outcomes, strict=True):
        if future.done():
            continue
        if raised:
            future.set_exception(value)
        else:
            future.set_result(value)
