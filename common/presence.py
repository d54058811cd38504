"""Worker presence: heartbeats in a JetStream KV bucket whose entries expire.

Each worker puts ``<role>.<worker_id>`` every ``interval``; the bucket's TTL removes the key of
a worker that stopped. Edges read the live set for /readyz, VAD workers to balance shards.

The live set is read with one stream-info request that lists the bucket's subjects
(``live_workers``), not with ``KeyValue.keys()``, which creates, asks about and deletes a consumer
on the server each time: edges read it every second and VAD workers every lease refresh, a fixed
cost of the bus whether anyone speaks or not (docs/benchmarks.md). A subject listed there is a live
key only if no delete marker is stored for it, so a stopping worker removes its key by purging the
subject (nothing left behind) instead of deleting it (a marker until the TTL).
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from common import subjects
from common.bus_timing import TIMING
from common.kv import ensure_bucket, stream_of
from common.messages import WorkerHeartbeat, encode

log = logging.getLogger(__name__)


async def bucket(js: JetStreamContext, replicas: int | None = None) -> KeyValue:
    """``replicas``: settings.stream_replicas; None binds to the bucket ensure_streams made."""
    return await ensure_bucket(js, subjects.WORKERS_BUCKET, TIMING.worker_ttl_s, replicas)


STREAM = stream_of(subjects.WORKERS_BUCKET)


def _subject(key: str) -> str:
    return f"$KV.{subjects.WORKERS_BUCKET}.{key}"


async def heartbeat(kv: KeyValue, js: JetStreamContext, role: str, worker_id: str) -> None:
    """Runs until cancelled; removes this worker's key on the way out (purged: no marker)."""
    started = time.time()
    key = f"{role}.{worker_id}"
    try:
        while True:
            beat = WorkerHeartbeat(role=role, worker_id=worker_id, started_at=started, sent_at=time.time())
            try:
                await kv.put(key, encode(beat))
            except Exception as exc:  # the bus may be reconnecting: the next beat retries
                log.warning("heartbeat %s failed: %s", key, exc)
            await asyncio.sleep(TIMING.worker_heartbeat_s)
    finally:
        try:
            await asyncio.wait_for(asyncio.shield(js.purge_stream(STREAM, subject=_subject(key))), 1.0)
        except Exception as exc:
            log.debug("could not remove heartbeat %s: %s", key, exc)


async def live_workers(js: JetStreamContext) -> dict[str, list[str]]:
    """Live worker ids by role: the bucket's keys, from one stream-info request."""
    prefix = _subject("")
    info = await js.stream_info(STREAM, subjects_filter=prefix + ">")
    out: dict[str, list[str]] = {}
    for subject in sorted(info.state.subjects or {}):
        role, _, worker_id = subject.removeprefix(prefix).partition(".")
        out.setdefault(role, []).append(worker_id)
    return out
