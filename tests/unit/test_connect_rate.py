"""ingest.auth.ConnectRate: new connections per address per minute, with a bounded table."""

from __future__ import annotations

from ingest.auth import ConnectRate, Gatekeeper


def test_a_burst_of_the_limit_then_one_per_refill() -> None:
    rate = ConnectRate(per_minute=60)
    assert all(rate.take("1.2.3.4", 0.0) == 0 for _ in range(60))
    wait = rate.take("1.2.3.4", 0.0)
    assert 0.99 <= wait <= 1.0  # one token per second
    assert rate.take("5.6.7.8", 0.0) == 0  # other addresses are not affected
    assert rate.take("1.2.3.4", 0.5) > 0
    assert rate.take("1.2.3.4", 1.01) == 0
    assert rate.take("1.2.3.4", 1.02) > 0


def test_a_refused_attempt_does_not_use_a_token() -> None:
    rate = ConnectRate(per_minute=2)
    assert rate.take("a", 0.0) == 0 and rate.take("a", 0.0) == 0
    for _ in range(100):
        assert rate.take("a", 0.0) > 0
    assert rate.take("a", 30.0) == 0  # half a minute refills one of two


def test_zero_is_unlimited() -> None:
    rate = ConnectRate(per_minute=0)
    assert all(rate.take("a", 0.0) == 0 for _ in range(10_000))


def test_the_table_of_addresses_is_bounded() -> None:
    rate = ConnectRate(per_minute=5, max_addresses=100)
    for i in range(10_000):
        rate.take(f"10.0.{i // 256}.{i % 256}", float(i))
    assert len(rate) == 100


def test_the_gatekeeper_answers_429_with_a_sentence() -> None:
    gate = Gatekeeper((), frozenset(), max_per_ip=0, connect_rate=ConnectRate(per_minute=3))
    for _ in range(3):
        assert gate.open("1.1.1.1", now=0.0) is None
        gate.close("1.1.1.1")
    refusal = gate.open("1.1.1.1", now=0.0)
    assert refusal is not None and refusal.status == 429 and refusal.code == "RATE_LIMITED"
    assert refusal.message == "Too many new connections from this address: at most 3 per minute; retry in 20 s"
