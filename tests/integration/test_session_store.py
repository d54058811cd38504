"""The session stores' promises, checked on both implementations (in memory, and a real Redis
started on a free port), plus what only a shared Redis can do: several edges, orphans."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from ingest.redis_store import RedisSessionStore
from ingest.session_store import Admit, MemorySessionStore, ResumeError, SessionRecord, SessionStore, hash_token
from tests.conftest import RedisServer


def record(edge: str, token: str = "tok") -> SessionRecord:
    return SessionRecord(session_id=uuid.uuid4().hex, edge_id=edge, resume_token_hash=hash_token(token),
                         owner=uuid.uuid4().hex)


def redis_store(url: str, edge: str, per_edge: int, total: int, **kw: float) -> RedisSessionStore:
    return RedisSessionStore(url, edge, per_edge, total, retention_s=kw.get("retention_s", 60),
                             orphan_timeout_s=kw.get("orphan_timeout_s", 1.0),
                             heartbeat_s=kw.get("heartbeat_s", 0.2))


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[SessionStore]:
    """A store for one edge with a cap of 3 sessions."""
    if request.param == "memory":
        yield MemorySessionStore("edge-a", 3, 3)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    s = redis_store(server.url, "edge-a", 3, 3)
    await s.start()
    try:
        yield s
    finally:
        await s.close()


async def fresh(store: SessionStore, owner: str) -> str:
    """What a reconnecting connection holds before it resumes: its own admitted fresh session."""
    r = SessionRecord(session_id=uuid.uuid4().hex, edge_id=store.edge_id, resume_token_hash=hash_token("x"),
                      owner=owner)
    assert await store.admit(r) is Admit.OK
    return r.session_id


async def resume(store: SessionStore, session_id: str, token: str, owner: str) -> SessionRecord:
    return await store.resume(session_id, token, owner, replaces=await fresh(store, owner))


async def test_admits_up_to_the_cap_and_releases_exactly_once(store: SessionStore) -> None:
    records = [record("edge-a") for _ in range(4)]
    results = [await store.admit(r) for r in records]
    assert results[:3] == [Admit.OK] * 3 and results[3] is not Admit.OK
    assert await store.counts() == (3, 3)
    first = records[0]
    assert await store.release(first.session_id, "someone-else", "closed") is False  # not the owner
    assert await store.release(first.session_id, first.owner, "closed") is True
    assert await store.release(first.session_id, first.owner, "closed") is False  # exactly once
    assert await store.counts() == (2, 2)
    assert await store.admit(records[3]) is Admit.OK
    for r in records[1:]:
        await store.release(r.session_id, r.owner, "closed")
    assert await store.counts() == (0, 0)


async def test_resume_checks_the_token_and_moves_ownership(store: SessionStore) -> None:
    r = record("edge-a", token="right")
    r.transcripts_sent, r.audio_bytes_received = 4, 64000
    assert await store.admit(r) is Admit.OK
    await store.update(r)
    own = await fresh(store, "conn-2")
    with pytest.raises(ResumeError):
        await store.resume(r.session_id, "wrong", "conn-2", replaces=own)
    with pytest.raises(ResumeError):
        await store.resume(uuid.uuid4().hex, "right", "conn-2", replaces=own)
    with pytest.raises(ResumeError, match="sample_rate=16000"):
        await store.resume(r.session_id, "right", "conn-2", replaces=own, sample_rate=8000)
    assert await store.counts() == (2, 2)  # refusals give nothing back and take nothing
    resumed = await store.resume(r.session_id, "right", "conn-2", replaces=own)
    assert (resumed.transcripts_sent, resumed.audio_bytes_received) == (4, 64000)
    assert await store.counts() == (1, 1)  # still counted once; the fresh session's place is given back
    # The previous connection lets go: it no longer owns the session, nothing is released.
    assert await store.release(r.session_id, r.owner, "interrupted") is False
    assert await store.counts() == (1, 1)
    assert await store.release(r.session_id, "conn-2", "interrupted") is True
    assert await store.counts() == (0, 0)
    # An interrupted session can be resumed again (counted again); an ended one cannot.
    again = await resume(store, r.session_id, "right", "conn-3")
    assert again.owner == "conn-3" and await store.counts() == (1, 1)
    assert again.epoch == resumed.epoch + 1
    assert await store.release(r.session_id, "conn-3", "closed") is True
    with pytest.raises(ResumeError, match="closed"):
        await resume(store, r.session_id, "right", "conn-4")


async def test_stale_updates_from_a_replaced_connection_are_ignored(store: SessionStore) -> None:
    r = record("edge-a", token="t")
    await store.admit(r)
    await resume(store, r.session_id, "t", "conn-2")
    r.transcripts_sent = 99  # the old connection still writes
    await store.update(r)
    resumed = await resume(store, r.session_id, "t", "conn-3")
    assert resumed.transcripts_sent == 0


async def test_a_connection_cannot_resume_its_own_session(store: SessionStore) -> None:
    own = await fresh(store, "conn-1")
    with pytest.raises(ResumeError, match="own session"):
        await store.resume(own, "x", "conn-1", replaces=own)
    assert await store.counts() == (1, 1)
    assert await store.release(own, "conn-1", "closed") is True
    assert await store.counts() == (0, 0)


async def test_resume_at_full_capacity_swaps_places_and_caps_hold(store: SessionStore) -> None:
    """The cap is 3: two live sessions, a dropped one still counted, and the reconnecting client's
    own fresh session make 4 places needed the old way; the swap needs none."""
    dropped = record("edge-a", token="t")
    await store.admit(dropped)
    others = [record("edge-a") for _ in range(2)]
    for r in others:
        await store.admit(r)
    assert await store.counts() == (3, 3)
    assert await store.release(dropped.session_id, dropped.owner, "interrupted")
    own = await fresh(store, "conn-new")  # takes the third place
    assert await store.admit(record("edge-a")) is not Admit.OK
    resumed = await store.resume(dropped.session_id, "t", "conn-new", replaces=own)
    assert resumed.owner == "conn-new" and await store.counts() == (3, 3)
    assert await store.admit(record("edge-a")) is not Admit.OK  # still exactly at the cap
    assert await store.release(own, "conn-new", "closed") is False  # the fresh one is gone already


async def test_two_racing_reconnects_exactly_one_holds_the_session(store: SessionStore) -> None:
    r = record("edge-a", token="t")
    await store.admit(r)
    await store.release(r.session_id, r.owner, "interrupted")
    a_own, b_own = await fresh(store, "conn-a"), await fresh(store, "conn-b")
    a, b = await asyncio.gather(
        store.resume(r.session_id, "t", "conn-a", replaces=a_own),
        store.resume(r.session_id, "t", "conn-b", replaces=b_own),
    )
    winner, loser = (a, b) if a.epoch > b.epoch else (b, a)
    assert winner.epoch == loser.epoch + 1
    assert await store.counts() == (1, 1)  # both fresh places given back, the session counted once
    loser.transcripts_sent = 5
    await store.update(loser)  # ignored: not the holder
    assert await store.release(r.session_id, loser.owner, "interrupted") is False
    assert await store.release(r.session_id, winner.owner, "interrupted") is True
    assert await store.counts() == (0, 0)
    again = await resume(store, r.session_id, "t", "conn-c")
    assert again.transcripts_sent == 0 and again.epoch == winner.epoch + 1


async def test_global_cap_binds_across_edges_under_concurrency(redis_server: RedisServer) -> None:
    stores = [redis_store(redis_server.url, f"edge-{i}", 7, 20) for i in range(5)]
    for s in stores:
        await s.start()
    try:
        attempts = [(s, record(s.edge_id)) for s in stores for _ in range(30)]
        results = await asyncio.gather(*(s.admit(r) for s, r in attempts))
        assert results.count(Admit.OK) == 20
        per_edge = [sum(1 for (s, _), res in zip(attempts, results, strict=True)
                        if s is st and res is Admit.OK) for st in stores]
        assert max(per_edge) <= 7 and sum(per_edge) == 20
        assert {res for res in results if res is not Admit.OK} <= {Admit.GLOBAL_FULL, Admit.EDGE_FULL}
        admitted = [(s, r) for (s, r), res in zip(attempts, results, strict=True) if res is Admit.OK]
        await asyncio.gather(*(s.release(r.session_id, r.owner, "closed") for s, r in admitted))
        assert (await stores[0].counts())[0] == 0
    finally:
        for s in stores:
            await s.close()


async def test_orphans_of_a_dead_edge_are_released_after_the_timeout(redis_server: RedisServer) -> None:
    dead = redis_store(redis_server.url, "edge-dead", 10, 10, orphan_timeout_s=1.0, heartbeat_s=0.2)
    live = redis_store(redis_server.url, "edge-live", 10, 10, orphan_timeout_s=1.0, heartbeat_s=0.2)
    await dead.start()
    await live.start()
    try:
        records = [record("edge-dead") for _ in range(3)]
        for r in records:
            assert await dead.admit(r) is Admit.OK
        assert await live.cleanup_orphans() == 0  # its heartbeat is still alive
        await dead.close()  # the edge dies: no more heartbeats (its key is gone)
        closed_at = time.time()
        released = await live.cleanup_orphans()
        if time.time() - closed_at < 1.0:  # checked within the timeout (a stalled machine may not)
            assert released == 0  # sessions were active less than the timeout ago
        async with asyncio.timeout(15):
            while released < 3:
                await asyncio.sleep(0.1)
                released += await live.cleanup_orphans()
        assert released == 3
        assert await live.cleanup_orphans() == 0  # released exactly once
        assert await live.counts() == (0, 0)
        # The orphans stay resumable on the live edge with their token.
        resumed = await resume(live, records[0].session_id, "tok", "conn-x")
        assert resumed.edge_id == "edge-live" and await live.counts() == (1, 1)
    finally:
        await live.close()


async def test_an_edge_restarting_under_the_same_id_releases_its_old_sessions(redis_server: RedisServer) -> None:
    first = redis_store(redis_server.url, "edge-x", 5, 5)
    await first.start()
    await first.admit(record("edge-x"))
    await first.admit(record("edge-x"))
    await first.redis.aclose()  # crash: nothing released
    again = redis_store(redis_server.url, "edge-x", 5, 5)
    await again.start()
    try:
        assert await again.counts() == (0, 0)
    finally:
        await again.close()


async def test_no_scan_on_the_admission_path(redis_server: RedisServer) -> None:
    """Admission cost does not grow with the number of sessions: one script call, O(1) commands."""
    s = redis_store(redis_server.url, "edge-a", 100000, 100000)
    await s.start()
    monitor = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        for _ in range(200):
            await s.admit(record("edge-a"))
        await monitor.config_resetstat()
        await s.admit(record("edge-a"))
        stats = await monitor.info("commandstats")
        called = {k.removeprefix("cmdstat_") for k in stats}
        assert not called & {"scan", "keys", "smembers", "hgetall"}, called
    finally:
        await monitor.aclose()
        await s.close()
