"""Word error rate as every benchmark here scores it: lower case, no punctuation, numbers spelled out
("10 of clubs" and "ten of clubs" are the same words), corpus-level (all errors / all words)."""

from __future__ import annotations

import re

import jiwer

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
         "nineteen"]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def spell(n: int) -> str:
    """0..9999 in words: 42 -> "forty two"."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + spell(n % 100))
    return spell(n // 1000) + " thousand" + ("" if n % 1000 == 0 else " " + spell(n % 1000))


def normalise(text: str) -> str:
    text = re.sub(r"\d{1,4}", lambda m: f" {spell(int(m.group()))} ", text.lower())
    return " ".join(re.sub(r"[^a-z' ]+", " ", text).replace("'", "").split())


def corpus_wer(refs: list[str], hyps: list[str]) -> float:
    pairs = [(normalise(r), normalise(h)) for r, h in zip(refs, hyps, strict=True) if normalise(r)]
    if not pairs:
        return float("nan")
    return float(jiwer.wer([r for r, _ in pairs], [h for _, h in pairs]))
