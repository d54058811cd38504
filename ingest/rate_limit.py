"""Token-bucket pacing of one client's audio. Pure and synchronous: no clock, no I/O.

The caller passes ``now`` (seconds on a monotonic clock) to every call, so the engine is driven by
simulated time in unit tests and by ``time.monotonic()`` at the edge::

    limiter = RateLimiter(RateLimitOptions(bytes_per_second=96000, burst_bytes=160000,
                                           grace_seconds=10), time.monotonic())
    wait = limiter.admit(len(chunk), time.monotonic())   # stop reading this socket for `wait` s
    if limiter.flooding(time.monotonic()): ...           # tell the client once

Semantics:

* The bucket holds up to ``burst_bytes`` tokens and starts full. It refills continuously at
  ``bytes_per_second`` (``rate × elapsed``, capped at ``burst_bytes``).
* `admit` takes a chunk that has already been read: its size is always subtracted, so tokens may
  go negative (a chunk larger than the bucket is allowed and costs its full size). The returned
  wait is the time the bucket needs to refill back to zero; 0 while the client stays within the
  rate. A client that sends as soon as it is allowed therefore averages exactly the rate after
  its initial burst: bytes admitted by time ``t`` ≤ ``burst + rate × t`` + the last chunk.
* `flooding` is true once every admit for ``grace_seconds`` has been throttled (wait > 0), counted
  from the first throttled admit; one admit that needs no wait resets it. It is meant to be asked
  right after `admit`: an idle client's streak ends on its next (un-throttled) admit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_NOISE_S = 1e-9
"""Waits shorter than this are float rounding (e.g. a client at exactly the rate) and count as 0."""


@dataclass(frozen=True, slots=True)
class RateLimitOptions:
    """Limits of one client's audio; all must be positive and finite."""

    bytes_per_second: float
    """Allowed sustained rate (the edge uses factor × sample_rate × 2 bytes)."""
    burst_bytes: float
    """Bucket size: how far ahead of the rate a client may get before it waits."""
    grace_seconds: float
    """Continuous throttling this long means the client keeps flooding."""

    def __post_init__(self) -> None:
        for name in ("bytes_per_second", "burst_bytes", "grace_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, not {value!r}")


class RateLimiter:
    """Paces one client's bytes; see the module docstring for the semantics."""

    def __init__(self, options: RateLimitOptions, now: float) -> None:
        self._opts = options
        self._tokens = options.burst_bytes  # bytes; negative while the client must wait
        self._last = now  # seconds: when the tokens were last refilled
        self._throttled_since: float | None = None  # first admit of the current throttled streak
        self._throttled_total = 0.0  # seconds

    def __repr__(self) -> str:
        return (
            f"RateLimiter(tokens={self._tokens:.0f}, throttled_seconds={self._throttled_total:.3f}, "
            f"throttled_since={self._throttled_since})"
        )

    @property
    def options(self) -> RateLimitOptions:
        return self._opts

    @property
    def tokens(self) -> float:
        """Bytes left in the bucket at the last call; negative while the client must wait."""
        return self._tokens

    @property
    def throttled_seconds(self) -> float:
        """Total wait handed out by `admit` so far, in seconds (for metrics)."""
        return self._throttled_total

    def admit(self, nbytes: int, now: float) -> float:
        """Take `nbytes` (already read) from the bucket; return the seconds to wait (>= 0) before
        reading more from this client: 0 while within the rate, else the time to refill to zero."""
        if nbytes < 0:
            raise ValueError(f"nbytes must be zero or positive, not {nbytes}")
        self._refill(now)
        self._tokens -= nbytes
        wait = -self._tokens / self._opts.bytes_per_second
        if wait < _NOISE_S:
            self._throttled_since = None
            return 0.0
        if self._throttled_since is None:
            self._throttled_since = now
        self._throttled_total += wait
        return wait

    def flooding(self, now: float) -> bool:
        """True once every admit for at least ``grace_seconds`` (up to `now`) has been throttled."""
        since = self._throttled_since
        return since is not None and now - since >= self._opts.grace_seconds

    def _refill(self, now: float) -> None:
        # A clock that steps back (never with time.monotonic) just adds nothing.
        elapsed = now - self._last
        if elapsed > 0:
            refill = self._opts.bytes_per_second * elapsed
            self._tokens = min(self._opts.burst_bytes, self._tokens + refill)
            self._last = now
