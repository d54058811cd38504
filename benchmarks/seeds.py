"""Seeded baselines: faster-whisper's temperature fallback samples, so direct decoding of the same
file gives a different text from run to run wherever a window falls back (on this corpus: the noisy
and telephone clips, and a few turns of the conversations). Both benchmarks decode their direct
baseline under ``--direct-seeds`` fixed seeds and compare with the mean WER, reporting the range.

CTranslate2 seeds each decoding thread's generator once, from the seed set before that thread's
first sample, so the seed is set before the model (and its threads) is created, one model per seed.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import ctranslate2

DEFAULT_SEEDS = 5


def seed_decoders(seed: int) -> None:
    """Seeds the sampling of every CTranslate2 model created after this call."""
    ctranslate2.set_random_seed(seed)


@dataclass(frozen=True, slots=True)
class Spread:
    """A WER under several seeds: the mean is what a bound compares with."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def __str__(self) -> str:
        if len(self.values) == 1:
            return f"{self.mean:.3f}"
        return f"{self.mean:.3f} ({self.low:.3f}-{self.high:.3f})"


def spread(values: Sequence[float]) -> Spread:
    if not values:
        raise ValueError("a spread needs at least one value")
    return Spread(tuple(values))
