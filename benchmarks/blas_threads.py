"""CPU and wall time of one final's decode against numpy's OpenBLAS thread count.

    .venv/bin/python -m benchmarks.blas_threads [--threads 1,2] [--repeats 5] [--rounds 2]

Each (threads, round) is a fresh process, since OpenBLAS reads OPENBLAS_NUM_THREADS once at
start-up. It decodes tests/data/three_utterances.wav (12 s, three sentences) as a final with the
ASR worker's own Transcriber and options, after one warm-up, and prints process CPU and wall per
decode. Why the worker runs one thread: common/blas.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CHILD = """
import resource, time, wave
from asr_worker.asr_settings import AsrSettings
from asr_worker.transcriber import Transcriber
from asr_worker.worker import transcriber_options
from common.settings import load
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
with wave.open("tests/data/three_utterances.wav") as w:
    pcm = w.readframes(w.getnframes())
t = Transcriber(transcriber_options(AsrSettings.from_settings(load())))
t.transcribe(pcm, is_final=True)
c0, w0 = cpu(), time.perf_counter()
for _ in range({repeats}):
    text = t.transcribe(pcm, is_final=True).text
print(f"{{(cpu() - c0) / {repeats} * 1000:.0f}} {{(time.perf_counter() - w0) / {repeats} * 1000:.0f}} {{text[:40]}}")
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.blas_threads", description=__doc__.split("\n")[0])
    p.add_argument("--threads", default="1,2", help="OPENBLAS_NUM_THREADS values (default 1,2)")
    p.add_argument("--repeats", type=int, default=5, help="decodes per process after the warm-up")
    p.add_argument("--rounds", type=int, default=2, help="processes per value, interleaved")
    args = p.parse_args(argv)
    print("| OPENBLAS_NUM_THREADS | round | CPU per decode (ms) | wall per decode (ms) | text |")
    print("| ---: | ---: | ---: | ---: | --- |")
    for round_ in range(1, args.rounds + 1):
        for threads in (x.strip() for x in args.threads.split(",") if x.strip()):
            env = dict(os.environ, OPENBLAS_NUM_THREADS=threads)
            out = subprocess.run([sys.executable, "-c", CHILD.format(repeats=args.repeats)], env=env,
                                 capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            cpu_ms, wall_ms, text = out.split(" ", 2)
            print(f"| {threads} | {round_} | {cpu_ms} | {wall_ms} | {text} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
