"""python -m asr_worker: load the model, then take jobs until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import sys

from asr_worker.asr_settings import AsrSettings
from asr_worker.transcriber import ModelLoadError, Transcriber
from asr_worker.worker import AsrWorker, transcriber_options
from common.role import run_worker


async def serve(settings: AsrSettings, stop: asyncio.Event) -> None:
    transcriber = await asyncio.to_thread(Transcriber, transcriber_options(settings))
    await AsrWorker(settings, transcriber).run(stop)


def main() -> int:
    try:
        return run_worker("asr", AsrSettings, serve)
    except ModelLoadError as exc:
        print(f"asr worker: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
