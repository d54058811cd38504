"""ingest.idle_deadline: a reader waiting longer than the idle period gets TimeoutError; messages
re-arm it without a timer per message; time spent handling a message is not idleness; someone
else's cancellation stays a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from ingest.idle_deadline import IdleDeadline


async def test_a_silent_reader_times_out_after_the_idle_period() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    with IdleDeadline(0.2) as deadline:
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await deadline.receive(queue.get)
        assert 0.2 <= loop.time() - t0 < 1.0


async def test_each_message_moves_the_deadline_and_is_returned() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def feed() -> None:
        for i in range(6):
            await asyncio.sleep(0.1)
            queue.put_nowait(i)

    feeder = asyncio.create_task(feed())
    with IdleDeadline(0.25) as deadline:
        got = [await deadline.receive(queue.get) for _ in range(6)]  # 0.6 s in all, > 0.25
        assert got == list(range(6))
        last = loop.time()
        with pytest.raises(TimeoutError):
            await deadline.receive(queue.get)
        assert loop.time() - last >= 0.25
    await feeder


async def test_time_spent_handling_a_message_is_not_idleness() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    with IdleDeadline(0.2) as deadline:
        queue.put_nowait(1)
        assert await deadline.receive(queue.get) == 1
        await asyncio.sleep(0.5)  # "handling" it, past the deadline
        queue.put_nowait(2)
        assert await deadline.receive(queue.get) == 2  # waiting again: not cancelled at once


async def test_an_outside_cancellation_is_not_turned_into_a_timeout() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    with IdleDeadline(5.0) as deadline:
        reader = asyncio.create_task(deadline.receive(queue.get))
        await asyncio.sleep(0.05)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader


async def test_closing_stops_its_timer() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    deadline = IdleDeadline(0.1)
    deadline.close()
    queue.put_nowait(7)
    await asyncio.sleep(0.3)  # the timer would have fired here
    assert await deadline.receive(queue.get) == 7
