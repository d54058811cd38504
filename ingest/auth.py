"""Who may open a stream: API keys, allowed origins and a per-address connection limit.

Checked before the WebSocket upgrade, so a refused client costs one small HTTP answer. API keys
are kept only as SHA-256 digests and compared in constant time; they never reach logs or metrics.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from common.settings import Settings
from ingest import protocol as p


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int  # HTTP status of the answer
    code: str  # error code of the client contract
    message: str


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass
class Gatekeeper:
    key_digests: tuple[bytes, ...]
    origins: frozenset[str]
    max_per_ip: int
    open_by_ip: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> Gatekeeper:
        keys = tuple(_digest(k.strip()) for k in settings.api_keys.split(",") if k.strip())
        origins = frozenset(o.strip().rstrip("/") for o in settings.allowed_origins.split(",") if o.strip())
        return cls(keys, origins, settings.max_connections_per_ip)

    def check(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Refusal | None:
        """Authentication and origin; None when the request may go on."""
        if self.key_digests:
            auth = headers.get("Authorization", "")
            key = auth[7:].strip() if auth[:7].lower() == "bearer " else query.get("token", "")
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

    def open(self, ip: str) -> Refusal | None:
        """Counts a connection from ``ip``; refuses it past the limit."""
        if self.max_per_ip and self.open_by_ip.get(ip, 0) >= self.max_per_ip:
            return Refusal(429, p.RATE_LIMITED, f"Too many connections from this address (limit {self.max_per_ip})")
        self.open_by_ip[ip] = self.open_by_ip.get(ip, 0) + 1
        return None

    def close(self, ip: str) -> None:
        left = self.open_by_ip.get(ip, 0) - 1
        if left > 0:
            self.open_by_ip[ip] = left
        else:
            self.open_by_ip.pop(ip, None)
