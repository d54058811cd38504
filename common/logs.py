"""Logging setup, called only from each role's ``__main__``.

Text lines are compact (``%(asctime)s role LEVEL logger: message``); ``log_format = "json"``
writes one JSON object per line with the same fields plus ``session_id``. Code that works for one
session logs through ``for_session(log, session_id)``: the id starts every text line and is a
field of every JSON line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from common.settings import Settings


class _JsonFormatter(logging.Formatter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "role": self.role,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        session_id = getattr(record, "session_id", None)
        if session_id:
            out["session_id"] = session_id
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


class SessionLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger for one session: ``session <id>:`` before the message, ``session_id`` in extra."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        session_id = self.extra["session_id"] if self.extra else ""
        kwargs["extra"] = {**kwargs.get("extra", {}), "session_id": session_id}
        return f"session {session_id}: {msg}", kwargs


def for_session(logger: logging.Logger, session_id: str) -> SessionLog:
    return SessionLog(logger, {"session_id": session_id})


def setup(settings: Settings, role: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(_JsonFormatter(role))
    else:
        fmt = logging.Formatter(f"%(asctime)s.%(msecs)03d {role} %(levelname)s %(name)s: %(message)s",
                                datefmt="%H:%M:%S")
        fmt.converter = time.gmtime
        handler.setFormatter(fmt)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for noisy in ("aiohttp.access", "faster_whisper", "nats"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def log_config(settings: Settings, role: str) -> None:
    logging.getLogger(f"{role}.config").info(
        "effective configuration: %s", json.dumps(settings.masked(), sort_keys=True)
    )
