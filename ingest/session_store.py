"""Where sessions are recorded, admitted, handed over and released.

``SessionStore`` is the interface. ``MemorySessionStore`` serves a single edge without Redis (the
default of `asr dev`); ``ingest.redis_store.RedisSessionStore`` serves a cluster of edges. Both
keep the same promises, checked by the same tests:

- ``admit`` checks both caps and records the session in one step, so caps hold exactly;
- ``release`` frees a session's place exactly once, and only for the edge that owns it;
- ``resume`` checks the resume token (stored hashed, compared in constant time) and moves
  ownership to the asking connection in one step with giving back the place of the connection's
  own fresh session (``replaces``), so resuming needs no second free place; every resume raises
  the session's ``epoch``, and only the holder of the highest epoch may write the record, so of
  two racing reconnects exactly one holds the session;
- ``update`` writes only for the connection that holds the session;
- a released session stays readable for resume until ``retention_s`` has passed.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import time
from collections import OrderedDict
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
    audio_bytes_received: int = 0  # client bytes stored in JetStream, at the client's sample rate
    transcripts_sent: int = 0  # seq of the last final released to the client (its position)
    final_index_released: int = 0  # the final index of that position (finals with no text included)
    epoch: int = 0  # raised by every resume; a takeover announces it, older holders close


class Admit(enum.Enum):
    OK = "ok"
    EDGE_FULL = "edge_full"
    GLOBAL_FULL = "global_full"


class ResumeError(Exception):
    """Resume refused; ``reason`` is safe to show to the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_sample_rate(session_rate: int, client_rate: int) -> None:
    if session_rate != client_rate:
        raise ResumeError(f"Reconnect with the session's sample_rate={session_rate}, not {client_rate}")


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

    async def resume(self, session_id: str, token: str, owner: str, replaces: str,
                     sample_rate: int = 16000) -> SessionRecord:
        """Checks the token (and that the client streams at the session's ``sample_rate``) and
        gives the session to ``owner`` on this edge, releasing ``owner``'s own fresh session
        ``replaces`` in the same step; raises ResumeError."""
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
    """One edge, no Redis: caps are this edge's, resume works against this same edge.

    Every call is O(1): counted sessions are a dict, released ones an insertion-ordered dict
    trimmed from its old end to at most ``max_released`` records and ``retention_s`` seconds."""

    def __init__(self, edge_id: str, max_per_edge: int, max_global: int, retention_s: float = 3600.0,
                 max_released: int = 10000) -> None:
        self.edge_id = edge_id
        self.limit = min(max_per_edge, max_global)
        self.max_per_edge = max_per_edge
        self.max_global = max_global
        self.retention_s = retention_s
        self.max_released = max_released
        self._counted: dict[str, SessionRecord] = {}
        self._released: OrderedDict[str, tuple[float, SessionRecord]] = OrderedDict()

    def __len__(self) -> int:
        """Records held, counted and released."""
        return len(self._counted) + len(self._released)

    async def admit(self, record: SessionRecord) -> Admit:
        self._forget_old()
        if len(self._counted) >= self.max_global:
            return Admit.GLOBAL_FULL
        if len(self._counted) >= self.max_per_edge:
            return Admit.EDGE_FULL
        self._counted[record.session_id] = record
        return Admit.OK

    async def release(self, session_id: str, owner: str, state: str) -> bool:
        record = self._counted.get(session_id)
        if record is None or record.owner != owner:
            return False
        del self._counted[session_id]
        record.state = state
        record.last_activity_at = time.time()
        self._released[session_id] = (time.monotonic(), record)
        self._forget_old()
        return True

    async def resume(self, session_id: str, token: str, owner: str, replaces: str,
                     sample_rate: int = 16000) -> SessionRecord:
        if session_id == replaces:
            raise ResumeError("A connection cannot resume its own session")
        counted = self._counted.get(session_id)
        released = self._released.get(session_id)
        record = counted or (released[1] if released else None)
        if record is None or not token_matches(token, record.resume_token_hash):
            raise ResumeError("Unknown session or wrong resume token")
        if record.state not in RESUMABLE:
            raise ResumeError(f"Session already {record.state}; start a new session")
        check_sample_rate(record.sample_rate, sample_rate)
        fresh = self._counted.get(replaces)
        if fresh is None or fresh.owner != owner:
            raise ResumeError("reconnect must come from an admitted connection")
        # The swap: the fresh session's place becomes the resumed session's (no second place).
        del self._counted[replaces]
        fresh.state = "closed"
        # A new record: the previous connection may still hold (and mutate) the old object.
        resumed = dataclasses.replace(record, owner=owner, state="active", last_activity_at=time.time(),
                                      epoch=record.epoch + 1)
        self._released.pop(session_id, None)
        self._counted[session_id] = resumed
        return resumed

    async def update(self, record: SessionRecord) -> None:
        stored = self._counted.get(record.session_id)
        if stored is not None and stored is not record and stored.owner == record.owner:
            self._counted[record.session_id] = record

    async def counts(self) -> tuple[int, int]:
        return len(self._counted), len(self._counted)

    async def states(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for record in self._counted.values():
            out[record.state] = out.get(record.state, 0) + 1
        return out

    async def heartbeat(self) -> None:
        return None

    async def cleanup_orphans(self) -> int:
        return 0

    async def close(self) -> None:
        return None

    def _forget_old(self) -> None:
        cutoff = time.monotonic() - self.retention_s
        while self._released:
            released_at, _ = next(iter(self._released.values()))
            if len(self._released) <= self.max_released and released_at >= cutoff:
                break
            self._released.popitem(last=False)
