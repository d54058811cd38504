"""python -m vad_worker: run one VAD worker until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import sys

from common.role import run_worker
from vad_worker.vad_settings import VadSettings
from vad_worker.worker import VadWorker


async def serve(settings: VadSettings, stop: asyncio.Event) -> None:
    await VadWorker(settings).run(stop)


def main() -> int:
    return run_worker("vad", VadSettings, serve)


if __name__ == "__main__":
    sys.exit(main())
