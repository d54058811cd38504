"""VAD throughput: threads in one process vs processes.

Runs the VAD worker's own per-session engine (SessionVad: webrtcvad + Segmenter, default
settings) over N sessions of the committed speech, split evenly over K workers: threads of one
ThreadPoolExecutor (what vad_thread_pool_size sets) or processes of a ProcessPoolExecutor (what
more VAD worker processes give; each process gets its share as one task, as a worker process owns
its shards), and prints audio seconds processed per wall second. Appends a section to
benchmarks/RESULTS.md with --out.

    .venv/bin/python -m benchmarks.vad_scaling --sessions 256 --repeat 5 --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from common.settings import Settings
from tests.conftest import pcm_of
from vad_worker.seq_order import Chunk
from vad_worker.session import SessionVad, segmenter_options
from vad_worker.vad_settings import VadSettings

BYTES_PER_S = 32000
CHUNK = 3200


def sessions_in_turn(count: int) -> int:
    """VAD over ``count`` sessions of the speech in 100 ms messages, as a worker sees them;
    returns frames classified."""
    settings = Settings()
    pcm = pcm_of("three_utterances.wav") * 2
    frames = 0
    for _ in range(count):
        state = SessionVad("bench", segmenter_options(VadSettings.from_settings(settings)), settings.vad_aggressiveness)
        for seq, offset in enumerate(range(0, len(pcm), CHUNK), start=1):
            state.process([Chunk(seq, "audio", pcm[offset : offset + CHUNK])])
        frames += state.frames
    return frames


def measure(configs: list[tuple[str, int, Executor]], sessions: int, repeat: int) -> list[float]:
    """Audio seconds per wall second of each config, best of ``repeat`` rounds; the configs take
    turns within each round, so a burst of load from elsewhere hits them alike."""
    audio_s = sessions * len(pcm_of("three_utterances.wav")) * 2 / BYTES_PER_S
    best = [0.0] * len(configs)
    for _, workers, pool in configs:
        list(pool.map(sessions_in_turn, [1] * workers))  # start and warm the workers up
    for _ in range(repeat):
        for i, (_, workers, pool) in enumerate(configs):
            t0 = time.perf_counter()
            list(pool.map(sessions_in_turn, [sessions // workers] * workers))
            best[i] = max(best[i], audio_s / (time.perf_counter() - t0))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    configs: list[tuple[str, int, Executor]] = [
        ("1 thread", 1, ThreadPoolExecutor(1)),
        ("2 threads", 2, ThreadPoolExecutor(2)),
        ("4 threads", 4, ThreadPoolExecutor(4)),
        ("1 process", 1, ProcessPoolExecutor(1)),
        ("2 processes", 2, ProcessPoolExecutor(2)),
    ]
    try:
        rates = measure(configs, args.sessions, args.repeat)
    finally:
        for _, _, pool in configs:
            pool.shutdown()
    rows = [(name, rate) for (name, _, _), rate in zip(configs, rates, strict=True)]
    for name, rate in rows:
        print(f"{name:20s} {rate:8.0f} audio s / wall s")
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
        "(webrtcvad mode 2, 30 ms frames), split evenly over the workers; best of the rounds, configs taking turns",
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
