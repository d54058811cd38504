"""Where sessions are recorded and admitted.

``SessionStore`` is the interface; ``MemorySessionStore`` serves a single edge without Redis
(the default of `asr dev`). Admission checks and records in one step, so the caps hold exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(slots=True)
class SessionRecord:
    session_id: str
    edge_id: str
    resume_token_hash: str
    state: str = "created"  # created | active | closing | closed
    created_at: float = field(default_factory=time.time)
    last_activity_at: float = field(default_factory=time.time)
    audio_bytes_received: int = 0
    transcripts_sent: int = 0


class SessionStore(Protocol):
    async def admit(self, record: SessionRecord) -> bool:
        """Records the session if both caps allow it; False means at capacity."""
        ...

    async def release(self, session_id: str) -> None:
        """Marks the session closed and frees its place; releasing twice is a no-op."""
        ...

    async def update(self, record: SessionRecord) -> None: ...

    async def counts(self) -> tuple[int, int]:
        """(sessions on the whole cluster, sessions on this edge)."""
        ...

    async def states(self) -> dict[str, int]: ...


class MemorySessionStore:
    def __init__(self, edge_id: str, max_per_edge: int, max_global: int) -> None:
        self.edge_id = edge_id
        self.limit = min(max_per_edge, max_global)
        self._open: dict[str, SessionRecord] = {}

    async def admit(self, record: SessionRecord) -> bool:
        if len(self._open) >= self.limit:
            return False
        self._open[record.session_id] = record
        return True

    async def release(self, session_id: str) -> None:
        record = self._open.pop(session_id, None)
        if record is not None:
            record.state = "closed"

    async def update(self, record: SessionRecord) -> None:
        if record.session_id in self._open:
            self._open[record.session_id] = record

    async def counts(self) -> tuple[int, int]:
        return len(self._open), len(self._open)

    async def states(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for record in self._open.values():
            out[record.state] = out.get(record.state, 0) + 1
        return out
