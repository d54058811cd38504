"""How sure a per-kind WER difference is: a paired bootstrap over the clips of each kind.

    .venv/bin/python -m benchmarks.paired_bootstrap benchmarks/accuracy.json [--resamples 10000] [--seed 0]

M asks for the pipeline's WER at or below direct faster-whisper's on every kind of clip. A kind
holds 200-1,000 reference words, and tiny.en's texts on degraded audio change with one LSB of
noise (docs/benchmarks.md, "How much of the noise and telephone gap is real"), so a difference of a
few words may say nothing about which is better. This reads an accuracy run's JSON
(`benchmarks.accuracy --json`) and, for each kind, draws the kind's clips with replacement
``--resamples`` times, each time computing pipeline WER minus direct WER on the same drawn clips
(paired: both sides always score the same clips). It prints the observed difference, its 95 %
interval and the share of draws in which the pipeline was worse.

Errors per clip are word edits after the accuracy benchmark's normalisation; direct's are the mean
over its seeds, the pipeline's the mean over its passes, as in the accuracy table. A clip is the
unit drawn because errors within one clip are not independent (one misheard sentence, one loop).
Not a test: it says how far a run's numbers can be trusted, not whether a goal is met.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jiwer
import numpy as np

from benchmarks.corpus import NO_SPEECH
from benchmarks.wer import normalise


@dataclass(frozen=True, slots=True)
class ClipErrors:
    """One clip: its reference words and the word edits each side made (means over seeds/passes)."""

    words: int
    direct: float
    pipeline: float


@dataclass(frozen=True, slots=True)
class Interval:
    """Pipeline WER minus direct WER over a set of clips, with its bootstrap distribution."""

    clips: int
    words: int
    difference: float
    low: float
    high: float
    worse_share: float
    """Share of draws in which the pipeline's WER was above direct's."""


def word_edits(reference: str, hypothesis: str) -> int:
    """Substitutions, deletions and insertions after normalisation (`benchmarks.wer.normalise`)."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        return len(hyp.split())
    out = jiwer.process_words(ref, hyp)
    return int(out.substitutions + out.deletions + out.insertions)


def errors_of(reference: str, direct: list[str], pipeline: list[str]) -> ClipErrors:
    """One clip from its reference and each side's texts (direct's seeds, the pipeline's passes)."""
    return ClipErrors(
        words=len(normalise(reference).split()),
        direct=float(np.mean([word_edits(reference, t) for t in direct])),
        pipeline=float(np.mean([word_edits(reference, t) for t in pipeline])),
    )


def clip_errors(clip: dict[str, Any]) -> ClipErrors:
    """A clip of an accuracy JSON (its ``segments``, ``direct_seeds`` and ``pipeline_runs``)."""
    return errors_of(" ".join(s["text"] for s in clip["segments"]),
                     clip.get("direct_seeds") or [clip["direct"]], clip.get("pipeline_runs") or [clip["pipeline"]])


def paired_interval(clips: list[ClipErrors], resamples: int = 10000, seed: int = 0,
                    confidence: float = 0.95) -> Interval:
    """The observed difference and its bootstrap interval, drawing whole clips with replacement."""
    if not clips or resamples < 1:
        raise ValueError("need at least one clip and one resample")
    words = np.array([c.words for c in clips], dtype=np.float64)
    if words.sum() == 0:
        raise ValueError("the clips hold no reference words")
    gap = np.array([c.pipeline - c.direct for c in clips], dtype=np.float64)
    draws = np.random.default_rng(seed).integers(0, len(clips), size=(resamples, len(clips)))
    drawn_words = words[draws].sum(axis=1)
    drawn_gap = gap[draws].sum(axis=1)
    # A draw of only word-less clips has no WER; it counts as no difference.
    diffs = np.divide(drawn_gap, drawn_words, out=np.zeros(resamples), where=drawn_words > 0)
    tail = (1 - confidence) / 2
    return Interval(
        clips=len(clips), words=int(words.sum()), difference=float(gap.sum() / words.sum()),
        low=float(np.quantile(diffs, tail)), high=float(np.quantile(diffs, 1 - tail)),
        worse_share=float(np.mean(diffs > 0)),
    )


def by_kind(run: dict[str, Any], resamples: int = 10000, seed: int = 0) -> dict[str, Interval]:
    """One interval per kind of speech clip in an accuracy JSON, and one over all of them."""
    kinds: dict[str, list[ClipErrors]] = {}
    for clip in run["clips"]:
        if clip["kind"] not in NO_SPEECH:
            kinds.setdefault(clip["kind"], []).append(clip_errors(clip))
    out = {kind: paired_interval(group, resamples, seed) for kind, group in kinds.items()}
    out["all speech"] = paired_interval([c for group in kinds.values() for c in group], resamples, seed)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path, help="an accuracy run's JSON (benchmarks.accuracy --json)")
    parser.add_argument("--resamples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run = json.loads(args.json.read_text())
    print(f"{args.json}: commit {run.get('commit', '?')}, {run.get('machine', '?')}")
    print(f"{'kind':13} {'clips':>5} {'words':>6} {'pipeline - direct':>18} {'95 % interval':>18} {'worse in':>9}")
    for kind, r in by_kind(run, args.resamples, args.seed).items():
        print(f"{kind:13} {r.clips:5d} {r.words:6d} {r.difference:+18.3f} "
              f"{f'{r.low:+.3f} .. {r.high:+.3f}':>18} {r.worse_share:8.0%}")


if __name__ == "__main__":
    main()
