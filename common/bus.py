"""Connecting to NATS and leaving it, the same way in every role."""

from __future__ import annotations

import asyncio
import logging

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from common.settings import Settings
from common.streams import ensure_streams

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 5.0


async def connect(settings: Settings, name: str) -> NATS:
    async def on_error(exc: Exception) -> None:
        log.warning("nats: %s", exc or type(exc).__name__)

    async def on_disconnect() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("nats: disconnected, reconnecting")

    async def on_reconnect() -> None:
        log.info("nats: reconnected")

    nc = NATS()
    await nc.connect(
        settings.nats_url.split(","), name=name, max_reconnect_attempts=-1, reconnect_time_wait=1,
        connect_timeout=5, error_cb=on_error, disconnected_cb=on_disconnect, reconnected_cb=on_reconnect,
    )
    return nc


async def connect_jetstream(settings: Settings, name: str) -> tuple[NATS, JetStreamContext]:
    """Connects, and makes sure every stream and consumer of the system exists."""
    nc = await connect(settings, name)
    js = nc.jetstream(timeout=settings.publish_timeout_seconds)
    await ensure_streams(js, settings)
    return nc, js


async def close(nc: NATS) -> None:
    """Drains (delivers what is buffered) within a bound, then closes whatever state the bus is in."""
    try:
        await asyncio.wait_for(nc.drain(), DRAIN_TIMEOUT_S)
    except (TimeoutError, nats.errors.Error) as exc:
        log.warning("nats drain did not finish (%s): closing", exc or type(exc).__name__)
    if not nc.is_closed:
        await nc.close()
