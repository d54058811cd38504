"""Acoustic context for finals, measured on the pipeline's own cuts: WER with each final decoded
alone (with the session's recent text as prompt, as the ASR worker does with
``acoustic_context_seconds`` 0) beside each final decoded after the audio of the finals before it,
as the VAD worker sends it (up to ``--context-seconds``, inside one decoding window, and only for
finals whose estimated SNR is below ``--max-snr-db``; 100 gives every final context).

    .venv/bin/python -m benchmarks.context_replay benchmarks/accuracy.json [--kinds noisy10,...]
        [--context-seconds 10] [--max-snr-db 30]

Reads a JSON written by ``benchmarks.accuracy`` (its clips, the audio files in the corpus cache and
the start and end of every final the pipeline made), cuts each clip's audio where the pipeline
cut it and decodes every cut with the ASR worker's own ``Transcriber`` (the settings' model,
compute type and beam) both ways, in this process. Same cuts, same model: only the context
differs. Prints WER by kind of clip and the decoding time of each way. Not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from faster_whisper.audio import decode_audio

from asr_worker.asr_settings import AsrSettings
from asr_worker.prompt import next_prompt
from asr_worker.transcriber import SAMPLE_RATE, Transcriber
from asr_worker.worker import transcriber_options
from benchmarks.wer import corpus_wer
from common.messages import DECODE_WINDOW_S
from common.settings import load
from vad_worker.session import final_context

WAYS = ("alone", "context")


def pcm_of(path: str) -> np.ndarray:
    audio = np.asarray(decode_audio(path, sampling_rate=SAMPLE_RATE), dtype=np.float32)
    pcm: np.ndarray = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    return pcm


def contexts(cuts: list[bytes], context_s: float, max_snr_db: float) -> list[bytes]:
    """What the VAD worker (``SessionVad``) sends with each final: the earlier finals' audio joined,
    its last ``context_s``, cut to fit one window with the final, if the final is noisy enough."""
    keep = int(context_s * SAMPLE_RATE) * 2
    window = int(DECODE_WINDOW_S * SAMPLE_RATE) * 2
    out, before = [], b""
    for cut in cuts:
        out.append(final_context(before, cut, max_snr_db, window))
        before = (before + cut)[-keep:] if keep else b""
    return out


def replay(clip: dict[str, Any], transcriber: Transcriber, context_s: float, max_snr_db: float,
           context_chars: int) -> dict[str, tuple[str, float]]:
    """Way -> (the clip's finals joined, seconds spent decoding)."""
    audio = pcm_of(clip["path"])
    cuts = [audio[int(f["start_s"] * SAMPLE_RATE): int(f["end_s"] * SAMPLE_RATE)].tobytes() for f in clip["finals"]]
    heard = contexts(cuts, context_s, max_snr_db)
    out = {}
    for way in WAYS:
        texts: list[str] = []
        prompt = ""
        start = time.perf_counter()
        for cut, context in zip(cuts, heard, strict=True):
            texts.append(transcriber.transcribe(cut, is_final=True, prompt=prompt,
                                                context=context if way == "context" else b"").text)
            prompt = next_prompt(prompt, texts[-1], context_chars)
        out[way] = (" ".join(t for t in texts if t), time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path, help="a JSON written by benchmarks.accuracy")
    parser.add_argument("--kinds", default="continuous,conversation,noisy20,noisy10,telephone")
    parser.add_argument("--context-seconds", type=float, default=10.0)
    parser.add_argument("--max-snr-db", type=float, default=30.0)
    args = parser.parse_args()
    settings = load()
    transcriber = Transcriber(transcriber_options(AsrSettings.from_settings(settings)))
    clips = [c for c in json.loads(args.json.read_text())["clips"] if c["kind"] in args.kinds.split(",")]
    rows: dict[str, dict[str, Any]] = {}
    for n, clip in enumerate(clips, 1):
        got = replay(clip, transcriber, args.context_seconds, args.max_snr_db, settings.context_chars)
        row = rows.setdefault(clip["kind"], {"refs": [], "direct": [], **{w: [] for w in WAYS},
                                             **{f"{w}_s": 0.0 for w in WAYS}})
        row["refs"].append(" ".join(s["text"] for s in clip["segments"]))
        row["direct"].append(clip["direct"])
        for way in WAYS:
            row[way].append(got[way][0])
            row[f"{way}_s"] += got[way][1]
        print(f"  {n}/{len(clips)} {clip['name']}", file=sys.stderr)
    print(f"\n{'kind':13} {'clips':>5} {'direct':>7} {'alone':>7} {'context':>8} {'alone s':>8} {'context s':>9}")
    for kind, row in rows.items():
        print(f"{kind:13} {len(row['refs']):5d} {corpus_wer(row['refs'], row['direct']):7.3f} "
              f"{corpus_wer(row['refs'], row['alone']):7.3f} {corpus_wer(row['refs'], row['context']):8.3f} "
              f"{row['alone_s']:8.1f} {row['context_s']:9.1f}")
    print(f"\ncontext {args.context_seconds} s below {args.max_snr_db} dB SNR; cuts and direct text from {args.json}")


if __name__ == "__main__":
    main()
