"""A shard's sessions processed since their last checkpoint, and the audio messages that wait for it.

The VAD worker acknowledges an audio message only once the session's checkpoint covers it (a
crash before that redelivers it, and the new owner reads on from the checkpoint). Writing the
checkpoint after every batch cost a key-value write per message at low load and one per session
per batch at high load, more than the VAD itself; so a session's checkpoint is written at most
every ``vad_checkpoint_seconds`` (at once when it ends), and its messages are held until then.
"""

from __future__ import annotations

import math
import time
from typing import Generic, TypeVar

M = TypeVar("M")


class Unsaved(Generic[M]):
    def __init__(self) -> None:
        self._since: dict[str, float] = {}  # session -> when it was first processed after its last save
        self._held: dict[str, list[M]] = {}

    def __repr__(self) -> str:
        return f"<Unsaved sessions={len(self._since)} messages={sum(map(len, self._held.values()))}>"

    def __bool__(self) -> bool:
        return bool(self._since) or bool(self._held)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._since or session_id in self._held

    def processed(self, session_id: str, now: float | None = None) -> None:
        """The session's state moved: its checkpoint is due ``vad_checkpoint_seconds`` from now."""
        self._since.setdefault(session_id, time.monotonic() if now is None else now)

    def ended(self, session_id: str) -> None:
        """The session ended: its checkpoint is due at the next save, whatever the interval."""
        self._since[session_id] = -math.inf

    def hold(self, session_id: str, message: M) -> None:
        """A message of the session, processed, to acknowledge once its checkpoint is written."""
        self._held.setdefault(session_id, []).append(message)

    def sessions(self) -> list[str]:
        return list(self._since.keys() | self._held.keys())

    def next_due(self, interval: float) -> float | None:
        """When the first checkpoint falls due (monotonic; -inf for an ended session), or None when
        no session waits for one."""
        return min(self._since.values()) + interval if self._since else None

    def due(self, before: float) -> list[str]:
        """Sessions first processed after their last save at or before ``before``."""
        return [sid for sid, since in self._since.items() if since <= before]

    def saved(self, session_id: str) -> list[M]:
        """The session's checkpoint is written: the messages it covers, to acknowledge now."""
        self._since.pop(session_id, None)
        return self._held.pop(session_id, [])

    def clear(self) -> None:
        """Forgets everything (nothing is acknowledged: JetStream redelivers it after its ack wait)."""
        self._since.clear()
        self._held.clear()
