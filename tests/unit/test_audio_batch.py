"""How a session's audio is cut into bus messages (`ingest.audio_batch`)."""

from __future__ import annotations

import pytest

from ingest.audio_batch import AudioBatch

MS20 = 640  # 20 ms of 16 kHz s16le


def test_a_chunk_as_long_as_the_target_goes_out_at_once_and_holds_nothing() -> None:
    batch = AudioBatch(1920, 0.06)
    chunk = b"\x01" * 3200
    assert batch.add(chunk, now=0.0) is chunk  # not copied
    assert batch.held == 0 and batch.deadline() is None and not batch.due(10.0)


def test_small_chunks_are_joined_in_order_until_the_target() -> None:
    batch = AudioBatch(1920, 0.06)
    parts = [bytes([i]) * MS20 for i in range(1, 7)]
    out = [batch.add(part, now=i * 0.02) for i, part in enumerate(parts)]
    assert out[0] is None and out[1] is None
    assert out[2] == parts[0] + parts[1] + parts[2]
    assert out[3] is None and out[4] is None
    assert out[5] == parts[3] + parts[4] + parts[5]
    assert batch.held == 0


def test_what_is_held_is_due_once_its_oldest_byte_has_waited() -> None:
    batch = AudioBatch(1920, 0.06)
    assert batch.add(b"\x01" * MS20, now=5.0) is None
    assert batch.add(b"\x02" * MS20, now=5.04) is None
    assert batch.deadline() == pytest.approx(5.06)  # from the first chunk, not the last
    assert not batch.due(5.059) and batch.due(5.0601)
    assert batch.take() == b"\x01" * MS20 + b"\x02" * MS20
    assert batch.held == 0 and batch.deadline() is None and batch.take() == b""
    # The next chunk starts a new wait.
    assert batch.add(b"\x03" * MS20, now=7.0) is None and batch.deadline() == pytest.approx(7.06)


def test_a_big_chunk_after_small_ones_goes_out_with_them() -> None:
    batch = AudioBatch(1920, 0.06)
    batch.add(b"\x01" * MS20, now=0.0)
    assert batch.add(b"\x02" * 3200, now=0.02) == b"\x01" * MS20 + b"\x02" * 3200


def test_empty_chunks_are_ignored_and_bad_bounds_refused() -> None:
    batch = AudioBatch(1920, 0.06)
    assert batch.add(b"", now=0.0) is None and batch.held == 0 and batch.deadline() is None
    with pytest.raises(ValueError):
        AudioBatch(-1, 0.06)
