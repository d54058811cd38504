"""Idempotent JetStream KV buckets with a replica count, like ``common.streams`` does for streams.

``ensure_bucket(js, name, ttl, replicas)`` creates the bucket, or updates an existing one whose
replica count differs (an operator moved from one nats-server to a cluster and raised
``stream_replicas``). ``replicas=None`` binds to the bucket as it is, creating it with one replica
only when nobody has created it yet: for callers that do not know the setting.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BadRequestError, BucketNotFoundError
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)


def stream_of(bucket: str) -> str:
    """The JetStream stream that holds a KV bucket."""
    return f"KV_{bucket}"


async def ensure_bucket(js: JetStreamContext, name: str, ttl: float, replicas: int | None, *,
                        memory: bool = False) -> KeyValue:
    """``memory``: a cache kept in memory (lost when a lone nats-server restarts)."""
    if replicas is None:
        try:
            return await js.key_value(name)
        except BucketNotFoundError:
            replicas = 1
    try:
        storage = StorageType.MEMORY if memory else StorageType.FILE
        return await js.create_key_value(KeyValueConfig(bucket=name, ttl=ttl, history=1, replicas=replicas,
                                                        storage=storage))
    except BadRequestError:
        # Exists with another config: keep everything, change the replica count in place.
        stream = stream_of(name)
        info = await js.stream_info(stream)
        log.info("KV bucket %s has %s replica(s): updating to %d", name, info.config.num_replicas, replicas)
        await js.update_stream(info.config.evolve(num_replicas=replicas))
        return await js.key_value(name)
