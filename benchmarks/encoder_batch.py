"""Does batching encoder passes across sessions pay on this machine? CPU per utterance when the
encoder runs 1, 2, 4 or 8 utterances in one call.

    .venv/bin/python -m benchmarks.encoder_batch [--device cpu] [--batches 1,2,4,8] [--windows 15,30]

Issue H asks for batching across sessions "where a GPU gains from it". Whisper's encoder is most
of a decode's cost on tiny.en (a 30 s window's encoder pass is about 0.4 s of CPU here, the same as
a whole final of a few words), so if one call over N sessions' windows cost less than N calls, the
ASR worker would gain by collecting finals from several sessions before decoding. This times just
that: the worker's model (``Transcriber``'s options: model, compute type, one CTranslate2 thread)
encodes the mel features of 8 sentence clips of the corpus, cut to each window, in batches of each
size, three rounds; the figure is CPU seconds of this process (``time.process_time``) per utterance,
and wall time per utterance beside it. Not a test.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import ctranslate2
import numpy as np

from asr_worker.asr_settings import AsrSettings
from asr_worker.transcriber import Transcriber, resolve_model_path
from asr_worker.worker import transcriber_options
from benchmarks.context_replay import pcm_of
from benchmarks.corpus import build
from common.settings import load

UTTERANCES = 8
ROUNDS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", default="1,2,4,8", help="utterances per encoder call")
    parser.add_argument("--windows", default="15,30", help="encoder windows, seconds")
    args = parser.parse_args()
    settings = load()
    options = replace(transcriber_options(AsrSettings.from_settings(settings)), device=args.device)
    model = Transcriber(options)._model  # faster-whisper's WhisperModel: its feature extractor and encoder
    clips = [c for c in build() if c.kind == "sentence"][:UTTERANCES]
    features = [model.feature_extractor(pcm_of(c.path).astype(np.float32) / 32768.0, padding=480_000)[:, :3000]
                for c in clips]
    print(f"model {resolve_model_path(options.model)}, {options.compute_type}, {options.cpu_threads} thread(s), "
          f"device {args.device}, {UTTERANCES} sentence clips, {ROUNDS} rounds")
    print(f"{'window':>7} {'batch':>6} {'CPU ms per utterance':>21} {'wall ms per utterance':>22}")
    for window in (float(w) for w in args.windows.split(",")):
        frames = int(window * 100)
        stacked = np.stack([f[:, :frames] for f in features]).astype(np.float32)
        for batch in (int(b) for b in args.batches.split(",")):
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(ROUNDS):
                for i in range(0, UTTERANCES, batch):
                    view = ctranslate2.StorageView.from_array(np.ascontiguousarray(stacked[i:i + batch]))
                    model.model.encode(view, to_cpu=False)
            n = ROUNDS * UTTERANCES
            print(f"{window:6.0f}s {batch:6d} {(time.process_time() - cpu) / n * 1000:21.1f} "
                  f"{(time.perf_counter() - wall) / n * 1000:22.1f}")


if __name__ == "__main__":
    main()
