"""VAD throughput: threads in one process vs processes.

Runs the VAD worker's own per-session engine (SessionVad: webrtcvad + Segmenter, default
settings) over N sessions of the committed speech, spread over a ThreadPoolExecutor of T threads
(what vad_thread_pool_size sets) or a ProcessPoolExecutor of P processes (what more VAD worker
processes give), and prints audio seconds processed per wall second. Appends a section to
benchmarks/RESULTS.md with --out.

    .venv/bin/python -m benchmarks.vad_scaling --sessions 32 --repeat 3 --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from common.settings import Settings
from tests.conftest import pcm_of
from vad_worker.session import Chunk, SessionVad, segmenter_options

BYTES_PER_S = 32000
CHUNK = 3200


def one_session(_: int) -> int:
    """VAD over the speech in 100 ms messages, as a worker sees it; returns frames classified."""
    settings = Settings()
    state = SessionVad("bench", segmenter_options(settings), settings.vad_aggressiveness)
    pcm = pcm_of("three_utterances.wav") * 2
    frames = 0
    for seq, offset in enumerate(range(0, len(pcm), CHUNK), start=1):
        state.process([Chunk(seq, "audio", pcm[offset : offset + CHUNK])])
        frames += state.frames
        state.frames = 0
    return frames


def measure(make: Callable[[], Executor], sessions: int, repeat: int) -> float:
    """Best of ``repeat``: audio seconds per wall second."""
    audio_s = sessions * len(pcm_of("three_utterances.wav")) * 2 / BYTES_PER_S
    best = 0.0
    with make() as pool:
        list(pool.map(one_session, range(2)))  # warm the workers up
        for _ in range(repeat):
            t0 = time.perf_counter()
            list(pool.map(one_session, range(sessions)))
            best = max(best, audio_s / (time.perf_counter() - t0))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    configs: list[tuple[str, Callable[[], Executor]]] = [
        ("1 thread", lambda: ThreadPoolExecutor(1)),
        ("2 threads", lambda: ThreadPoolExecutor(2)),
        ("4 threads (default vad_thread_pool_size)", lambda: ThreadPoolExecutor(4)),
        ("1 process", lambda: ProcessPoolExecutor(1)),
        ("2 processes", lambda: ProcessPoolExecutor(2)),
    ]
    rows = []
    for name, make in configs:
        rate = measure(make, args.sessions, args.repeat)
        rows.append((name, rate))
        print(f"{name:45s} {rate:8.0f} audio s / wall s")
    base = rows[0][1]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    lines = [
        f"## Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: VAD threads vs processes",
        "",
        f"Command: `.venv/bin/python -m benchmarks.vad_scaling --sessions {args.sessions} --repeat {args.repeat}`",
        "",
        f"- cpus: {os.cpu_count()} (usable: {len(os.sched_getaffinity(0))}); python {platform.python_version()}",
        f"- commit: {commit}; load: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min, at end)",
        f"- work: {args.sessions} sessions × 26 s of speech in 100 ms messages through SessionVad "
        "(webrtcvad mode 2, 30 ms frames); best of the repeats",
        "",
        "| executor | audio s per wall s | × 1 thread |",
        "| --- | --- | --- |",
        *(f"| {name} | {rate:.0f} | {rate / base:.2f} |" for name, rate in rows),
        "",
    ]
    print("\n".join(lines))
    if args.out:
        with args.out.open("a") as f:
            f.write("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
