"""The standing pull request's bookkeeping (common.pull.Credit): when to ask the server again."""

from common.pull import Credit


def test_asks_once_then_waits_while_the_request_stands() -> None:
    c = Credit(batch=4, expires_s=30, heartbeat_s=5)
    assert c.should_ask(0.0)
    req = c.request(0.0)
    assert req == {"batch": 4, "expires": 30_000_000_000, "idle_heartbeat": 5_000_000_000}
    for t in (1.0, 2.0, 3.0):
        c.delivered(t)
        assert not c.should_ask(t)


def test_asks_again_when_the_batch_is_used_up() -> None:
    c = Credit(batch=2)
    c.request(0.0)
    c.delivered(0.1)
    assert not c.should_ask(0.1)
    c.delivered(0.2)
    assert c.should_ask(0.2)


def test_asks_again_at_once_after_expiry_but_not_at_once_after_a_refusal() -> None:
    c = Credit(retry_s=1.0)
    c.request(0.0)
    c.expired()
    assert c.should_ask(30.0)
    c.request(30.0)
    c.refused(31.0)
    assert not c.should_ask(31.5)
    assert c.next_check(31.5) == 0.5
    assert c.should_ask(32.0)


def test_heartbeats_keep_a_quiet_request_alive_and_silence_ends_it() -> None:
    c = Credit(heartbeat_s=5, slack_s=1)
    c.request(0.0)
    assert not c.should_ask(10.0)
    c.heartbeat(10.0)
    assert not c.should_ask(20.9)
    assert c.next_check(20.0) == 1.0
    assert c.should_ask(21.5)  # nothing for more than two heartbeats: taken as lost


def test_a_message_counts_as_a_sign_of_life() -> None:
    c = Credit(heartbeat_s=5, slack_s=1)
    c.request(0.0)
    c.delivered(9.0)
    assert not c.should_ask(19.0)
    assert c.should_ask(20.5)
