"""ingest.jetstream_pipe against a real nats-server: each publish's future gets the sequence
JetStream stored it at (duplicates too), errors come back as nats-py raises them, and futures given
up on are forgotten; the same with a linger, which writes what it gathered together."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import nats
import nats.js.errors
import pytest
from nats.js.api import StreamConfig

from common.nats_server import NatsServer
from ingest.jetstream_pipe import JetStreamPipe


@pytest.fixture(params=[0.0, 0.02], ids=["at-once", "linger-20ms"])
async def bus(nats_server: NatsServer, request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, Any, JetStreamPipe]]:
    """A connection, its JetStream context with the stream PIPE on pipe.>, and a pipe over it."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="PIPE", subjects=["pipe.>"], duplicate_window=60.0))
    pipe = JetStreamPipe(nc, linger_s=request.param)
    try:
        yield nc, js, pipe
    finally:
        await pipe.close()
        await nc.close()


async def test_acknowledgements_carry_the_stored_sequence(bus: tuple[Any, Any, JetStreamPipe]) -> None:
    _, js, pipe = bus
    futures = [await pipe.send(f"pipe.{i % 3}", b"x" * i, {"Nats-Msg-Id": f"m{i}"}) for i in range(1, 201)]
    assert await asyncio.gather(*futures) == list(range(1, 201))
    # A copy (same Nats-Msg-Id) is acknowledged with the sequence of the original.
    again = await pipe.send("pipe.1", b"x", {"Nats-Msg-Id": "m7"})
    assert await again == 7
    assert pipe.waiting == 0
    stored = await js.get_msg("PIPE", 200)
    assert stored.data == b"x" * 200


async def test_errors_are_raised_as_nats_py_raises_them(bus: tuple[Any, Any, JetStreamPipe]) -> None:
    _, _, pipe = bus
    no_stream = await pipe.send("elsewhere.x", b"x", {})
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await asyncio.wait_for(no_stream, 5)
    wrong = await pipe.send("pipe.x", b"x", {"Nats-Expected-Stream": "OTHER"})
    with pytest.raises(nats.js.errors.APIError) as caught:
        await asyncio.wait_for(wrong, 5)
    assert caught.value.err_code == 10060  # expected stream does not match


async def test_a_future_given_up_on_is_forgotten(bus: tuple[Any, Any, JetStreamPipe]) -> None:
    nc, js, pipe = bus
    dropped = await pipe.send("pipe.a", b"1", {})
    dropped.cancel()
    kept = await pipe.send("pipe.a", b"2", {})
    # Written at once or held, what was sent is stored: only the wait for it was given up.
    assert await asyncio.wait_for(kept, 5) == 2
    assert (await js.get_msg("PIPE", 1)).data == b"1"
    assert pipe.waiting == 0
    closed = JetStreamPipe(nc)
    subscriptions = len(nc._subs)
    await asyncio.gather(*(closed.start() for _ in range(3)))  # concurrent starts: one subscription
    assert len(nc._subs) == subscriptions + 1
    pending = await closed.send("nowhere.at.all", b"", {})
    await closed.close()
    assert pending.cancelled()


@pytest.fixture
async def lingering(nats_server: NatsServer) -> AsyncIterator[tuple[Any, Any, JetStreamPipe]]:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="PIPE", subjects=["pipe.>"]))
    pipe = JetStreamPipe(nc, linger_s=0.5)  # long: a test acts within it before anything is written
    await pipe.start()
    try:
        yield nc, js, pipe
    finally:
        await pipe.close()
        await nc.close()


async def test_a_linger_gathers_the_sends_and_writes_them_in_order(
        lingering: tuple[Any, Any, JetStreamPipe]) -> None:
    _, js, pipe = lingering
    futures = [await pipe.send(f"pipe.{i % 7}", bytes([i]), {}) for i in range(100)]
    assert "held=100" in repr(pipe)  # none written yet: they go out together
    assert await asyncio.wait_for(asyncio.gather(*futures), 5) == list(range(1, 101))
    assert "held=0" in repr(pipe)
    assert (await js.get_msg("PIPE", 37)).data == bytes([36])


async def test_a_write_that_fails_fails_its_future(lingering: tuple[Any, Any, JetStreamPipe]) -> None:
    nc, _, pipe = lingering
    held = await pipe.send("pipe.a", b"x", {})
    await nc.close()  # before the linger ends: the write finds the connection closed
    with pytest.raises(nats.errors.ConnectionClosedError):
        await asyncio.wait_for(held, 5)


async def test_closing_writes_what_is_held_and_stops_waiting(lingering: tuple[Any, Any, JetStreamPipe]) -> None:
    nc, js, pipe = lingering
    held = [await pipe.send("pipe.a", bytes([i]), {}) for i in range(3)]
    await pipe.close()  # within the linger: nothing was written yet
    assert all(f.done() for f in held)  # acknowledged before the pipe closed, or no longer waited for
    await nc.flush()
    assert (await js.stream_info("PIPE")).state.messages == 3  # handed over: stored, as if sent at once
    assert [(await js.get_msg("PIPE", i)).data for i in (1, 2, 3)] == [b"\x00", b"\x01", b"\x02"]


async def test_a_pipe_opened_again_after_closing_writes_again(lingering: tuple[Any, Any, JetStreamPipe]) -> None:
    _, _, pipe = lingering
    await pipe.close()
    again = await pipe.send("pipe.a", b"later", {})
    assert await asyncio.wait_for(again, 5) == 1


def test_a_negative_linger_is_refused() -> None:
    with pytest.raises(ValueError, match="linger_s"):
        JetStreamPipe(None, linger_s=-0.01)  # type: ignore[arg-type]
