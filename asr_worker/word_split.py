"""Where a revision's words end: one decode of two finals' audio, split between the two finals.

A revision decodes final n-1 with final n's audio after it (`Transcriber.revise`) and keeps the
words that belong to n-1. Word times alone draw that line badly at one place: Whisper stretches a
sentence's last word over the pause after it, and VAD cut that pause out of both finals, so the
last word's middle often lies in n's audio and the word went to n (in an accuracy run of
2026-12-06, 4 of 94 revisions lost n-1's last word that way: "...drove across it." ->
"...drove across"). The words of final n as it was published tell where n begins in the
revision's decode: a word whose times straddle the boundary goes to the side after which the
revision's words read most like n's text; ties, and words wholly on one side, keep the times'
choice (`split_index`).
"""

from __future__ import annotations

from collections.abc import Sequence

from asr_worker.hallucinations import normalise

REACH = 2
"""Words the split may move either way from where the word times put it."""


def _distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Word-level edit distance (insertions, deletions, substitutions)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def split_index(words: Sequence[tuple[str, float, float]], until_s: float, following: str,
                reach: int = REACH) -> int:
    """How many of ``words`` ((word, start, end) in seconds, in order: a decode of a final's audio,
    which ends at ``until_s``, followed by the next final's) belong to the final. The times say:
    those whose middle lies before ``until_s``. A word that straddles ``until_s`` (starts before it
    and ends after it) may cross to the other side, at most ``reach`` of them, when the words after
    the split then read closer to ``following``, the next final's own text (edit distance over
    normalised words; ties keep the times' split). A word wholly on one side never crosses, so a
    word the next final's first decode missed is not pulled into this one. Without ``following``
    the times decide."""
    by_times = sum((start + end) / 2 < until_s for _, start, end in words)
    target = normalise(following).split()
    if not target:
        return by_times
    lo = by_times
    while lo > max(0, by_times - reach) and words[lo - 1][2] > until_s:  # ends past the boundary
        lo -= 1
    hi = by_times
    while hi < min(len(words), by_times + reach) and words[hi][1] < until_s:  # starts before it
        hi += 1
    if lo == hi:
        return by_times
    normal = [normalise(w).split() for w, _, _ in words[lo:]]  # no split comes before lo

    def cost(k: int) -> tuple[int, int]:
        rest = [t for ws in normal[k - lo:] for t in ws]
        return _distance(rest, target), abs(k - by_times)

    return min(range(lo, hi + 1), key=cost)
