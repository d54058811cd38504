"""Edge resampler: libsoxr (common.audio.StreamResampler) against the earlier numpy version.

Usage: .venv/bin/python -m benchmarks.resampler [--old PATH] [--seconds 60]

Streams a 440 Hz + 3.1 kHz tone mix at 8, 22.05, 44.1 and 48 kHz to 16 kHz in 100 ms chunks (as
the edge receives them) and prints CPU microseconds per chunk, the error against the exact 16 kHz
signal, and how much audio the resampler holds back between chunks (the latency it adds).
``--old`` points to a copy of the earlier common/audio.py, to compare with it in the same run:
``git show ad25e96:common/audio.py > /tmp/old_audio.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np

from common import audio

RATES = (8000, 22050, 44100, 48000)


def _signal(rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    out: np.ndarray = 6000 * np.sin(2 * np.pi * 440 * t) + 3000 * np.sin(2 * np.pi * 3100 * t)
    return out


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("old_audio", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(module: ModuleType, rate: int, seconds: float) -> dict[str, float]:
    src = _signal(rate, seconds)
    pcm = np.clip(np.rint(src), -32768, 32767).astype("<i2").tobytes()
    chunk = rate // 10 * 2
    resampler = module.StreamResampler(rate, audio.TARGET_RATE)
    pieces = []
    held = []  # ms of input not yet turned into output after each chunk (the resampler's added latency)
    n_in = n_out = 0
    cpu0 = time.process_time()
    for off in range(0, len(pcm), chunk):
        pieces.append(resampler.process(pcm[off : off + chunk]))
        n_in += len(pcm[off : off + chunk]) // 2
        n_out += len(pieces[-1]) // 2
        held.append(n_in / rate * 1000 - n_out / audio.TARGET_RATE * 1000)
    pieces.append(resampler.flush())
    cpu = time.process_time() - cpu0
    out = np.frombuffer(b"".join(pieces), dtype="<i2").astype(np.float64)
    want = _signal(audio.TARGET_RATE, seconds)[: len(out)]
    inner = slice(1000, len(out) - 1000)
    err = out[inner] - want[inner]
    snr = 10 * np.log10(np.mean(want[inner] ** 2) / max(np.mean(err**2), 1e-12))
    n_chunks = -(-len(pcm) // chunk)
    return {"rate": rate, "us_per_chunk": cpu / n_chunks * 1e6, "snr_db": float(snr),
            "held_mean_ms": float(np.mean(held)), "held_max_ms": float(np.max(held))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.resampler", description=__doc__.split("\n")[0])
    p.add_argument("--old", type=Path, default=None, help="path of the earlier common/audio.py to compare")
    p.add_argument("--seconds", type=float, default=60.0, help="seconds of audio per rate (default 60)")
    p.add_argument("--json", type=Path, default=None, help="write the results here as JSON")
    args = p.parse_args(argv)
    impls = {"soxr": audio}
    if args.old is not None:
        impls["numpy (old)"] = _load(args.old)
    rows = [{"impl": name, **measure(mod, r, args.seconds)} for name, mod in impls.items() for r in RATES]
    print("| implementation | input rate | CPU µs per 100 ms chunk | SNR vs exact 16 kHz (dB) "
          "| audio held back, mean / max (ms) |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['impl']} | {row['rate']} | {row['us_per_chunk']:.0f} | {row['snr_db']:.1f} "
              f"| {row['held_mean_ms']:.1f} / {row['held_max_ms']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
