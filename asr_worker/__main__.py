"""python -m asr_worker: load the model, then take jobs until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from asr_worker.transcriber import ModelLoadError, Transcriber
from asr_worker.worker import AsrWorker, transcriber_options
from common import logs
from common.settings import SettingsError, load

log = logging.getLogger("asr_worker")


async def _main() -> None:
    settings = load()
    logs.setup(settings, "asr")
    logs.log_config(settings, "asr")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    transcriber = await asyncio.to_thread(Transcriber, transcriber_options(settings))
    await AsrWorker(settings, transcriber).run(stop)


def main() -> int:
    try:
        asyncio.run(_main())
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    except ModelLoadError as exc:
        print(f"asr worker: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
