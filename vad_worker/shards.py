"""Exclusive ownership of audio shards through a JetStream KV bucket with a TTL (leases).

A worker owns shard k while it holds key ``shard.k`` in bucket ``vad_shards``: taken with
``create`` (fails if anyone holds it), kept with ``update`` against the last revision
(compare-and-set), and lost when it stops refreshing: the bucket's TTL expires the key and another
worker takes the shard within ``LEASE_TTL_S``. Each worker aims at ceil(shards / live workers).

Shards are never released voluntarily while a worker runs: moving a session's VAD state between
workers is the job of the worker-pool issue (hand-over at utterance boundaries).
"""

from __future__ import annotations

import contextlib
import logging
import math
import zlib

from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from common.kv import ensure_bucket

log = logging.getLogger(__name__)

BUCKET = "vad_shards"
LEASE_TTL_S = 10.0
REFRESH_S = 2.0


async def bucket(js: JetStreamContext, replicas: int | None = None) -> KeyValue:
    """``replicas``: settings.stream_replicas (None: as the bucket exists, else 1)."""
    return await ensure_bucket(js, BUCKET, LEASE_TTL_S, replicas)


class ShardLeases:
    def __init__(self, kv: KeyValue, worker_id: str, shards: int) -> None:
        self.kv = kv
        self.worker_id = worker_id
        self.shards = shards
        self.owned: dict[int, int] = {}  # shard -> revision of our lease

    def target(self, live_workers: int) -> int:
        return math.ceil(self.shards / max(1, live_workers))

    async def refresh(self, live_workers: int) -> tuple[set[int], set[int]]:
        """Renews held leases and takes free shards up to the target: (gained, lost)."""
        lost: set[int] = set()
        for shard, rev in list(self.owned.items()):
            try:
                self.owned[shard] = await self.kv.update(_key(shard), self.worker_id.encode(), last=rev)
            except (KeyWrongLastSequenceError, NotFoundError):
                log.warning("lost the lease of shard %d", shard)
                del self.owned[shard]
                lost.add(shard)
        gained: set[int] = set()
        want = self.target(live_workers) - len(self.owned)
        # Start the scan at a worker-specific offset so joining workers do not all collide.
        start = zlib.crc32(self.worker_id.encode()) % self.shards
        for i in range(self.shards):
            if want <= 0:
                break
            shard = (start + i) % self.shards
            if shard in self.owned:
                continue
            try:
                self.owned[shard] = await self.kv.create(_key(shard), self.worker_id.encode())
            except KeyWrongLastSequenceError:
                continue
            gained.add(shard)
            want -= 1
        return gained, lost

    async def release_all(self) -> None:
        for shard, rev in list(self.owned.items()):
            with contextlib.suppress(KeyWrongLastSequenceError, NotFoundError):
                await self.kv.delete(_key(shard), last=rev)
            del self.owned[shard]


def _key(shard: int) -> str:
    return f"shard.{shard}"
