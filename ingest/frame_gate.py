"""Drop oversized client TEXT messages on the wire, before aiohttp's WebSocket reader sees them.

aiohttp rejects a frame over ``max_msg_size`` as soon as its header arrives, without buffering,
but then closes the connection with 1009. For text messages (JSON control) we prefer to keep the
session: this gate sits between the socket and aiohttp's reader, discards an oversized text
message as its bytes stream in, and forwards in its place one small masked text frame carrying
``oversized_notice(size)``, which the connection answers with an error. Everything else is
forwarded byte-exact, in order, as slices of the input: binary frames stay under aiohttp's cap.

Memory bound: the gate never stores payload. It holds at most one incomplete frame header
(< 14 bytes, ``buffered_bytes``) plus a few integers, whatever the message size.

Not handled, on purpose:
- a text message whose first frame fits but whose continuation frames push the total over the
  cap is forwarded; aiohttp's per-message cap closes the connection with 1009;
- compressed (RSV1, permessage-deflate) frames are forwarded: the cap would be on compressed
  bytes, and dropping one would break the shared deflate window; aiohttp caps them decompressed;
- malformed input (reserved bits, unknown opcodes, unmasked frames, absurd lengths) is forwarded
  as-is for aiohttp's reader to reject; the gate never raises. After a close frame it forwards
  everything without looking.
"""

from __future__ import annotations

import os
from collections.abc import Callable

TEXT, CONTINUATION, CLOSE = 0x1, 0x0, 0x8


def oversized_notice(size: int) -> bytes:
    """The payload of the frame that replaces a dropped message of ``size`` payload bytes."""
    return b'{"type":"__oversized__","bytes":%d}' % size


def masked_frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = None) -> bytes:
    """A client→server frame: masked with ``mask`` (4 bytes) or a random key."""
    key = os.urandom(4) if mask is None else mask
    if len(key) != 4:
        raise ValueError(f"a masking key is 4 bytes, got {len(key)}")
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    mask_int = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return head + key + (int.from_bytes(payload, "big") ^ mask_int).to_bytes(n, "big")


def _header_len(second_byte: int) -> int:
    ext = {126: 2, 127: 8}.get(second_byte & 0x7F, 0)
    return 2 + ext + (4 if second_byte & 0x80 else 0)


class FrameGate:
    """Incremental RFC 6455 frame filter for the client→server byte stream (see module doc)."""

    def __init__(self, max_text_bytes: int, forward: Callable[[bytes], None]) -> None:
        self.max_text_bytes = max_text_bytes
        self._forward = forward
        self._head = bytearray()  # an incomplete frame header, < 14 bytes
        self._remaining = 0  # payload bytes left in the current frame
        self._dropping = False  # the current frame's payload is discarded
        self._fin = False  # the dropped frame is the last of its message
        self._skipping = False  # inside a skipped text message (between its fragments too)
        self._message_bytes = 0  # payload bytes of the skipped message so far
        self._open = False  # a forwarded fragmented data message awaits its last frame
        self._closed = False  # a close frame went by: forward everything from now on
        self._notice = b""  # a notice to forward before the frame just decided
        self._skipped_messages = 0
        self._skipped_bytes = 0

    @property
    def skipped_messages(self) -> int:
        return self._skipped_messages

    @property
    def skipped_bytes(self) -> int:
        """Payload bytes dropped so far (headers not counted)."""
        return self._skipped_bytes

    @property
    def buffered_bytes(self) -> int:
        return len(self._head)

    def __repr__(self) -> str:
        return f"<FrameGate skipped={self._skipped_messages} msgs/{self._skipped_bytes} B>"

    def feed(self, data: bytes) -> None:
        n, pos, run = len(data), 0, 0  # data[run:pos] is to be forwarded, not yet handed on
        while pos < n and not self._closed:
            if self._remaining:
                take = min(self._remaining, n - pos)
                if self._dropping:
                    self._flush(data, run, pos)
                    self._skipped_bytes += take
                    self._message_bytes += take
                    run = pos + take
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._end_frame()
                continue
            start, carried = pos, len(self._head)  # a carried header part came in earlier feeds
            want = 2 if carried < 2 else _header_len(self._head[1])
            while len(self._head) < want and pos < n:
                take = min(want - len(self._head), n - pos)
                self._head += data[pos : pos + take]
                pos += take
                if len(self._head) == 2:
                    want = _header_len(self._head[1])
            if len(self._head) < want:  # the header goes on in the next feed
                self._flush(data, run, start)
                return
            drop = self._decide(bytes(self._head))
            if drop or self._notice:
                self._flush(data, run, start)
                run = pos if drop else start
            if self._notice:
                self._forward(self._notice)
                self._notice = b""
            if carried and not drop:  # the header's start came earlier; the run is at 0 and goes on
                self._forward(bytes(self._head[:carried]))
            self._head.clear()
            if not self._remaining:
                self._end_frame()
        self._flush(data, run, n)

    def _flush(self, data: bytes, start: int, end: int) -> None:
        if end > start:
            self._forward(data if start == 0 and end == len(data) else data[start:end])

    def _decide(self, head: bytes) -> bool:
        """Take in a complete header; True when the frame is to be dropped."""
        fin, opcode, length = bool(head[0] & 0x80), head[0] & 0x0F, head[1] & 0x7F
        if length >= 126:
            length = int.from_bytes(head[2 : 2 + (2 if length == 126 else 8)], "big")
        clean = not head[0] & 0x70 and head[1] & 0x80 and length < 1 << 63  # else malformed
        self._remaining, self._dropping = length, False
        if opcode >= CLOSE:
            self._closed = opcode == CLOSE
            return False
        if self._skipping:
            if opcode == CONTINUATION and clean:
                self._dropping, self._fin = True, fin
                return True
            # a protocol error: leave the message open so that aiohttp's reader sees the error
            self._skipping, self._open = False, True
            self._notice = masked_frame(TEXT, oversized_notice(self._message_bytes), fin=False)
        if opcode == TEXT and clean and not self._open and length > self.max_text_bytes:
            self._skipping = self._dropping = True
            self._fin, self._message_bytes = fin, 0
            self._skipped_messages += 1
            return True
        if opcode in (TEXT, 0x2, CONTINUATION):
            self._open = not fin
        return False

    def _end_frame(self) -> None:
        if self._dropping and self._fin:
            self._skipping = self._dropping = False
            self._forward(masked_frame(TEXT, oversized_notice(self._message_bytes)))
