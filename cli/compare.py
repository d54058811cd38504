"""``asr replay --compare``: two transcripts of the same session, side by side. Pure, no I/O.

Per session, transcript A (the live one, or a replay under the baseline settings) is the
reference and B (the replay under ``--set``) the hypothesis:

* ``word_edits``: substitutions + deletions + insertions turning A's words into B's (words are
  lower-cased, punctuation dropped); ``word_diff_rate`` = word_edits / words of A (0: identical
  words; it is the WER of B against A).
* ``a.latency_s`` / ``b.latency_s``: mean final latency, end of speech seen by the VAD worker to
  the final published by the ASR worker; ``latency_diff_s`` = B − A (None when either is unknown).

The JSON document (:func:`report_json`) is ``{"a": LABEL, "b": LABEL, "sessions": [ROW, …],
"overall": ROW}`` with ROW = ``{"session_id", "a": SIDE, "b": SIDE, "word_edits",
"substitutions", "deletions", "insertions", "word_diff_rate", "latency_diff_s"}`` and SIDE =
``{"session_id", "finals", "words", "latency_s"}``; ``overall`` sums the counts over all
sessions (its ``session_id`` is ``"overall"``) and weights latencies by finals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cli.transcript_formats import Final


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


@dataclass(frozen=True, slots=True)
class WordDiff:
    substitutions: int
    deletions: int
    insertions: int

    @property
    def edits(self) -> int:
        return self.substitutions + self.deletions + self.insertions


def word_diff(reference: list[str], hypothesis: list[str]) -> WordDiff:
    """Minimal edit script between two word lists (Levenshtein), counted by kind."""
    # cost[j] = (edits, subs, dels, ins) to turn reference[:i] into hypothesis[:j]
    prev = [(j, 0, 0, j) for j in range(len(hypothesis) + 1)]
    for i, ref_word in enumerate(reference, 1):
        cur = [(i, 0, i, 0)]
        for j, hyp_word in enumerate(hypothesis, 1):
            if ref_word == hyp_word:
                cur.append(prev[j - 1])
                continue
            sub, dele, ins = prev[j - 1], prev[j], cur[j - 1]
            cur.append(min(
                (sub[0] + 1, sub[1] + 1, sub[2], sub[3]),
                (dele[0] + 1, dele[1], dele[2] + 1, dele[3]),
                (ins[0] + 1, ins[1], ins[2], ins[3] + 1),
            ))
        prev = cur
    _, subs, dels, inserted = prev[-1]
    return WordDiff(subs, dels, inserted)


@dataclass(frozen=True, slots=True)
class Side:
    """One transcript of a session."""

    session_id: str  # the session whose finals these are (the original, or the replay)
    finals: list[Final]

    @property
    def words(self) -> list[str]:
        return [w for f in self.finals for w in words(f.text)]

    @property
    def latencies(self) -> list[float]:
        return [f.latency_s for f in self.finals if f.latency_s is not None]


@dataclass(frozen=True, slots=True)
class Row:
    session_id: str
    a_session: str
    b_session: str
    a_finals: int
    b_finals: int
    a_words: int
    b_words: int
    diff: WordDiff
    a_latency_s: float | None
    b_latency_s: float | None

    @property
    def word_diff_rate(self) -> float:
        return self.diff.edits / self.a_words if self.a_words else float(self.diff.edits > 0)

    @property
    def latency_diff_s(self) -> float | None:
        if self.a_latency_s is None or self.b_latency_s is None:
            return None
        return self.b_latency_s - self.a_latency_s

    def as_json(self) -> dict[str, object]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 3)

        return {
            "session_id": self.session_id,
            "a": {"session_id": self.a_session, "finals": self.a_finals, "words": self.a_words,
                  "latency_s": r(self.a_latency_s)},
            "b": {"session_id": self.b_session, "finals": self.b_finals, "words": self.b_words,
                  "latency_s": r(self.b_latency_s)},
            "word_edits": self.diff.edits, "substitutions": self.diff.substitutions,
            "deletions": self.diff.deletions, "insertions": self.diff.insertions,
            "word_diff_rate": round(self.word_diff_rate, 4), "latency_diff_s": r(self.latency_diff_s),
        }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def compare(session_id: str, a: Side, b: Side) -> Row:
    a_words, b_words = a.words, b.words
    return Row(session_id, a.session_id, b.session_id, len(a.finals), len(b.finals), len(a_words), len(b_words),
               word_diff(a_words, b_words), _mean(a.latencies), _mean(b.latencies))


def overall(rows: list[Row], a_latencies: list[float], b_latencies: list[float]) -> Row:
    """All sessions as one: counts summed, latencies the mean over every final."""
    diff = WordDiff(sum(r.diff.substitutions for r in rows), sum(r.diff.deletions for r in rows),
                    sum(r.diff.insertions for r in rows))
    return Row("overall", "", "", sum(r.a_finals for r in rows), sum(r.b_finals for r in rows),
               sum(r.a_words for r in rows), sum(r.b_words for r in rows), diff, _mean(a_latencies),
               _mean(b_latencies))


def report_json(a_label: str, b_label: str, rows: list[Row], total: Row) -> dict[str, Any]:
    return {"a": a_label, "b": b_label, "sessions": [r.as_json() for r in rows], "overall": total.as_json()}


def table(a_label: str, b_label: str, rows: list[Row], total: Row) -> str:
    """The text table: one line per session and one for all of them."""

    def secs(x: float | None, signed: bool = False) -> str:
        return "-" if x is None else (f"{x:+.2f}s" if signed else f"{x:.2f}s")

    lines = [
        f"A: {a_label}",
        f"B: {b_label}",
        f"{'SESSION':<32}  {'FINALS A/B':>10}  {'WORDS A/B':>9}  {'EDITS':>5}  {'DIFF':>6}  "
        f"{'LAT A':>6}  {'LAT B':>6}  {'LAT B-A':>7}",
    ]
    for r in [*rows, total]:
        lines.append(
            f"{r.session_id:<32}  {f'{r.a_finals}/{r.b_finals}':>10}  {f'{r.a_words}/{r.b_words}':>9}  "
            f"{r.diff.edits:>5}  {r.word_diff_rate:>6.1%}  {secs(r.a_latency_s):>6}  {secs(r.b_latency_s):>6}  "
            f"{secs(r.latency_diff_s, signed=True):>7}"
        )
    return "\n".join(lines) + "\n"
