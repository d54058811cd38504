"""Shard leases (vad_worker.shards) under injected faults, on a fake KV with a manual clock; and
one test of two claimants on a real nats-server KV bucket.

The fake models what the lease logic relies on: compare-and-set on the key's revision, a TTL
counted from the last write, and faults: a write that times out after it was applied, and writes
that fail (time out) without being applied.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import nats
import pytest
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from common.nats_server import NatsServer
from vad_worker.shards import ShardLeases, bucket

TTL, MARGIN = 8.0, 2.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Entry:
    value: bytes | None
    revision: int | None
    written_at: float = 0.0


class FakeKV:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.data: dict[str, Entry] = {}
        self.rev = 0
        self.timeout_after_success = 0  # the next N writes are applied, then time out
        self.down = False  # every operation times out without effect

    def _live(self, key: str) -> Entry | None:
        entry = self.data.get(key)
        if entry is not None and self.clock() - entry.written_at >= TTL:
            del self.data[key]  # the bucket's TTL removed it
            return None
        return entry

    async def _write(self, key: str, value: bytes, last: int) -> int:
        await asyncio.sleep(0)  # let a concurrent claimant interleave
        if self.down:
            raise nats.errors.TimeoutError
        entry = self._live(key)
        if (entry.revision if entry else 0) != last:
            raise KeyWrongLastSequenceError
        self.rev += 1
        self.data[key] = Entry(value, self.rev, self.clock())
        if self.timeout_after_success:
            self.timeout_after_success -= 1
            raise nats.errors.TimeoutError
        return self.rev

    async def create(self, key: str, value: bytes) -> int:
        return await self._write(key, value, 0)

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        return await self._write(key, value, last or 0)

    async def get(self, key: str) -> Entry:
        await asyncio.sleep(0)
        if self.down:
            raise nats.errors.TimeoutError
        entry = self._live(key)
        if entry is None:
            raise KeyNotFoundError
        return entry

    async def delete(self, key: str, last: int | None = None) -> bool:
        await self._write(key, b"", last or 0)
        del self.data[key]
        return True


def leases(kv: FakeKV, clock: Clock, name: str, shards: int = 4) -> ShardLeases:
    return ShardLeases(kv, name, shards, ttl_s=TTL, margin_s=MARGIN, clock=clock)


async def test_two_claimants_exactly_one_wins_each_shard() -> None:
    clock = Clock()
    kv = FakeKV(clock)
    a, b = leases(kv, clock, "a"), leases(kv, clock, "b")
    # Both believe they are alone (live=1) and claim every shard at the same time.
    await asyncio.gather(a.refresh(1), b.refresh(1))
    assert not set(a.owned) & set(b.owned)
    assert set(a.owned) | set(b.owned) == {0, 1, 2, 3}
    for owner in (a, b):
        for shard in owner.owned:
            assert kv.data[f"shard.{shard}"].value == owner.token.encode()


async def test_an_update_that_timed_out_after_success_does_not_bounce_the_shard() -> None:
    clock = Clock()
    kv = FakeKV(clock)
    a, b = leases(kv, clock, "a", shards=1), leases(kv, clock, "b", shards=1)
    assert await a.refresh(1) == ({0}, set())
    clock.now += 2
    kv.timeout_after_success = 1
    assert await a.refresh(1) == (set(), set())  # outcome unknown: still within the deadline
    assert a.holds(0)
    clock.now += 2
    # The stored revision moved on (our timed-out write): the CAS fails, the re-read finds our
    # token, the revision is adopted and renewed.
    assert await a.refresh(1) == (set(), set())
    assert a.holds(0) and a.owned[0].revision == kv.data["shard.0"].revision
    assert await b.refresh(2) == (set(), set())  # nobody else can take it


async def test_a_create_that_timed_out_after_success_is_adopted() -> None:
    clock = Clock()
    kv = FakeKV(clock)
    a = leases(kv, clock, "a", shards=1)
    kv.timeout_after_success = 1
    gained, _ = await a.refresh(1)
    assert gained == {0} and a.holds(0)


class Partitioned:
    """One worker's view of the store: while ``cut``, its operations time out without effect."""

    def __init__(self, kv: FakeKV) -> None:
        self.kv = kv
        self.cut = False

    def _check(self) -> None:
        if self.cut:
            raise nats.errors.TimeoutError

    async def create(self, key: str, value: bytes) -> int:
        self._check()
        return await self.kv.create(key, value)

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        self._check()
        return await self.kv.update(key, value, last)

    async def get(self, key: str) -> Entry:
        self._check()
        return await self.kv.get(key)

    async def delete(self, key: str, last: int | None = None) -> bool:
        self._check()
        return await self.kv.delete(key, last)


async def test_a_worker_that_cannot_refresh_stops_before_anyone_can_take_over() -> None:
    clock = Clock()
    kv = FakeKV(clock)
    view = Partitioned(kv)
    a = ShardLeases(view, "a", 2, ttl_s=TTL, margin_s=MARGIN, clock=clock)
    b = leases(kv, clock, "b", shards=2)
    await a.refresh(1)
    assert set(a.owned) == {0, 1}
    view.cut = True  # a's refreshes fail from now on; b reaches the store
    lost_at = taken_at = None
    for _ in range(60):  # 15 s in 0.25 s steps
        clock.now += 0.25
        _, lost = await a.refresh(1)
        if lost and lost_at is None:
            lost_at = clock.now
        gained, _ = await b.refresh(1)
        if gained and taken_at is None:
            taken_at = clock.now
        for shard in (0, 1):
            assert not (a.holds(shard) and b.holds(shard)), (clock.now, shard)
    # a gave up at its local deadline (last refresh + TTL - margin), b took over only after the
    # keys expired (last refresh + TTL).
    assert lost_at is not None and lost_at <= 100 + TTL - MARGIN + 0.25
    assert taken_at is not None and taken_at >= 100 + TTL
    assert a.owned == {} and set(b.owned) == {0, 1}


async def test_a_refresh_that_fails_once_keeps_the_shard() -> None:
    clock = Clock()
    kv = FakeKV(clock)
    view = Partitioned(kv)
    a = ShardLeases(view, "a", 1, ttl_s=TTL, margin_s=MARGIN, clock=clock)
    await a.refresh(1)
    clock.now += 2
    view.cut = True
    assert await a.refresh(1) == (set(), set()) and a.holds(0)
    clock.now += 2
    view.cut = False
    assert await a.refresh(1) == (set(), set()) and a.holds(0)
    clock.now += TTL - MARGIN - 0.5
    assert a.holds(0)  # the deadline moved with the successful refresh


async def test_surplus_shards_are_handed_to_a_joining_worker() -> None:
    clock = Clock()
    kv = FakeKV(clock)
    a, b = leases(kv, clock, "a"), leases(kv, clock, "b")
    await a.refresh(1)
    assert len(a.owned) == 4 and a.surplus(1) == set()
    assert await b.refresh(2) == (set(), set())  # nothing free yet
    give = a.surplus(2)
    assert len(give) == 2
    for shard in give:
        await a.release(shard)
    gained, _ = await b.refresh(2)
    assert gained == give and len(a.owned) == 2
    assert a.surplus(2) == set() and b.surplus(2) == set()


async def test_two_claimants_on_a_real_kv_bucket(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream(timeout=5)
        kv = await bucket(js)
        a, b = ShardLeases(kv, "a#1", 8), ShardLeases(kv, "b#2", 8)
        await asyncio.wait_for(asyncio.gather(a.refresh(1), b.refresh(1)), 10)
        assert not set(a.owned) & set(b.owned) and set(a.owned) | set(b.owned) == set(range(8))
        for owner in (a, b):
            for shard in owner.owned:
                assert (await kv.get(f"shard.{shard}")).value == owner.token.encode()
        # Renewing works against the real revisions; a released shard goes to the other.
        await asyncio.wait_for(a.refresh(1), 10)
        mine = set(a.owned)
        await asyncio.wait_for(a.release_all(), 10)
        gained, _ = await asyncio.wait_for(b.refresh(1), 10)
        assert gained == mine and set(b.owned) == set(range(8))
    finally:
        await nc.close()


@pytest.mark.parametrize("live,expected", [(1, 16), (2, 8), (3, 6), (16, 1), (32, 1)])
def test_target_is_an_even_share(live: int, expected: int) -> None:
    clock = Clock()
    assert ShardLeases(FakeKV(clock), "a", 16, clock=clock).target(live) == expected
