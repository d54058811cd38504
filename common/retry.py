"""Transient bus errors and bounded backoff, for the loops that must ride through them.

A JetStream publish that timed out, a 503 or "no responders" while JetStream recovers, a request
cut by a reconnect: the loops of the VAD and ASR workers retry these after a short, growing pause
instead of dying (the NATS client reconnects by itself). Anything else is a bug and ends the
loop, whose supervisor logs it and restarts it.
"""

from __future__ import annotations

import asyncio
import logging

import nats

log = logging.getLogger(__name__)

TRANSIENT: tuple[type[BaseException], ...] = (TimeoutError, nats.errors.Error)
"""Errors after which the operation may be retried (its outcome may be unknown)."""


class Backoff:
    """Pauses of ``first_s``, doubling up to ``max_s``; ``reset()`` after a success."""

    def __init__(self, first_s: float = 0.2, max_s: float = 5.0) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        delay: float = min(self.max_s, self.first_s * 2.0**self.failures)
        self.failures += 1
        return delay

    async def wait(self) -> None:
        await asyncio.sleep(self.next_delay())
