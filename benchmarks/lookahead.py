"""What a streaming final cannot have: the audio after it. On the pipeline's own cuts, each clip's
first and last final decoded three ways with the ASR worker's model and beam, WER on that
sentence only:

* ``alone``: the cut by itself (what a first final gets: there is no audio before it);
* ``after``: the cut followed by the next final's audio in the same window, keeping the words
  whose middle lies before the boundary (what faster-whisper on the whole file has and a
  streaming final never does, unless it waits for the next utterance);
* ``before`` (last final): the cut after up to ``--context-seconds`` of the audio before it,
  keeping the words past the boundary (what ``acoustic_context_seconds`` gives a final).

    .venv/bin/python -m benchmarks.lookahead benchmarks/accuracy.json [--kinds noisy10,...]

Reads a JSON written by ``benchmarks.accuracy`` (clips, corpus audio, where each final starts and
ends), and uses the clips the pipeline cut into as many finals as the reference has sentences, so
that a final is a sentence. Tells how much of the gap to direct faster-whisper on a kind of clip
lies in first finals (future audio) and how much in later ones (past audio). Not a test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from asr_worker.transcriber import SAMPLE_RATE, resolve_model_path
from benchmarks.context_replay import pcm_of
from benchmarks.wer import corpus_wer
from common.settings import load


def decode(model: Any, pcm: np.ndarray, beam: int, *, before_s: float | None = None,
           after_s: float | None = None) -> str:
    """Text of ``pcm``; with ``before_s`` only the words whose middle lies before it, with
    ``after_s`` only those whose middle lies after it."""
    cut = before_s is not None or after_s is not None
    segments, _ = model.transcribe(pcm.astype(np.float32) / 32768.0, language="en", beam_size=beam,
                                   condition_on_previous_text=False, word_timestamps=cut, vad_filter=False)
    if not cut:
        return " ".join(s.text.strip() for s in segments)
    words = [w.word for s in segments for w in (s.words or ())
             if (before_s is None or (w.start + w.end) / 2 < before_s)
             and (after_s is None or (w.start + w.end) / 2 >= after_s)]
    return "".join(words).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path, help="a JSON written by benchmarks.accuracy")
    parser.add_argument("--kinds", default="noisy20,noisy10,telephone")
    parser.add_argument("--context-seconds", type=float, default=10.0)
    args = parser.parse_args()
    from faster_whisper import WhisperModel

    settings = load()
    model = WhisperModel(resolve_model_path(settings.model), device=settings.device,
                         compute_type=settings.compute_type, cpu_threads=settings.cpu_threads)
    clips = [c for c in json.loads(args.json.read_text())["clips"]
             if c["kind"] in args.kinds.split(",") and len(c["finals"]) == len(c["segments"]) >= 2]
    rows: dict[str, dict[str, list[str]]] = {}
    rate = SAMPLE_RATE
    for clip in clips:
        audio, finals = pcm_of(clip["path"]), clip["finals"]
        row = rows.setdefault(clip["kind"], {k: [] for k in ("ref_first", "alone_first", "after_first",
                                                            "ref_last", "alone_last", "before_last")})
        s0, e0, e1 = (int(finals[0]["start_s"] * rate), int(finals[0]["end_s"] * rate),
                      int(finals[1]["end_s"] * rate))
        row["ref_first"].append(clip["segments"][0]["text"])
        row["alone_first"].append(decode(model, audio[s0:e0], settings.beam_size))
        row["after_first"].append(decode(model, audio[s0:e1], settings.beam_size, before_s=(e0 - s0) / rate))
        sl, el = int(finals[-1]["start_s"] * rate), int(finals[-1]["end_s"] * rate)
        lead = max(0, sl - int(args.context_seconds * rate))
        row["ref_last"].append(clip["segments"][-1]["text"])
        row["alone_last"].append(decode(model, audio[sl:el], settings.beam_size))
        row["before_last"].append(decode(model, audio[lead:el], settings.beam_size, after_s=(sl - lead) / rate))
    print(f"{'kind':10} {'clips':>5}  first: {'alone':>6} {'after':>6}   last: {'alone':>6} {'before':>6}")
    for kind, row in rows.items():
        first = [corpus_wer(row["ref_first"], row[way]) for way in ("alone_first", "after_first")]
        last = [corpus_wer(row["ref_last"], row[way]) for way in ("alone_last", "before_last")]
        print(f"{kind:10} {len(row['ref_first']):5d}         {first[0]:6.3f} {first[1]:6.3f}"
              f"          {last[0]:6.3f} {last[1]:6.3f}")
    print(f"\ncuts from {args.json}; beam {settings.beam_size}; context before the last final {args.context_seconds} s")


if __name__ == "__main__":
    main()
