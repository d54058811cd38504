"""python -m asr_worker: load the model, then take jobs until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import sys

from asr_worker.transcriber import ModelLoadError, Transcriber
from asr_worker.worker import AsrWorker, transcriber_options
from common.role import run_worker
from common.settings import Settings


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    transcriber = await asyncio.to_thread(Transcriber, transcriber_options(settings))
    await AsrWorker(settings, transcriber).run(stop)


def main() -> int:
    try:
        return run_worker("asr", serve)
    except ModelLoadError as exc:
        print(f"asr worker: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
