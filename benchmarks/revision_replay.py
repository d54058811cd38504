"""Revisions measured on the pipeline's own cuts: WER by kind of clip with each final as first
decoded, and with the finals before the last revised (decoded again with the next final's audio
after it, `Transcriber.revise`) when the first decode's ``avg_logprob`` is below a bound, for a
sweep of bounds (``revision_max_logprob``; "none" revises nothing, "all" every final).

    .venv/bin/python -m benchmarks.revision_replay benchmarks/accuracy.json [--kinds noisy10,...]
        [--bounds=-1,-0.5,-0.3,-0.2] [--margins=-0.1,0,0.1]

Reads a JSON written by ``benchmarks.accuracy`` (its clips, the audio files in the corpus cache,
where each final starts and ends, and direct faster-whisper's text of each whole file), cuts each
clip where the pipeline cut it and decodes every cut with the ASR worker's own ``Transcriber``
as the worker does (prompt, acoustic context for noisy finals), then revises every final but
the last, with the next final's first-pass text to split the words by (as the worker does), in
this process. Same cuts and model for every bound: only which revisions are kept
differs. Prints WER by kind, how many finals each bound revises, and the decoding time of first
passes and revisions. Not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asr_worker.asr_settings import AsrSettings
from asr_worker.prompt import next_prompt
from asr_worker.transcriber import SAMPLE_RATE, Transcriber
from asr_worker.worker import transcriber_options
from benchmarks.context_replay import contexts, pcm_of
from benchmarks.wer import corpus_wer
from common.settings import Settings, load


@dataclass(slots=True)
class Replayed:
    reference: str
    direct: str
    first: list[str] = field(default_factory=list)
    logprob: list[float] = field(default_factory=list)
    revised: list[str | None] = field(default_factory=list)  # None: the last final, or nothing heard
    revised_logprob: list[float] = field(default_factory=list)

    def _kept(self, bound: float, margin: float | None) -> list[bool]:
        """Per final: whether ``bound`` (>= 0: every final) keeps its revision; with a ``margin``,
        only a revision whose ``avg_logprob`` exceeds the first pass's by more than it."""
        return [rev is not None and (bound >= 0 or lp < bound) and (margin is None or rlp > lp + margin)
                for lp, rev, rlp in zip(self.logprob, self.revised, self.revised_logprob, strict=True)]

    def text(self, bound: float, margin: float | None = None) -> str:
        """The clip's finals with the revisions a bound (and margin) keeps."""
        out = [rev if kept else first
               for first, rev, kept in zip(self.first, self.revised, self._kept(bound, margin), strict=True)]
        return " ".join(t for t in out if t)

    def revisions(self, bound: float, margin: float | None = None) -> int:
        return sum(self._kept(bound, margin))


def replay(clip: dict[str, Any], transcriber: Transcriber, settings: Settings, seconds: dict[str, float]) -> Replayed:
    finals = clip["finals"]
    audio = pcm_of(str(clip["path"]))
    cuts = [audio[int(f["start_s"] * SAMPLE_RATE): int(f["end_s"] * SAMPLE_RATE)].tobytes() for f in finals]
    heard = contexts(cuts, settings.acoustic_context_seconds, settings.acoustic_context_max_snr_db)
    out = Replayed(" ".join(s["text"] for s in clip["segments"]), str(clip["direct"]))
    prompts, prompt = [], ""
    start = time.perf_counter()
    for cut, context in zip(cuts, heard, strict=True):
        prompts.append(prompt)
        rec = transcriber.transcribe(cut, is_final=True, prompt=prompt, context=context)
        out.first.append(rec.text)
        out.logprob.append(rec.avg_logprob)
        prompt = next_prompt(prompt, rec.text, settings.context_chars)
    seconds["first"] += time.perf_counter() - start
    start = time.perf_counter()
    for i in range(len(cuts)):
        rev = transcriber.revise(cuts[i], cuts[i + 1], prompt=prompts[i],
                                 following_text=out.first[i + 1]) if i + 1 < len(cuts) else None
        out.revised.append(rev.text if rev is not None and rev.text else None)
        out.revised_logprob.append(rev.avg_logprob if rev is not None else 0.0)
    seconds["revisions"] += time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path, help="a JSON written by benchmarks.accuracy")
    parser.add_argument("--kinds", default="continuous,conversation,noisy20,noisy10,telephone")
    parser.add_argument("--bounds", default="-1,-0.5,-0.4,-0.3,-0.2,-0.1",
                        help="revision_max_logprob values to score, besides none and all")
    parser.add_argument("--margins", default="",
                        help="also score, at each bound, keeping only revisions whose avg_logprob is above the "
                             "first pass's plus each of these margins (e.g. -0.1,0,0.1)")
    args = parser.parse_args()
    settings = load()
    transcriber = Transcriber(transcriber_options(AsrSettings.from_settings(settings)))
    kinds = args.kinds.split(",")
    rows: dict[str, list[Replayed]] = {k: [] for k in kinds}
    seconds = {"first": 0.0, "revisions": 0.0}
    clips = [c for c in json.loads(args.json.read_text())["clips"] if c["kind"] in kinds and c["finals"]]
    for i, clip in enumerate(clips):
        rows[clip["kind"]].append(replay(clip, transcriber, settings, seconds))
        print(f"  {i + 1}/{len(clips)} {clip['name']}", file=sys.stderr, flush=True)
    bounds = [("none", -1e9), *((b, float(b)) for b in args.bounds.split(",")), ("all", 0.0)]
    print(f"{'bound':>6} " + " ".join(f"{k:>12}" for k in kinds) + "   revised finals")
    direct = [corpus_wer([r.reference for r in rows[k]], [r.direct for r in rows[k]]) for k in kinds]
    print(f"{'direct':>6} " + " ".join(f"{w:12.3f}" for w in direct))
    candidates = sum(len(r.first) - 1 for k in kinds for r in rows[k])
    margins: list[float | None] = [None, *(float(m) for m in args.margins.split(",") if m)]
    for margin in margins:
        if margin is not None:
            print(f"only revisions with avg_logprob above the first pass's {margin:+g}:")
        for name, bound in bounds:
            wers = [corpus_wer([r.reference for r in rows[k]], [r.text(bound, margin) for r in rows[k]])
                    for k in kinds]
            revised = sum(r.revisions(bound, margin) for k in kinds for r in rows[k])
            print(f"{name:>6} " + " ".join(f"{w:12.3f}" for w in wers) + f"   {revised}/{candidates}")
    print(f"\ncuts from {args.json}; decoding: first passes {seconds['first']:.0f} s, every revision "
          f"{seconds['revisions']:.0f} s")


if __name__ == "__main__":
    main()
