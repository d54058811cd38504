"""The speculation cache on a real nats-server: what a final takes, waits for, or ignores."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import nats
import pytest

from asr_worker import speculation
from asr_worker.speculation import Outcome, SpeculationStore
from asr_worker.transcriber import RecognisedWord, Recognition
from common.nats_server import NatsServer

REC = Recognition("Hello there.", "Hello there.", 1.2, 0.3, "en", (RecognisedWord("Hello", 0.1, 0.4, 0.9),))


@pytest.fixture(params=["told", "polling"])
async def store(nats_server: NatsServer, request: pytest.FixtureRequest) -> AsyncIterator[SpeculationStore]:
    """As the worker runs it (told on core NATS when a speculation is decided), and without NATS
    to be told on (it polls)."""
    nc = await nats.connect(nats_server.url)
    try:
        kv = await speculation.bucket(nc.jetstream())
        yield SpeculationStore(kv, wait_s=2.0, nc=nc if request.param == "told" else None)
    finally:
        await nc.close()


async def test_a_stored_speculation_is_the_final_s(store: SpeculationStore) -> None:
    await store.started("s1.f1", "d1")
    await store.finished("s1.f1", "d1", REC)
    assert await store.take("s1.f1", "d1") == (REC, Outcome.USED)


async def test_no_speculation_or_another_input_is_decoded(store: SpeculationStore) -> None:
    assert await store.take("s1.f2", "d1") == (None, Outcome.NONE)
    await store.finished("s1.f2", "d1", REC)
    assert await store.take("s1.f2", "other") == (None, Outcome.NONE)
    assert await store.take("s1.f3", "d1") == (None, Outcome.NONE)  # another final of the session


async def test_a_running_speculation_is_waited_for(store: SpeculationStore) -> None:
    await store.started("s2.f1", "d")

    async def finish_later() -> None:
        await asyncio.sleep(0.3)
        await store.finished("s2.f1", "d", REC)

    later = asyncio.create_task(finish_later())
    t = time.monotonic()
    calls: list[float] = []  # the worker gives its decoding slot back here while the final waits
    assert await store.take("s2.f1", "d", waiting=lambda: calls.append(time.monotonic() - t)) == (REC, Outcome.WAITED)
    assert time.monotonic() - t >= 0.29
    assert len(calls) == 1 and calls[0] < 0.2
    await later
    assert await store.take("s2.f1", "d", waiting=lambda: calls.append(0)) == (REC, Outcome.USED)
    assert len(calls) == 1  # nothing to wait for: the slot is kept


async def test_a_speculation_that_never_finishes_is_waited_for_only_so_long(store: SpeculationStore) -> None:
    short = SpeculationStore(store.kv, wait_s=0.2)
    await short.started("s3.f1", "d")
    t = time.monotonic()
    assert await short.take("s3.f1", "d") == (None, Outcome.TIMEOUT)
    assert 0.2 <= time.monotonic() - t < 1.5


async def test_a_newer_guess_for_the_same_final_replaces_the_older(store: SpeculationStore) -> None:
    await store.finished("s4.f1", "short", REC)
    await store.started("s4.f1", "longer")  # speech resumed; a second speculation runs
    assert await SpeculationStore(store.kv, wait_s=0.05).take("s4.f1", "short") == (None, Outcome.NONE)



async def test_a_speculation_fetched_after_its_final_is_moot(store: SpeculationStore) -> None:
    assert not await store.moot("s5.f1")
    await store.started("s5.f1", "d")
    assert not await store.moot("s5.f1")
    assert await store.take("s5.f2", "d") == (None, Outcome.NONE)
    await store.final_taken("s5.f2")  # the worker decodes final 2 itself and says so
    assert await store.moot("s5.f2")
    assert await store.take("s5.f2", "d") == (None, Outcome.NONE)  # never mistaken for a decode


async def test_a_failed_speculation_releases_the_final_at_once(store: SpeculationStore) -> None:
    await store.started("s6.f1", "d")
    await store.failed("s6.f1", "other")  # not this speculation: left alone
    assert await SpeculationStore(store.kv, wait_s=0.05).take("s6.f1", "d") == (None, Outcome.TIMEOUT)
    await store.failed("s6.f1", "d")
    t = time.monotonic()
    assert await store.take("s6.f1", "d") == (None, Outcome.NONE)
    assert time.monotonic() - t < 1.0  # not the 2 s wait
    await store.finished("s6.f2", "d", REC)
    await store.failed("s6.f2", "d")  # a finished one stays usable
    assert await store.take("s6.f2", "d") == (REC, Outcome.USED)


async def test_a_waiting_final_is_told_when_its_speculation_is_stored(
        nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the polls made rare (10 s), only the speculating worker's notice can end the wait soon."""
    monkeypatch.setattr(speculation, "POLL_S", 10.0)
    waiter, decoder = await nats.connect(nats_server.url), await nats.connect(nats_server.url)
    try:
        final = SpeculationStore(await speculation.bucket(waiter.jetstream()), wait_s=30.0, nc=waiter)
        speculating = SpeculationStore(await speculation.bucket(decoder.jetstream()), wait_s=30.0, nc=decoder)
        for name, end in (("s7.f1", "finished"), ("s7.f2", "failed")):
            await speculating.started(name, "d")
            taking = asyncio.create_task(final.take(name, "d"))
            await asyncio.sleep(0.5)  # the final is waiting
            assert not taking.done()
            if end == "finished":
                await speculating.finished(name, "d", REC)
            else:
                await speculating.failed(name, "d")
            got = await asyncio.wait_for(taking, 5.0)  # told: not the 10 s poll
            assert got == ((REC, Outcome.WAITED) if end == "finished" else (None, Outcome.NONE))
    finally:
        await waiter.close()
        await decoder.close()
