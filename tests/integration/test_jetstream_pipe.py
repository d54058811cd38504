"""ingest.jetstream_pipe against a real nats-server: each publish's future gets the sequence
JetStream stored it at (duplicates too), errors come back as nats-py raises them, and futures given
up on are forgotten."""

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


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[tuple[Any, Any, JetStreamPipe]]:
    """A connection, its JetStream context with the stream PIPE on pipe.>, and a pipe over it."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="PIPE", subjects=["pipe.>"], duplicate_window=60.0))
    pipe = JetStreamPipe(nc)
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
    nc, _, pipe = bus
    dropped = await pipe.send("pipe.a", b"1", {})
    dropped.cancel()
    kept = await pipe.send("pipe.a", b"2", {})
    assert await asyncio.wait_for(kept, 5) == 2
    assert pipe.waiting == 0
    closed = JetStreamPipe(nc)
    subscriptions = len(nc._subs)
    await asyncio.gather(*(closed.start() for _ in range(3)))  # concurrent starts: one subscription
    assert len(nc._subs) == subscriptions + 1
    pending = await closed.send("nowhere.at.all", b"", {})
    await closed.close()
    assert pending.cancelled()
