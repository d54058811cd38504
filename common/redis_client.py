"""One way to reach Redis: a plain URL, or the master that Redis Sentinels name.

``connect(settings)`` (a ``RedisSettings``: an edge's ``settings.redis``, or
``RedisSettings.from_settings``) returns a ``redis.asyncio.Redis``. With ``redis_sentinels`` empty
it is ``Redis.from_url(redis_url)``. With Sentinels set, the client asks them for the address of the
master ``redis_sentinel_master`` on every (re)connection, so after a failover (Sentinel promotes
the replica) the next command reaches the new master; ``redis_url`` still gives the password,
user name and database number (its host is ignored).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

from common.settings_view import SettingsView

SOCKET_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class RedisSettings(SettingsView):
    """The settings that say where Redis is (documented in ``common.settings.Settings``)."""

    redis_url: str
    redis_sentinels: str
    redis_sentinel_master: str


def sentinel_addresses(sentinels: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for entry in (x.strip() for x in sentinels.split(",") if x.strip()):
        host, _, port = entry.rpartition(":")
        out.append((host, int(port)))
    return out


def url_credentials(url: str) -> dict[str, Any]:
    """username, password and db of a redis:// URL (empty URL: database 0, no password)."""
    if not url:
        return {"db": 0}
    parts = urlsplit(url)
    path = parts.path.strip("/")
    creds: dict[str, Any] = {"db": int(path) if path.isdigit() else 0}
    if parts.username:
        creds["username"] = unquote(parts.username)
    if parts.password:
        creds["password"] = unquote(parts.password)
    if parts.scheme == "rediss":
        creds["ssl"] = True
    return creds


class SentinelMaster(aioredis.Redis):
    """The master's client; closing it also closes its connections to the Sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for sentinel in self.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
            await sentinel.aclose()


def connect(settings: RedisSettings, **kwargs: Any) -> aioredis.Redis:
    """A client for settings.redis_url, or for the Sentinel master when redis_sentinels is set.

    ``kwargs`` go to the client (e.g. ``decode_responses=True``). Nothing is sent until the first
    command, as with ``Redis.from_url``.
    """
    if not settings.redis_sentinels:
        return aioredis.Redis.from_url(settings.redis_url, **kwargs)
    creds = url_credentials(settings.redis_url)
    # The Sentinels themselves are asked without a password (their port stays inside the cluster).
    # Called through a typed alias: redis-py < 8.2 leaves Sentinel.__init__ unannotated, later
    # releases annotate it, and a "type: ignore" would be wrong for one of them.
    make_sentinel: Callable[..., Sentinel] = Sentinel
    sentinel = make_sentinel(
        sentinel_addresses(settings.redis_sentinels), socket_timeout=SOCKET_TIMEOUT_S,
    )
    client: aioredis.Redis = sentinel.master_for(
        settings.redis_sentinel_master, redis_class=SentinelMaster, socket_timeout=SOCKET_TIMEOUT_S,
        **creds, **kwargs,
    )
    return client
