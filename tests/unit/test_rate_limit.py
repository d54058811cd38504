"""Unit tests of the pure token-bucket engine, driven by simulated time (no clock, no sleeping)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.rate_limit import RateLimiter, RateLimitOptions

a = pytest.approx


def limiter(rate: float = 1000, burst: float = 1000, grace: float = 2.0, now: float = 0.0) -> RateLimiter:
    return RateLimiter(RateLimitOptions(bytes_per_second=rate, burst_bytes=burst, grace_seconds=grace), now)


def test_refill_is_continuous_and_capped_at_the_burst() -> None:
    lim = limiter(rate=1000, burst=1000)
    assert lim.admit(1000, 0.0) == 0.0  # the bucket starts full
    assert lim.tokens == 0
    assert lim.admit(250, 0.5) == 0.0  # +500 in 0.5 s, -250
    assert lim.tokens == 250
    assert lim.admit(1000, 1.0) == 0.25  # 250 + 500 - 1000 = -250: 0.25 s to refill to zero
    assert lim.tokens == -250
    assert lim.admit(0, 100.0) == 0.0  # a long idle refills only up to the burst
    assert lim.tokens == 1000
    assert lim.admit(1001, 100.0) == 0.001
    assert lim.throttled_seconds == 0.25 + 0.001


def test_the_initial_burst_needs_no_wait() -> None:
    lim = limiter(rate=1000, burst=5000)
    assert [lim.admit(1000, 0.0) for _ in range(5)] == [0.0] * 5
    assert lim.admit(1000, 0.0) == 1.0
    assert lim.throttled_seconds == 1.0


def test_a_chunk_larger_than_the_bucket_is_allowed_but_costs_its_full_size() -> None:
    lim = limiter(rate=1000, burst=1000)
    assert lim.admit(3000, 0.0) == 2.0
    assert lim.admit(0, 2.0) == 0.0  # after the wait the bucket is back at zero
    assert lim.tokens == 0


@pytest.mark.parametrize(("chunk", "step"), [(100, 0.1), (500, 0.5), (1000, 1.0), (3200, 0.1)])
def test_a_client_at_exactly_the_rate_never_waits(chunk: int, step: float) -> None:
    # The chunk may equal the whole bucket: the float noise of k * 0.1 must not become a wait.
    rate = chunk / step
    lim = limiter(rate=rate, burst=chunk)
    waits = [lim.admit(chunk, k * step) for k in range(int(60 / step))]
    assert set(waits) == {0.0}
    assert lim.throttled_seconds == 0.0
    assert not lim.flooding(60.0)


def test_a_client_at_twice_the_rate_converges_to_the_rate() -> None:
    # 16 kHz s16le at 1x real time; the client sends 100 ms chunks every 50 ms (2x) as soon as allowed.
    rate, burst, chunk = 32000.0, 8000.0, 3200
    lim = limiter(rate=rate, burst=burst, grace=5.0)
    now, sent, flooding_from = 0.0, 0, None
    while now < 60.0:
        wait = lim.admit(chunk, now)
        sent += chunk
        if flooding_from is None and lim.flooding(now):
            flooding_from = now
        now += max(wait, chunk / (2 * rate))
    # Everything admitted is the burst plus the rate over the elapsed time (waits included).
    assert sent == a(burst + rate * now, rel=1e-9)
    assert sent / now == a(rate, rel=0.01)
    # The burst (2.5 chunks) plus the refill lets the first 4 chunks (0.00-0.15 s) through unslowed;
    # from the 5th (0.20 s) on every chunk waits, so the time after 0.20 s is all throttling.
    assert lim.throttled_seconds == a(now - 0.2, rel=1e-9)
    # Flooding from the first admit at least grace_seconds after 0.20 s: admits fall on 0.25 + k/10.
    assert flooding_from == a(5.25, abs=1e-9)


def test_flooding_needs_grace_seconds_of_continuous_throttling() -> None:
    lim = limiter(rate=1000, burst=1000, grace=2.0)
    assert lim.admit(1000, 0.0) == 0.0
    assert not lim.flooding(0.0)
    assert lim.admit(500, 0.0) == 0.5  # the throttled streak starts at 0.0
    assert not lim.flooding(1.999)
    for t in (0.5, 1.0, 1.5):
        assert lim.admit(500, t) == 0.5
        assert not lim.flooding(t)
    assert lim.admit(500, 2.0) == 0.5
    assert lim.flooding(2.0)  # exactly grace_seconds after the first throttled admit
    # One admit that needs no wait resets it (2.5 + 1.0 s of refill leaves 500 tokens).
    assert lim.admit(500, 3.5) == 0.0
    assert not lim.flooding(3.5)
    assert not lim.flooding(100.0)
    # A new streak counts from its own first throttled admit.
    assert lim.admit(1000, 3.5) == 0.5
    assert not lim.flooding(5.499)
    assert lim.flooding(5.5)
    assert lim.throttled_seconds == 0.5 * 6


def test_a_throttled_zero_byte_admit_does_not_reset_the_streak() -> None:
    lim = limiter(rate=1000, burst=1000, grace=1.0)
    assert lim.admit(2000, 0.0) == 1.0
    assert lim.admit(0, 0.5) == 0.5  # still 500 bytes in debt
    assert lim.flooding(1.0)


def test_a_clock_that_steps_back_adds_no_tokens() -> None:
    lim = limiter(rate=1000, burst=1000, now=10.0)
    assert lim.admit(1000, 10.0) == 0.0
    assert lim.admit(500, 9.0) == 0.5
    assert lim.admit(0, 10.5) == 0.0


@pytest.mark.parametrize("field", ["bytes_per_second", "burst_bytes", "grace_seconds"])
@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf])
def test_options_validation(field: str, value: float) -> None:
    kwargs = {"bytes_per_second": 1000.0, "burst_bytes": 1000.0, "grace_seconds": 1.0, field: value}
    with pytest.raises(ValueError, match=f"{field} must be a positive finite number"):
        RateLimitOptions(**kwargs)


def test_negative_bytes_are_rejected() -> None:
    with pytest.raises(ValueError, match="nbytes must be zero or positive"):
        limiter().admit(-1, 0.0)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(1.0, 1e6),
    burst=st.floats(1.0, 1e6),
    steps=st.lists(
        st.tuples(st.integers(0, 200_000), st.one_of(st.just(0.0), st.floats(0.0, 5.0))), min_size=1, max_size=60
    ),
)
def test_admitted_bytes_never_exceed_burst_plus_rate_plus_the_last_chunk(
    rate: float, burst: float, steps: list[tuple[int, float]]
) -> None:
    # The caller honours every wait, then lets `gap` more seconds pass before the next chunk.
    lim = limiter(rate=rate, burst=burst, grace=1.0)
    now, total, waited = 0.0, 0, 0.0
    for nbytes, gap in steps:
        wait = lim.admit(nbytes, now)
        assert wait >= 0.0
        total += nbytes
        waited += wait
        bound = burst + rate * (now + wait) + nbytes
        assert total <= bound * (1 + 1e-9) + 1e-6
        if wait == 0.0:
            assert not lim.flooding(now)
        now += wait + gap
    assert lim.throttled_seconds == a(waited)
