"""python -m ingest: run one edge."""

from __future__ import annotations

import sys

from aiohttp import web

from common import logs
from common.settings import SettingsError, load
from ingest.app import init


def main() -> int:
    try:
        settings = load()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    logs.setup(settings, "ingest")
    logs.log_config(settings, "ingest")
    web.run_app(init(settings), host=settings.host, port=settings.port, print=None,
                access_log=None, shutdown_timeout=settings.drain_timeout_seconds + 10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
