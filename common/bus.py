"""Connecting to NATS and leaving it, the same way in every role.

After a reconnect, `connect_jetstream` makes sure every stream, consumer and bucket exists again:
a lone nats-server that restarts keeps its file streams but loses the ones in memory (the partial
and speculative job queues, the speculation cache)."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from common.bus_settings import BusSettings
from common.streams import ensure_streams

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 5.0


def setter(event: asyncio.Event) -> Callable[[Msg], Awaitable[None]]:
    """A subscription callback that sets ``event``: a core-NATS notice that something happened."""
    async def notice(_msg: Msg) -> None:
        event.set()
    return notice

# Work started by a reconnect, per connection; `close` cancels what is left of it.
_after_reconnect: weakref.WeakKeyDictionary[NATS, set[asyncio.Task[None]]] = weakref.WeakKeyDictionary()


async def connect(settings: BusSettings, name: str, reconnected: Callable[[], Awaitable[None]] | None = None) -> NATS:
    """``reconnected`` runs in a task of its own after each reconnect."""
    async def on_error(exc: Exception) -> None:
        log.warning("nats: %s", exc or type(exc).__name__)

    async def on_disconnect() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("nats: disconnected, reconnecting")

    async def on_reconnect() -> None:
        log.info("nats: reconnected")
        if reconnected is not None:
            tasks = _after_reconnect.setdefault(nc, set())
            task = asyncio.create_task(_logged(reconnected), name="after-reconnect")
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    nc = NATS()
    await nc.connect(
        settings.nats_url.split(","), name=name, max_reconnect_attempts=-1, reconnect_time_wait=1,
        connect_timeout=5, error_cb=on_error, disconnected_cb=on_disconnect, reconnected_cb=on_reconnect,
    )
    return nc


async def connect_jetstream(settings: BusSettings, name: str) -> tuple[NATS, JetStreamContext]:
    """Connects, and makes sure every stream and consumer of the system exists."""
    async def restore() -> None:
        await ensure_streams(js, settings)

    nc = await connect(settings, name, restore)
    js = nc.jetstream(timeout=settings.publish_timeout_seconds)
    await ensure_streams(js, settings)
    return nc, js


async def _logged(work: Callable[[], Awaitable[None]]) -> None:
    try:
        await work()
    except Exception as exc:  # the next reconnect tries again; the roles retry their own calls
        log.warning("nats: restoring streams after a reconnect failed: %s", exc or type(exc).__name__)


async def close(nc: NATS) -> None:
    """Drains (delivers what is buffered) within a bound, then closes whatever state the bus is in."""
    for task in _after_reconnect.pop(nc, set()):
        task.cancel()
    try:
        await asyncio.wait_for(nc.drain(), DRAIN_TIMEOUT_S)
    except (TimeoutError, nats.errors.Error) as exc:
        log.warning("nats drain did not finish (%s): closing", exc or type(exc).__name__)
    if not nc.is_closed:
        await nc.close()
