"""A standing pull request (common.pull.Puller) on a real nats-server: messages come as they are
stored with no request each, the request is renewed when it expires or the server restarts, and a
closed puller's messages go to the next one at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from common.nats_server import NatsServer
from common.pull import Credit, Puller

STREAM, DURABLE = "PULLTEST", "c"
ACK_WAIT_S = 30.0  # long: a message redelivered within a test came back by a nak, not by the ack wait


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[tuple[NATS, JetStreamContext]]:
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    await js.add_stream(name=STREAM, subjects=["pt.>"])
    await js.add_consumer(STREAM, ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT,
                                                 ack_wait=ACK_WAIT_S))
    try:
        yield nc, js
    finally:
        await nc.close()


async def requests_seen(nc: NATS) -> list[Msg]:
    """Pull requests sent to the test consumer, as a listener on the API subject sees them."""
    seen: list[Msg] = []

    async def add(msg: Msg) -> None:
        seen.append(msg)

    await nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{DURABLE}", cb=add)
    await nc.flush()
    return seen


async def take(puller: Puller, n: int, timeout: float = 10.0) -> list[Msg]:
    got: list[Msg] = []
    async with asyncio.timeout(timeout):
        while len(got) < n:
            got += await puller.next_batch(512, 1.0)
    return got


async def test_messages_come_as_stored_with_one_request(bus: tuple[NATS, JetStreamContext]) -> None:
    nc, js = bus
    seen = await requests_seen(nc)
    async with Puller(nc, STREAM, DURABLE) as puller:
        for i in range(20):
            await js.publish(f"pt.{i}", str(i).encode())
            msgs = await take(puller, 1)  # each on its own: the puller does not wait to fill a batch
            assert [m.data for m in msgs] == [str(i).encode()]
            await msgs[0].ack()
    assert len(seen) == 1  # fetch would have sent one or two per message


async def test_an_expired_request_is_renewed(bus: tuple[NATS, JetStreamContext]) -> None:
    nc, js = bus
    seen = await requests_seen(nc)
    async with Puller(nc, STREAM, DURABLE, Credit(expires_s=1.0, heartbeat_s=0.4)) as puller:
        assert await puller.next_batch(512, 2.5) == []  # the first request expired meanwhile
        await js.publish("pt.late", b"late")
        msgs = await take(puller, 1)
        assert msgs[0].data == b"late"
    assert len(seen) >= 2


async def test_a_used_up_request_is_renewed(bus: tuple[NATS, JetStreamContext]) -> None:
    nc, js = bus
    seen = await requests_seen(nc)
    async with Puller(nc, STREAM, DURABLE, Credit(batch=3)) as puller:
        for i in range(7):
            await js.publish(f"pt.{i}", str(i).encode())
        msgs = await take(puller, 7)
        assert [m.data for m in msgs] == [str(i).encode() for i in range(7)]
    assert len(seen) == 3


async def test_pulling_goes_on_after_the_server_crashes_and_restarts(nats_server: NatsServer,
                                                          bus: tuple[NATS, JetStreamContext]) -> None:
    nc, js = bus
    # Heartbeats far apart: a lost request would be noticed only after a minute, past take's 10 s.
    async with Puller(nc, STREAM, DURABLE, Credit(expires_s=120.0, heartbeat_s=30.0)) as puller:
        await js.publish("pt.before", b"before")
        assert (await take(puller, 1))[0].data == b"before"
        port = nats_server.port
        assert nats_server.proc is not None
        nats_server.proc.kill()  # a crash: no "409 Server Shutdown" tells the puller its request is gone
        await asyncio.to_thread(nats_server.stop)
        nats_server.requested_port = port
        await asyncio.to_thread(nats_server.start)
        async with asyncio.timeout(20):
            while not nc.is_connected:
                await asyncio.sleep(0.1)
        # The restarted server forgot the standing request; the puller asks again because its
        # connection is new, not after heartbeats went missing.
        await js.publish("pt.after", b"after")
        got: list[bytes] = []
        async with asyncio.timeout(10.0):
            while b"after" not in got:  # "before" may come again: a crash can lose the consumer's last state
                got += [m.data for m in await puller.next_batch(512, 1.0)]


async def test_a_closed_pullers_messages_go_to_the_next_at_once(bus: tuple[NATS, JetStreamContext]) -> None:
    nc, js = bus
    first = Puller(nc, STREAM, DURABLE)
    await first.open()
    for i in range(3):
        await js.publish(f"pt.{i}", str(i).encode())
    handed = await first.next_batch(1, 5.0)
    assert [m.data for m in handed] == [b"0"]
    async with asyncio.timeout(5):
        while len(first._buffer) < 2:  # the other two are delivered but not handed out
            await asyncio.sleep(0.05)
    await handed[0].ack()
    await first.close()
    async with Puller(nc, STREAM, DURABLE) as second:
        await js.publish("pt.3", b"3")  # not to the closed puller's request: nobody listens there
        msgs = await take(second, 3, timeout=10.0)  # without the nak, 1 and 2 would wait 30 s
    assert sorted(m.data for m in msgs) == [b"1", b"2", b"3"]


async def test_a_missing_consumer_is_asked_again_slowly_not_in_a_loop(
        bus: tuple[NATS, JetStreamContext]) -> None:
    nc, js = bus
    missing = "not-yet"
    seen: list[Msg] = []

    async def add(msg: Msg) -> None:
        seen.append(msg)

    await nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{missing}", cb=add)
    async with Puller(nc, STREAM, missing, Credit(retry_s=1.0)) as puller:
        assert await puller.next_batch(512, 2.5) == []
        assert 1 <= len(seen) <= 4  # refused, asked again about once a second
        await js.add_consumer(STREAM, ConsumerConfig(durable_name=missing, ack_policy=AckPolicy.EXPLICIT))
        await js.publish("pt.x", b"x")
        assert [m.data for m in await take(puller, 1)] == [b"x"]
