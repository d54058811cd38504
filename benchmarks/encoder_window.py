"""How long a window Whisper's encoder needs (``encoder_window_seconds``): WER and decoding CPU per
window, on the pipeline's own finals.

    .venv/bin/python -m benchmarks.encoder_window [--kinds sentence,conversation,...] [--windows 30,15,10]

faster-whisper pads every decode to Whisper's 30 s window, and the encoder's cost grows with the
window, while a final here is 1-10 s long. For each corpus clip of the kinds (``benchmarks.corpus``)
the clip goes through the VAD worker's own ``SessionVad`` in 100 ms messages (the settings'
endpointing, trailing pad and acoustic context, as ``benchmarks.trailing_pad`` replays it), and
every final is decoded with the ASR worker's ``Transcriber`` and the prompt the worker would give
it, once per window (``TranscriberOptions.window_s``; 30 is faster-whisper's own behaviour). Prints
WER by kind and overall, and the CPU seconds of decoding (``time.process_time`` of this process,
which runs one decode at a time). Not a test.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from asr_worker.asr_settings import AsrSettings
from asr_worker.transcriber import Transcriber
from asr_worker.worker import transcriber_options
from benchmarks.context_replay import pcm_of
from benchmarks.corpus import build
from benchmarks.trailing_pad import decode_finals, finals
from benchmarks.wer import corpus_wer
from common.settings import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="sentence,continuous,conversation,noisy20,noisy10,telephone")
    parser.add_argument("--windows", default="30,15,10", help="encoder windows to compare, seconds")
    args = parser.parse_args()
    settings = load()
    kinds = args.kinds.split(",")
    windows = [float(w) for w in args.windows.split(",")]
    options = transcriber_options(AsrSettings.from_settings(settings))
    transcribers = {w: Transcriber(replace(options, window_s=w)) for w in windows}
    refs: dict[str, list[str]] = {k: [] for k in kinds}
    hyps: dict[tuple[float, str], list[str]] = {(w, k): [] for w in windows for k in kinds}
    cpu: dict[tuple[float, str], float] = {(w, k): 0.0 for w in windows for k in kinds}
    started = time.perf_counter()
    for clip in [c for c in build() if c.kind in kinds]:
        cuts = finals(pcm_of(clip.path).tobytes(), settings.trailing_pad_ms, settings)
        refs[clip.kind].append(clip.reference)
        for window, transcriber in transcribers.items():
            cpu_start = time.process_time()
            hyps[window, clip.kind].append(decode_finals(cuts, transcriber, settings.context_chars))
            cpu[window, clip.kind] += time.process_time() - cpu_start
        print(f"{clip.name} ({time.perf_counter() - started:.0f} s)", flush=True)
    print(f"\nWER (decoding CPU s) by kind; beam {settings.beam_size}, model {settings.model} "
          f"{settings.compute_type}\n")
    print(f"| window (s) | {' | '.join(kinds)} | all | CPU s |\n| ---: |{' ---: |' * (len(kinds) + 2)}")
    for w in windows:
        row = [f"{corpus_wer(refs[k], hyps[w, k]):.3f} ({cpu[w, k]:.0f})" for k in kinds]
        every = corpus_wer([r for k in kinds for r in refs[k]], [h for k in kinds for h in hyps[w, k]])
        print(f"| {w:g} | {' | '.join(row)} | {every:.3f} | {sum(cpu[w, k] for k in kinds):.0f} |")


if __name__ == "__main__":
    main()
