"""ingest.frame_gate.FrameGate: oversized text messages are dropped on the wire, the rest passes byte-exact."""

from __future__ import annotations

from typing import NamedTuple

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.frame_gate import FrameGate, masked_frame, oversized_notice

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
CAP = 100
KEY = b"\x12\x34\x56\x78"


class Frame(NamedTuple):
    fin: bool
    opcode: int
    payload: bytes
    mask: bytes | None
    raw: bytes


def parse(stream: bytes) -> list[Frame]:
    """A test-side parser of complete frames: unmasks, keeps each frame's raw bytes."""
    frames, pos = [], 0
    while pos < len(stream):
        start, b0, b1 = pos, stream[pos], stream[pos + 1]
        pos += 2
        n = b1 & 0x7F
        if n >= 126:
            width = 2 if n == 126 else 8
            n = int.from_bytes(stream[pos : pos + width], "big")
            pos += width
        mask = stream[pos : pos + 4] if b1 & 0x80 else None
        pos += 4 if mask else 0
        body = stream[pos : pos + n]
        assert len(body) == n, "truncated frame"
        pos += n
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(body)) if mask else body
        frames.append(Frame(bool(b0 & 0x80), b0 & 0x0F, payload, mask, stream[start:pos]))
    return frames


def run(chunks: list[bytes], cap: int = CAP) -> tuple[bytes, FrameGate]:
    out: list[bytes] = []
    gate = FrameGate(cap, out.append)
    for chunk in chunks:
        gate.feed(chunk)
        assert gate.buffered_bytes < 14
    return b"".join(out), gate


def frame(opcode: int, size: int, fin: bool = True) -> bytes:
    return masked_frame(opcode, bytes(i % 251 for i in range(size)), fin=fin, mask=KEY)


def is_notice(f: Frame, size: int, fin: bool = True) -> bool:
    return (f.fin, f.opcode, f.payload) == (fin, TEXT, oversized_notice(size)) and f.mask is not None


def test_masked_frame_round_trip_and_key() -> None:
    for size in (0, 1, 5, 125, 126, 65535, 65536, 70000):
        payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        for fin in (True, False):
            [f] = parse(masked_frame(TEXT, payload, fin=fin, mask=KEY))
            assert (f.fin, f.opcode, f.payload, f.mask) == (fin, TEXT, payload, KEY)
    raw = masked_frame(BINARY, b"\0\0\0\0\0", mask=KEY)
    assert raw == b"\x82\x85" + KEY + KEY + KEY[:1]
    assert len(masked_frame(TEXT, b"x" * 126)) == 2 + 2 + 4 + 126
    assert len(masked_frame(TEXT, b"x" * 65536)) == 2 + 8 + 4 + 65536
    random_key = parse(masked_frame(TEXT, b"abc"))[0]
    assert random_key.payload == b"abc" and random_key.mask is not None and len(random_key.mask) == 4


def test_notice_payload() -> None:
    assert oversized_notice(1234) == b'{"type":"__oversized__","bytes":1234}'


def test_pass_through_byte_exact() -> None:
    stream = b"".join(
        [
            frame(TEXT, 0),
            frame(TEXT, CAP),  # at the cap: kept
            frame(BINARY, 70000),  # 64-bit length, binary is never gated
            frame(BINARY, 300),  # 16-bit length
            frame(PING, 125),
            frame(PONG, 3),
            frame(TEXT, 10, fin=False),
            frame(CONT, 90),
            frame(CLOSE, 2),
        ]
    )
    for step in (len(stream), 1000, 7, 1):
        out, gate = run([stream[i : i + step] for i in range(0, len(stream), step)])
        assert out == stream
        assert gate.skipped_messages == gate.skipped_bytes == gate.buffered_bytes == 0


def test_whole_frames_forwarded_without_copy() -> None:
    stream = frame(BINARY, 5000) + frame(TEXT, 20)
    out: list[bytes] = []
    FrameGate(CAP, out.append).feed(stream)
    assert len(out) == 1 and out[0] is stream


def test_oversized_text_frame_replaced_by_one_notice() -> None:
    before, after = frame(TEXT, 5), frame(BINARY, 500) + frame(PING, 1)
    for big in (101, 300, 70000):
        stream = before + frame(TEXT, big) + after
        for step in (len(stream), 3, 1):
            out, gate = run([stream[i : i + step] for i in range(0, len(stream), step)])
            frames = parse(out)
            assert [f.raw for f in frames[:1]] == [before]
            assert is_notice(frames[1], big)
            assert b"".join(f.raw for f in frames[2:]) == after
            assert (gate.skipped_messages, gate.skipped_bytes) == (1, big)


def test_fragmented_oversized_message_with_interleaved_ping() -> None:
    ping, tail = frame(PING, 4), frame(TEXT, 7) + frame(BINARY, 1000)
    stream = frame(TEXT, 150, fin=False) + ping + frame(CONT, 40, fin=False) + frame(CONT, 0) + tail
    for step in (len(stream), 5, 1):
        out, gate = run([stream[i : i + step] for i in range(0, len(stream), step)])
        frames = parse(out)
        assert frames[0].raw == ping
        assert is_notice(frames[1], 190)
        assert b"".join(f.raw for f in frames[2:]) == tail
        assert (gate.skipped_messages, gate.skipped_bytes) == (1, 190)


def test_small_first_fragment_is_left_to_aiohttp() -> None:
    stream = frame(TEXT, 10, fin=False) + frame(CONT, 5000, fin=False) + frame(CONT, 5000)
    assert run([stream])[0] == stream


def test_malformed_frames_forwarded_as_is() -> None:
    unmasked = bytes([0x81, 126]) + (500).to_bytes(2, "big") + b"u" * 500
    rsv1 = bytes([0xC1]) + frame(TEXT, 500)[1:]  # compressed (permessage-deflate): not gated
    huge = bytes([0x81, 0xFF]) + (1 << 63).to_bytes(8, "big") + KEY + b"x" * 50
    for stream in (unmasked, rsv1, frame(0x3, 500), huge):
        assert run([stream])[0] == stream
        assert run([stream[i : i + 1] for i in range(len(stream))])[0] == stream


def test_everything_forwarded_after_close() -> None:
    stream = frame(CLOSE, 2) + frame(TEXT, 500) + b"\xff\xfe garbage"
    assert run([stream[:3], stream[3:]])[0] == stream


def test_new_message_inside_skipped_one_stays_a_protocol_error() -> None:
    """The gate leaves a FIN=0 notice open so that aiohttp still sees the client's error."""
    stream = frame(TEXT, 200, fin=False) + frame(TEXT, 5)
    frames = parse(run([stream])[0])
    assert is_notice(frames[0], 200, fin=False)
    assert frames[1].raw == frame(TEXT, 5)


def test_memory_bound_on_a_50_mb_text_frame() -> None:
    size, piece = 50 * 2**20, 64 * 2**10
    out: list[bytes] = []
    gate = FrameGate(CAP, out.append)
    header = masked_frame(TEXT, b"", mask=KEY)
    gate.feed(bytes([0x81, 0xFF]) + size.to_bytes(8, "big") + KEY[:2])  # the header, split
    gate.feed(KEY[2:])
    assert gate.buffered_bytes == 0 and out == []
    masked_zeros = KEY * (piece // 4)  # zeros masked with KEY
    for _ in range(size // piece):
        gate.feed(masked_zeros)
        assert gate.buffered_bytes < 14
    assert len(out) == 1  # the notice came when the last byte went by
    gate.feed(header)
    frames = parse(b"".join(out))
    assert is_notice(frames[0], size) and frames[1].raw == header
    assert (gate.skipped_messages, gate.skipped_bytes) == (1, size)


# --- property: random frame sequences against a reference ------------------------------------

control = st.tuples(st.sampled_from([PING, PONG]), st.integers(0, 125))
message = st.tuples(
    st.sampled_from([TEXT, BINARY]),
    st.lists(st.integers(0, 300), min_size=1, max_size=3),  # fragment sizes
    st.lists(control, max_size=2),  # control frames interleaved after the first fragment
)
streams = st.lists(st.one_of(control, message), max_size=8)

Item = bytes | int  # a frame forwarded as-is, or the size of a notice


def build(items: list[tuple[int, int] | tuple[int, list[int], list[tuple[int, int]]]]) -> tuple[bytes, list[Item]]:
    """The input stream and, by the simple rule, what the gate must forward."""
    stream, expected = b"", list[Item]()
    for item in items:
        if len(item) == 2:
            stream += frame(*item)
            expected.append(frame(*item))
            continue
        opcode, sizes, controls = item
        skipped = opcode == TEXT and sizes[0] > CAP
        for i, size in enumerate(sizes):
            raw = frame(opcode if i == 0 else CONT, size, fin=i == len(sizes) - 1)
            stream += raw
            if not skipped:
                expected.append(raw)
            if i == 0 and len(sizes) > 1:
                for c in controls:
                    stream += frame(*c)
                    expected.append(frame(*c))
        if skipped:
            expected.append(sum(sizes))
    return stream, expected


def normalise(out: bytes) -> list[Item]:
    """Notices carry a random key: compare them by their size, every other frame by its bytes."""
    result: list[Item] = []
    for f in parse(out):
        if f.opcode == TEXT and f.payload.startswith(b'{"type":"__oversized__"'):
            assert f.fin and f.mask is not None
            result.append(int(f.payload.split(b":")[-1].rstrip(b"}")))
        else:
            result.append(f.raw)
    return result


@settings(max_examples=300, deadline=None)
@given(items=streams, data=st.data())
def test_random_streams_match_reference(items, data) -> None:
    stream, expected = build(items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    whole, _ = run([stream])
    split, _ = run(chunks)
    by_byte, gate = run([stream[i : i + 1] for i in range(len(stream))])
    assert normalise(whole) == normalise(split) == normalise(by_byte) == expected
    assert gate.buffered_bytes == 0
    assert gate.skipped_messages == sum(isinstance(e, int) for e in expected)


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=10))
def test_garbage_never_raises(garbage: bytes, cuts: list[int]) -> None:
    for prefix in (b"", frame(TEXT, 200, fin=False)):
        stream = prefix + garbage
        bounds = sorted(c for c in cuts if c <= len(stream))
        run([stream[a:b] for a, b in zip([0, *bounds], [*bounds, len(stream)], strict=True)])
