"""How much of a WER difference on a few clips is real: the same clips again with inaudible noise.

    .venv/bin/python -m benchmarks.perturbation [--kinds telephone,noisy10,noisy20] [--seeds 1,2,3]

For each corpus clip of the kinds (``benchmarks.corpus``), decoded as it is and then with uniform
integer noise in [-1, 1] added to its 16 kHz PCM (one least significant bit, about -64 dB under
this corpus's speech) for each seed:

* **direct**: faster-whisper with its default options on the whole clip, as in
  ``benchmarks.accuracy``;
* **pipeline**: the clip through the VAD worker's ``SessionVad`` in 100 ms messages, every final
  decoded with the ASR worker's ``Transcriber`` and the prompt the worker would give it (the offline
  replay of ``benchmarks.trailing_pad``, at the configured ``trailing_pad_ms``).

Prints WER by kind for each run, then min / mean / max. A difference between direct and pipeline
smaller than the spread of either is not a finding. Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from asr_worker.asr_settings import AsrSettings
from asr_worker.transcriber import Transcriber, resolve_model_path
from asr_worker.worker import transcriber_options
from benchmarks.context_replay import pcm_of
from benchmarks.corpus import build
from benchmarks.trailing_pad import replay_text
from benchmarks.wer import corpus_wer
from common.settings import load


def perturbed(pcm: np.ndarray, seed: int | None) -> np.ndarray:
    """``pcm`` (int16) plus one LSB of uniform noise; unchanged for seed None."""
    if seed is None:
        return pcm
    noisy = pcm.astype(np.int32) + np.random.default_rng(seed).integers(-1, 2, len(pcm))
    out: np.ndarray = np.clip(noisy, -32768, 32767).astype("<i2")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="telephone,noisy10,noisy20")
    parser.add_argument("--seeds", default="1,2,3", help="noise seeds; the clips as they are always run first")
    args = parser.parse_args()
    from faster_whisper import WhisperModel

    settings = load()
    kinds = args.kinds.split(",")
    seeds: list[int | None] = [None, *(int(s) for s in args.seeds.split(","))]
    transcriber = Transcriber(transcriber_options(AsrSettings.from_settings(settings)))
    model = WhisperModel(resolve_model_path(settings.model), device=settings.device,
                         compute_type=settings.compute_type, cpu_threads=settings.cpu_threads,
                         local_files_only=True)
    started = time.perf_counter()
    results: dict[tuple[str, str], list[float]] = {}
    for kind in kinds:
        clips = [c for c in build() if c.kind == kind]
        refs = [c.reference for c in clips]
        for seed in seeds:
            direct, piped = [], []
            for clip in clips:
                pcm = perturbed(pcm_of(clip.path), seed)
                segments, _ = model.transcribe(pcm.astype(np.float32) / 32768)
                direct.append(" ".join(s.text.strip() for s in segments))
                piped.append(replay_text(pcm.tobytes(), settings.trailing_pad_ms, transcriber, settings))
            for way, hyps in (("direct", direct), ("pipeline", piped)):
                results.setdefault((kind, way), []).append(corpus_wer(refs, hyps))
            print(f"{kind} noise seed {seed}: direct {results[kind, 'direct'][-1]:.3f}, "
                  f"pipeline {results[kind, 'pipeline'][-1]:.3f} ({time.perf_counter() - started:.0f} s)", flush=True)
    print("\n| kind | way | runs | WER min | mean | max |\n| --- | --- | ---: | ---: | ---: | ---: |")
    for (kind, way), wers in results.items():
        print(f"| {kind} | {way} | {len(wers)} | {min(wers):.3f} | {statistics.mean(wers):.3f} | {max(wers):.3f} |")


if __name__ == "__main__":
    main()
