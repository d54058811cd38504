"""A WER under several seeds (`benchmarks.seeds.Spread`): the bound compares with the mean."""

from __future__ import annotations

import pytest

from benchmarks.seeds import spread


def test_a_spread_gives_its_mean_and_range() -> None:
    s = spread([0.2, 0.176, 0.186])
    assert s.mean == pytest.approx(0.18733, abs=1e-5)
    assert (s.low, s.high) == (0.176, 0.2)
    assert str(s) == "0.187 (0.176-0.200)"
    assert str(spread([0.125])) == "0.125"


def test_a_spread_needs_a_value() -> None:
    with pytest.raises(ValueError):
        spread([])
