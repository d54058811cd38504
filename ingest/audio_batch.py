"""How a session's audio is cut into bus messages: small client chunks joined, without I/O.

Every audio message costs the same on its way through the pipeline whatever it holds: the edge's
publish and acknowledgement, nats-server storing and delivering it, the VAD worker's delivery and
acknowledgement. A client that sends 20 ms frames (telephony gateways, some browser and SDK
clients) would cost five times what one sending 100 ms chunks costs. `AudioBatch` joins a
session's consecutive chunks until ``target_bytes`` are held; the caller also publishes what it
holds once the oldest byte has waited ``max_wait_s`` (`due`), so audio is never held longer than
that, also when the client pauses. Chunks of at least ``target_bytes`` pass through at once:
clients that send 100 ms chunks see no change at the default.
"""

from __future__ import annotations


class AudioBatch:
    def __init__(self, target_bytes: int, max_wait_s: float) -> None:
        if target_bytes < 0 or max_wait_s < 0:
            raise ValueError("target_bytes and max_wait_s must not be negative")
        self.target_bytes = target_bytes
        self.max_wait_s = max_wait_s
        self._parts: list[bytes] = []
        self._held = 0
        self.since: float | None = None  # when the oldest held byte arrived (monotonic), None if none

    @property
    def held(self) -> int:
        """Bytes held, not yet handed out."""
        return self._held

    def add(self, pcm: bytes, now: float) -> bytes | None:
        """Holds ``pcm`` (arrived at ``now``); returns what is held, joined, once it reaches
        ``target_bytes`` (None while it does not)."""
        if not pcm:
            return None
        if not self._parts:
            if len(pcm) >= self.target_bytes:  # the common case: a chunk big enough on its own
                return pcm
            self.since = now
        self._parts.append(pcm)
        self._held += len(pcm)
        return self.take() if self._held >= self.target_bytes else None

    def due(self, now: float) -> bool:
        """Whether the oldest byte held has waited ``max_wait_s``."""
        return self.since is not None and now - self.since >= self.max_wait_s

    def deadline(self) -> float | None:
        """When what is held is due (monotonic), None if nothing is held."""
        return None if self.since is None else self.since + self.max_wait_s

    def take(self) -> bytes:
        """Everything held, joined (b"" if nothing), and holds nothing after."""
        out = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts, self._held, self.since = [], 0, None
        return out
