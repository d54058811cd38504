"""Where sessions are recorded, admitted, handed over and released.

``SessionStore`` is the interface. ``MemorySessionStore`` serves a single edge without Redis (the
default of `asr dev`); ``ingest.redis_store.RedisSessionStore`` serves a cluster of edges. Both
keep the same promises, checked by the same tests:

- ``admit`` checks both caps and records the session in one step, so caps hold exactly;
- ``release`` frees a session's place exactly once, and only for the edge that owns it;
- ``resume`` checks the resume token (stored hashed, compared in constant time) and moves
  ownership to the asking edge, counting the session there;
- a released session stays readable for resume until ``retention_s`` has passed.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Protocol


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_token(token), stored_hash)


@dataclass(slots=True)
class SessionRecord:
    session_id: str
    edge_id: str
    resume_token_hash: str
    owner: str = ""  # the connection that holds the session now (changes on resume)
    sample_rate: int = 16000
    state: str = "created"  # created | active | closing | closed | interrupted
    created_at: float = field(default_factory=time.time)
    last_activity_at: float = field(default_factory=time.time)
    audio_bytes_received: int = 0  # client bytes, at the client's sample rate
    transcripts_sent: int = 0


class Admit(enum.Enum):
    OK = "ok"
    EDGE_FULL = "edge_full"
    GLOBAL_FULL = "global_full"


class ResumeError(Exception):
    """Resume refused; ``reason`` is safe to show to the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# States from which a session may be resumed: it did not end on purpose.
RESUMABLE = frozenset({"created", "active", "closing", "interrupted"})


class SessionStore(Protocol):
    edge_id: str

    async def admit(self, record: SessionRecord) -> Admit:
        """Records the session if both caps allow it."""
        ...

    async def release(self, session_id: str, owner: str, state: str) -> bool:
        """Frees the session's place if ``owner`` (a connection) holds it and it is counted."""
        ...

    async def resume(self, session_id: str, token: str, owner: str) -> SessionRecord:
        """Checks the token and gives the session to ``owner`` on this edge; raises ResumeError."""
        ...

    async def update(self, record: SessionRecord) -> None:
        """Stores the record's state, activity time and metrics (if this edge owns it)."""
        ...

    async def counts(self) -> tuple[int, int]:
        """(sessions on the whole cluster, sessions on this edge)."""
        ...

    async def states(self) -> dict[str, int]: ...

    async def heartbeat(self) -> None:
        """Tells the cluster this edge is alive (no-op without Redis)."""
        ...

    async def cleanup_orphans(self) -> int:
        """Releases sessions of dead edges idle for the orphan timeout; returns how many."""
        ...

    async def close(self) -> None: ...


class MemorySessionStore:
    """One edge, no Redis: caps are this edge's, resume works against this same edge."""

    def __init__(self, edge_id: str, max_per_edge: int, max_global: int, retention_s: float = 3600.0) -> None:
        self.edge_id = edge_id
        self.limit = min(max_per_edge, max_global)
        self.max_per_edge = max_per_edge
        self.max_global = max_global
        self.retention_s = retention_s
        self._records: dict[str, SessionRecord] = {}
        self._counted: set[str] = set()

    async def admit(self, record: SessionRecord) -> Admit:
        self._forget_old()
        if len(self._counted) >= self.max_global:
            return Admit.GLOBAL_FULL
        if len(self._counted) >= self.max_per_edge:
            return Admit.EDGE_FULL
        self._records[record.session_id] = record
        self._counted.add(record.session_id)
        return Admit.OK

    async def release(self, session_id: str, owner: str, state: str) -> bool:
        record = self._records.get(session_id)
        if record is None or session_id not in self._counted or record.owner != owner:
            return False
        self._counted.discard(session_id)
        record.state = state
        record.last_activity_at = time.time()
        return True

    async def resume(self, session_id: str, token: str, owner: str) -> SessionRecord:
        record = self._records.get(session_id)
        if record is None or not token_matches(token, record.resume_token_hash):
            raise ResumeError("Unknown session or wrong resume token")
        if record.state not in RESUMABLE:
            raise ResumeError(f"Session already {record.state}; start a new session")
        if session_id not in self._counted:
            if len(self._counted) >= self.limit:
                raise ResumeError("Service at capacity, please try again")
            self._counted.add(session_id)
        # A new record: the previous connection may still hold (and mutate) the old object.
        resumed = dataclasses.replace(record, owner=owner, state="active", last_activity_at=time.time())
        self._records[session_id] = resumed
        return resumed

    async def update(self, record: SessionRecord) -> None:
        stored = self._records.get(record.session_id)
        if stored is not None and stored is not record and stored.owner == record.owner:
            self._records[record.session_id] = record

    async def counts(self) -> tuple[int, int]:
        return len(self._counted), len(self._counted)

    async def states(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for sid in self._counted:
            state = self._records[sid].state
            out[state] = out.get(state, 0) + 1
        return out

    async def heartbeat(self) -> None:
        return None

    async def cleanup_orphans(self) -> int:
        return 0

    async def close(self) -> None:
        return None

    def _forget_old(self) -> None:
        cutoff = time.time() - self.retention_s
        for sid in [s for s, r in self._records.items() if s not in self._counted and r.last_activity_at < cutoff]:
            del self._records[sid]
