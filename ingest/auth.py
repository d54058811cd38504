"""Who may open a stream: API keys, allowed origins, and per address a limit on open connections
and on how fast new ones are opened.

Checked before the WebSocket upgrade, so a refused client costs one small HTTP answer. API keys
are kept only as SHA-256 digests and compared in constant time; they never reach logs or metrics.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from ingest import protocol as p
from ingest.edge_settings import EdgeSettings


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int  # HTTP status of the answer
    code: str  # error code of the client contract
    message: str


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ConnectRate:
    """New connections per address: a token bucket of ``per_minute`` tokens refilled evenly over a
    minute. Pure: the caller passes the clock. At most ``max_addresses`` buckets are kept (least
    recently used forgotten first; a forgotten address starts with a full bucket)."""

    def __init__(self, per_minute: int, max_addresses: int = 100_000) -> None:
        self.per_minute = per_minute
        self.max_addresses = max_addresses
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # ip -> (tokens, at)

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, ip: str, now: float) -> float:
        """0 when ``ip`` may connect now (a token is used); else the seconds until it may."""
        if not self.per_minute:
            return 0.0
        rate = self.per_minute / 60.0
        tokens, at = self._buckets.pop(ip, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - at) * rate)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / rate
        if not wait:
            tokens -= 1
        self._buckets[ip] = (tokens, now)
        while len(self._buckets) > self.max_addresses:
            self._buckets.popitem(last=False)
        return wait


def subprotocol_key(headers: Mapping[str, str]) -> str:
    """The key of a browser client that cannot set headers and offers it as WebSocket subprotocols
    ``token, KEY`` (as Deepgram's browser clients do); "" when there is none. The server answers
    with the ``token`` subprotocol (``SUBPROTOCOLS``)."""
    offered = [part.strip() for part in headers.get("Sec-WebSocket-Protocol", "").split(",")]
    return offered[1] if len(offered) == 2 and offered[0].lower() == "token" else ""


SUBPROTOCOLS = ("token",)


@dataclass
class Gatekeeper:
    key_digests: tuple[bytes, ...]
    origins: frozenset[str]
    max_per_ip: int
    open_by_ip: dict[str, int] = field(default_factory=dict)
    connect_rate: ConnectRate = field(default_factory=lambda: ConnectRate(0))

    @classmethod
    def from_settings(cls, settings: EdgeSettings) -> Gatekeeper:
        keys = tuple(_digest(k.strip()) for k in settings.api_keys.split(",") if k.strip())
        origins = frozenset(o.strip().rstrip("/") for o in settings.allowed_origins.split(",") if o.strip())
        return cls(keys, origins, settings.max_connections_per_ip,
                   connect_rate=ConnectRate(settings.max_connects_per_ip_per_minute))

    def check(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Refusal | None:
        """Authentication and origin; None when the request may go on."""
        if self.key_digests:
            auth = headers.get("Authorization", "")
            scheme, space, credential = auth.partition(" ")
            # Bearer is ours; Token is how Deepgram's clients send their key (docs/deepgram.md).
            key = credential.strip() if space and scheme.lower() in ("bearer", "token") else query.get("token", "")
            if not key:
                key = subprotocol_key(headers)
            if not key:
                return Refusal(401, p.UNAUTHORIZED, "An API key is required: Authorization: Bearer KEY or ?token=KEY")
            digest = _digest(key)
            # Compare with every key so the time taken does not tell which one nearly matched.
            matched = False
            for known in self.key_digests:
                matched |= hmac.compare_digest(digest, known)
            if not matched:
                return Refusal(401, p.UNAUTHORIZED, "Invalid API key")
        origin = headers.get("Origin")
        if self.origins and origin is not None and origin.rstrip("/") not in self.origins:
            return Refusal(403, p.UNAUTHORIZED, "Origin not allowed")
        return None

    def open(self, ip: str, now: float | None = None) -> Refusal | None:
        """Counts a connection from ``ip``; refuses it past either limit."""
        if self.max_per_ip and self.open_by_ip.get(ip, 0) >= self.max_per_ip:
            return Refusal(429, p.RATE_LIMITED, f"Too many connections from this address (limit {self.max_per_ip})")
        wait = self.connect_rate.take(ip, time.monotonic() if now is None else now)
        if wait:
            return Refusal(429, p.RATE_LIMITED,
                           f"Too many new connections from this address: at most {self.connect_rate.per_minute} "
                           f"per minute; retry in {math.ceil(wait)} s")
        self.open_by_ip[ip] = self.open_by_ip.get(ip, 0) + 1
        return None

    def close(self, ip: str) -> None:
        left = self.open_by_ip.get(ip, 0) - 1
        if left > 0:
            self.open_by_ip[ip] = left
        else:
            self.open_by_ip.pop(ip, None)
