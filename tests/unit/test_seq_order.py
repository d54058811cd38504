"""vad_worker.seq_order: a session's messages back in Asr-Seq order whatever order the stream
stored them in, with the stream reads simulated over a list of stored messages."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from vad_worker.seq_order import Chunk, SeqOrder

WAIT_S = 40.0


def chunk(seq: int, stream_seq: int) -> Chunk:
    return Chunk(seq, "audio", b"\0\0" * 1600, stream_seq, (seq - 1) * 3200)


class Stream:
    """Stored messages (stream position order) and a consumer delivering them in batches."""

    def __init__(self, seqs: list[int]) -> None:
        self.stored = [chunk(seq, i + 1) for i, seq in enumerate(seqs)]
        self.delivered = 0

    def store(self, *seqs: int) -> None:
        for seq in seqs:
            self.stored.append(chunk(seq, len(self.stored) + 1))

    def deliver(self, n: int) -> list[Chunk]:
        batch = self.stored[self.delivered : self.delivered + n]
        self.delivered += len(batch)
        return batch

    def read(self, from_stream_seq: int) -> list[Chunk]:
        return [c for c in self.stored if c.stream_seq >= from_stream_seq]


def step(order: SeqOrder, stream: Stream, batch: list[Chunk], now: float) -> list[int]:
    """What the VAD worker does with one batch: the processed seqs."""
    direct = order.in_order(batch)
    if direct is not None:
        return [c.seq for c in direct]
    order.add(batch)
    read = stream.read(order.read_from())
    order.add(read, read_to=max((c.stream_seq for c in read), default=0))
    return [c.seq for c in order.take(now).ready]


def test_messages_in_order_pass_straight_through_without_reading() -> None:
    order = SeqOrder(0, 0, wait_s=WAIT_S)
    assert [c.seq for c in order.in_order([chunk(1, 1), chunk(2, 2)]) or []] == [1, 2]
    assert [c.seq for c in order.in_order([chunk(3, 7)]) or []] == [3]
    assert order.last_seq == 3 and order.last_stream_seq == 7 and not order.waiting and order.floor == 0
    assert order.in_order([chunk(2, 2)]) == []  # a redelivered one is not new


def test_the_outage_seen_in_ci_republished_messages_stored_after_newer_ones() -> None:
    """1..46 stored; 47..50 lost in the outage; 51..110 buffered by the client library and stored
    on reconnect; then the edge publishes 47..50 again. Reading on after the last processed
    position (where 50 lies) would never find 51..110, which lie before it."""
    stream = Stream(list(range(1, 47)))
    order = SeqOrder(0, 0, wait_s=WAIT_S)
    done = step(order, stream, stream.deliver(46), now=0.0)
    stream.store(*range(51, 111))
    done += step(order, stream, stream.deliver(30), now=1.0)  # 51..80: a hole before them
    assert done == list(range(1, 47)) and order.waiting and order.floor == 47
    stream.store(*range(47, 51))
    done += step(order, stream, stream.deliver(100), now=2.0)
    assert done == list(range(1, 111))
    assert not order.waiting and order.floor == 0 and order.last_stream_seq == len(stream.stored)


def test_a_new_owner_finds_held_messages_from_the_checkpoint_floor() -> None:
    stream = Stream(list(range(1, 11)) + list(range(15, 31)))
    first = SeqOrder(0, 0, wait_s=WAIT_S)
    assert step(first, stream, stream.deliver(26), now=0.0) == list(range(1, 11))
    floor = first.floor
    assert floor == 11  # where 15 lies: it is held, and acknowledged on the consumer
    stream.store(11, 12, 13, 14)  # the holder crashed; the edge's copies arrive
    again = SeqOrder(first.last_seq, first.last_stream_seq, read_from=floor, wait_s=WAIT_S)
    assert again.waiting  # even messages that look in order go through a read first
    assert step(again, stream, stream.deliver(2), now=5.0) == list(range(11, 31))
    assert not again.waiting


def test_a_hole_is_waited_for_then_skipped_and_the_rest_goes_on() -> None:
    stream = Stream([1, 2, 4, 5, 7, 8])
    order = SeqOrder(0, 0, wait_s=WAIT_S)
    assert step(order, stream, stream.deliver(6), now=0.0) == [1, 2]
    taken = order.take(10.0)
    assert taken.ready == [] and taken.skipped == []
    taken = order.take(40.0)  # 3's wait is over; 6 gets its own wait from now
    assert [c.seq for c in taken.ready] == [4, 5] and taken.skipped == [3]
    assert order.take(79.0).ready == []
    taken = order.take(80.0)
    assert [c.seq for c in taken.ready] == [7, 8] and taken.skipped == [6]
    assert not order.waiting


def test_the_wait_restarts_when_the_hole_moves_on() -> None:
    stream = Stream([1, 3, 5])
    order = SeqOrder(0, 0, wait_s=WAIT_S)
    assert step(order, stream, stream.deliver(3), now=0.0) == [1]
    stream.store(2)
    assert step(order, stream, [], now=39.0) == [2, 3]  # 4 is missing now: a new wait
    taken = order.take(60.0)
    assert taken.ready == [] and taken.skipped == []
    assert [c.seq for c in order.take(79.0).ready] == [5]


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=60), st.integers(min_value=0, max_value=2**32),
       st.integers(min_value=1, max_value=20))
def test_any_storage_order_gives_every_message_once_in_seq_order(n: int, seed: int, batch: int) -> None:
    """The edge publishes 1..n; some are stored only later (published again), in any order; the
    consumer delivers in stream order in batches. Every message comes out once, in order, none
    skipped, while all arrive within the wait."""
    rng = random.Random(seed)
    late = sorted(rng.sample(range(1, n + 1), rng.randint(0, n // 2)))
    first = [s for s in range(1, n + 1) if s not in late]
    rng.shuffle(late)
    stream = Stream(first)
    order = SeqOrder(0, 0, wait_s=WAIT_S)
    done: list[int] = []
    now = 0.0
    while stream.delivered < len(stream.stored) or late:
        if late and rng.random() < 0.5:
            stream.store(late.pop())
        now += 0.1
        done += step(order, stream, stream.deliver(batch), now)
    done += step(order, stream, [], now + 0.1)
    assert done == list(range(1, n + 1))
    assert not order.waiting
