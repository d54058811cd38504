"""Worker presence: heartbeats in a JetStream KV bucket whose entries expire.

Each worker puts ``<role>.<worker_id>`` every ``interval``; the bucket's TTL removes the key of
a worker that stopped. Edges read the live set for /readyz, VAD workers to balance shards.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.js import JetStreamContext
from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue

from common import subjects
from common.kv import ensure_bucket
from common.messages import WorkerHeartbeat, encode

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 2.0
HEARTBEAT_TTL_S = 6.0


async def bucket(js: JetStreamContext, replicas: int | None = None) -> KeyValue:
    """``replicas``: settings.stream_replicas; None binds to the bucket ensure_streams made."""
    return await ensure_bucket(js, subjects.WORKERS_BUCKET, HEARTBEAT_TTL_S, replicas)


async def heartbeat(kv: KeyValue, role: str, worker_id: str) -> None:
    """Runs until cancelled; deletes this worker's key on the way out."""
    started = time.time()
    key = f"{role}.{worker_id}"
    try:
        while True:
            beat = WorkerHeartbeat(role=role, worker_id=worker_id, started_at=started, sent_at=time.time())
            try:
                await kv.put(key, encode(beat))
            except Exception as exc:  # the bus may be reconnecting: the next beat retries
                log.warning("heartbeat %s failed: %s", key, exc)
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)
    finally:
        try:
            await asyncio.wait_for(asyncio.shield(kv.delete(key)), 1.0)
        except Exception as exc:
            log.debug("could not remove heartbeat %s: %s", key, exc)


async def live_workers(kv: KeyValue) -> dict[str, list[str]]:
    """Live worker ids by role."""
    try:
        keys = await kv.keys()
    except NoKeysError:
        return {}
    out: dict[str, list[str]] = {}
    for key in keys:
        role, _, worker_id = key.partition(".")
        out.setdefault(role, []).append(worker_id)
    return out
