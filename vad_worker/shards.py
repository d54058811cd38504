"""Exclusive ownership of audio shards through a JetStream KV bucket with a TTL (leases + fencing).

A worker owns shard k while it holds key ``shard.k`` in bucket ``vad_shards`` with its ``token``
(worker id + a per-process nonce, so a restarted process with the same worker id never mistakes
the dead one's lease for its own):

* taken with ``create`` (exactly one of several claimants wins: create is compare-and-set against
  "no such key");
* kept with ``update`` against the last revision (compare-and-set) every ``lease_refresh_s``;
* lost when it stops refreshing: the bucket's TTL (``lease_ttl_s``) expires the key and another
  worker takes the shard.

Fencing: a worker must stop consuming a shard BEFORE the TTL can expire its key. ``holds(shard)``
is true only until the local deadline ``last successful refresh (time the request was sent) +
lease_ttl_s - lease_margin_s``; the worker checks it before it publishes a batch's results and before it
acknowledges the batch. The session checkpoints (common.continuity) are written with
compare-and-set as a second fence.

Timeouts: an ``update`` (or ``create``) that timed out may have succeeded. The next compare-and-set
then fails; before giving the shard up the key is re-read, and if it holds our token its revision
is adopted. A refresh that keeps failing lets the deadline pass, and the shard is given up.

Balance: each worker aims at ceil(shards / live workers). A worker over that target gives shards
back (``surplus``; the caller stops their loops, then ``release``), so a joining worker gets its
share within a couple of refreshes; a dead worker's keys expire within ``lease_ttl_s``.

Those three timings are `common.bus_timing.TIMING`'s (``lease_*``), checked against each other there.

Pure apart from the injected KV store and clock, so the unit tests drive it with a fake KV.
"""

from __future__ import annotations

import logging
import math
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import nats
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from common.bus_timing import TIMING
from common.kv import ensure_bucket

log = logging.getLogger(__name__)

BUCKET = "vad_shards"

WRONG_LAST_SEQUENCE = (10071, 10164)  # JetStream's "wrong last sequence" error codes
TRANSIENT = (TimeoutError, nats.errors.Error)
"""Errors after which a KV operation's outcome is unknown or the bus is briefly away."""


class LeaseStore(Protocol):
    """The subset of nats-py's KeyValue the leases use (a fake implements it in unit tests)."""

    async def create(self, key: str, value: bytes) -> int: ...

    async def update(self, key: str, value: bytes, last: int | None = None) -> int: ...

    async def get(self, key: str) -> _Entry: ...

    async def delete(self, key: str, last: int | None = None) -> bool: ...


class _Entry(Protocol):
    @property
    def value(self) -> bytes | None: ...

    @property
    def revision(self) -> int | None: ...


async def bucket(js: JetStreamContext, replicas: int | None = None) -> KeyValue:
    """``replicas``: settings.stream_replicas (None: as the bucket exists, else 1)."""
    return await ensure_bucket(js, BUCKET, TIMING.lease_ttl_s, replicas)


def token_for(worker_id: str) -> str:
    """The value a worker process writes into its leases: unique per process start."""
    return f"{worker_id}#{os.getpid()}-{os.urandom(3).hex()}"


@dataclass(slots=True)
class Lease:
    revision: int
    deadline: float  # monotonic: consume only before this


class ShardLeases:
    def __init__(self, kv: LeaseStore, token: str, shards: int, *, ttl_s: float = TIMING.lease_ttl_s,
                 margin_s: float = TIMING.lease_margin_s, clock: Callable[[], float] = time.monotonic) -> None:
        self.kv = kv
        self.token = token
        self.shards = shards
        self.ttl_s = ttl_s
        self.margin_s = margin_s
        self.clock = clock
        self.owned: dict[int, Lease] = {}

    def __repr__(self) -> str:
        return f"<ShardLeases {self.token} owned={sorted(self.owned)}>"

    def target(self, live_workers: int) -> int:
        return math.ceil(self.shards / max(1, live_workers))

    def holds(self, shard: int) -> bool:
        """May this worker still publish and acknowledge for ``shard``?"""
        lease = self.owned.get(shard)
        return lease is not None and self.clock() < lease.deadline

    async def refresh(self, live_workers: int) -> tuple[set[int], set[int]]:
        """Renews held leases and takes free shards up to the target: (gained, lost)."""
        lost: set[int] = set()
        for shard in list(self.owned):
            if not await self._renew(shard):
                lost.add(shard)
        gained: set[int] = set()
        want = self.target(live_workers) - len(self.owned)
        # Start the scan at a worker-specific offset so joining workers do not all collide.
        start = zlib.crc32(self.token.encode()) % self.shards
        for i in range(self.shards):
            if want <= 0:
                break
            shard = (start + i) % self.shards
            if shard not in self.owned and await self._claim(shard):
                gained.add(shard)
                want -= 1
        return gained, lost

    def surplus(self, live_workers: int) -> set[int]:
        """Shards to give back so others can reach their share (the last ones in scan order)."""
        extra = len(self.owned) - self.target(live_workers)
        if extra <= 0:
            return set()
        start = zlib.crc32(self.token.encode()) % self.shards
        order = sorted(self.owned, key=lambda s: (s - start) % self.shards)
        return set(order[-extra:])

    async def release(self, shard: int) -> None:
        """Gives a shard back now (its loop must have stopped): deletes our key if still ours."""
        lease = self.owned.pop(shard, None)
        if lease is None:
            return
        try:
            await self.kv.delete(_key(shard), last=lease.revision)
        except (KeyWrongLastSequenceError, NotFoundError):
            pass  # no longer ours: nothing to give back
        except BadRequestError as exc:
            if exc.err_code not in WRONG_LAST_SEQUENCE:
                raise
            # no longer ours (kv.delete reports a failed compare-and-set as a plain 400)
        except TRANSIENT as exc:
            log.warning("could not release shard %d (%s): it frees itself in %.0f s", shard, exc, self.ttl_s)

    async def release_all(self) -> None:
        for shard in list(self.owned):
            await self.release(shard)

    # --- one key ------------------------------------------------------------------------------

    async def _renew(self, shard: int, retried: bool = False) -> bool:
        lease = self.owned[shard]
        sent = self.clock()
        try:
            lease.revision = await self.kv.update(_key(shard), self.token.encode(), last=lease.revision)
            lease.deadline = sent + self.ttl_s - self.margin_s
            return True
        except KeyWrongLastSequenceError:
            # Either someone else holds it now, or our previous update timed out after succeeding.
            revision = None if retried else await self._ours(shard)
            if revision is not None:
                lease.revision = revision
                log.info("shard %d: adopting our own lease write that had timed out (revision %d)",
                         shard, revision)
                return await self._renew(shard, retried=True)
        except NotFoundError:
            pass  # expired: we refreshed too late
        except TRANSIENT as exc:
            if self.clock() < lease.deadline:
                log.warning("refresh of shard %d failed (%s); retrying", shard, exc)
                return True
        log.warning("lost the lease of shard %d", shard)
        del self.owned[shard]
        return False

    async def _claim(self, shard: int) -> bool:
        sent = self.clock()
        try:
            revision = await self.kv.create(_key(shard), self.token.encode())
        except (KeyWrongLastSequenceError, *TRANSIENT) as exc:
            # Taken, unless a create of ours (this one or an earlier one) timed out after succeeding:
            # then the key holds our token; renew it at once for a deadline we can trust.
            if not isinstance(exc, KeyWrongLastSequenceError):
                log.debug("claiming shard %d failed (%s)", shard, exc)
            adopted = await self._ours(shard)
            if adopted is None:
                return False
            self.owned[shard] = Lease(adopted, sent)  # not held until the renewal succeeds
            return await self._renew(shard, retried=True)
        self.owned[shard] = Lease(revision, sent + self.ttl_s - self.margin_s)
        return True

    async def _ours(self, shard: int) -> int | None:
        """The key's revision if it holds our token (an earlier write of ours that timed out but
        succeeded); None if it is someone else's, gone, or cannot be read now."""
        try:
            entry = await self.kv.get(_key(shard))
        except NotFoundError:
            return None
        except TRANSIENT as exc:
            log.debug("re-reading shard %d failed (%s)", shard, exc)
            return None
        if entry.value != self.token.encode():
            return None
        return entry.revision


def _key(shard: int) -> str:
    return f"shard.{shard}"
