"""Stopping the long-lived tasks a role owns.

``stop`` cancels and awaits, bounded; it cancels again while the task lives, because some library
calls (nats-py's KV helpers among them) swallow one cancellation and carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger(__name__)


async def stop(*tasks: asyncio.Task[Any], timeout: float = 5.0) -> None:
    live = {t for t in tasks if not t.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while live and loop.time() < deadline:
        for task in live:
            task.cancel()
        _, live = await asyncio.wait(live, timeout=min(0.5, max(0.0, deadline - loop.time())))
    for task in live:
        log.error("task %s did not stop within %.1f s", task.get_name(), timeout)
    for task in tasks:
        if task.done() and not task.cancelled():
            with contextlib.suppress(asyncio.CancelledError):
                exc = task.exception()
                if exc is not None:
                    log.error("task %s had failed: %r", task.get_name(), exc)
