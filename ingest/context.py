"""What every connection of one edge shares, and the session-store chores that outlive a
connection (a release the store could not take when the connection ended is retried here)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from redis.exceptions import RedisError

from common import logs
from ingest.auth import Gatekeeper
from ingest.client_address import ClientAddress
from ingest.edge_settings import EdgeSettings
from ingest.jetstream_pipe import JetStreamPipe
from ingest.session_store import SessionStore

log = logging.getLogger(__name__)

STORE_ERRORS = (OSError, RedisError)  # what a session store raises when it is unreachable


class OpenConnection(Protocol):
    """What the edge needs of each open client connection (``ingest.connection.Connection``):
    draining it when the edge stops."""

    async def drain(self, timeout: float) -> None: ...


@dataclass
class EdgeContext:
    settings: EdgeSettings
    nc: NATS
    js: JetStreamContext
    store: SessionStore
    edge_id: str
    gate: Gatekeeper
    pipe: JetStreamPipe  # every session's audio publishes, over this edge's NATS connection
    client_address: ClientAddress = field(default_factory=ClientAddress)  # whom per-address limits count
    started_at: float = field(default_factory=time.time)
    draining: bool = False
    connections: set[OpenConnection] = field(default_factory=set)
    workers: dict[str, list[str]] = field(default_factory=dict)  # live worker ids by role
    store_ok: bool = True  # the session store answered the last heartbeat
    totals: dict[str, int] = field(default_factory=dict)  # this edge's counters for /v1/metrics
    # Releases the store could not take (it was unreachable): session id -> (owner, state).
    unreleased: dict[str, tuple[str, str]] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        self.totals[name] = self.totals.get(name, 0) + n

    async def release(self, session_id: str, owner: str, state: str) -> None:
        """Frees the session's place now, or as soon as the store answers again."""
        try:
            await self.store.release(session_id, owner, state)
        except STORE_ERRORS as exc:
            logs.for_session(log, session_id).warning("release failed (%s); retrying while the store is down", exc)
            self.unreleased[session_id] = (owner, state)

    async def retry_releases(self) -> None:
        """Called by the store keeper: releases what could not be released before."""
        for session_id, (owner, state) in list(self.unreleased.items()):
            await self.store.release(session_id, owner, state)  # raises while the store is down
            del self.unreleased[session_id]
            logs.for_session(log, session_id).info("released after the store came back")
