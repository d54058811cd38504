"""The edge's WebSocket: aiohttp's, with the frame-size policy of the client contract.

- A text message larger than ``max_frame_bytes`` (a JSON audio message with a huge base64
  string) is discarded by ``FrameGate`` as its bytes stream in, never buffered; the client gets
  ``CHUNK_TOO_LARGE`` and the connection goes on.
- A binary frame larger than ``max_frame_bytes`` is refused by aiohttp from its header alone
  (nothing buffered); the client gets ``CHUNK_TOO_LARGE``, then close 1009.

The gate is spliced in front of aiohttp's frame reader after the upgrade. That uses two private
attributes of aiohttp (``_post_start``, ``protocol._payload_parser``); tests pin the behaviour,
and if aiohttp changes them the edge logs a warning and falls back to closing with 1009.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from aiohttp import WSCloseCode, web

from ingest import protocol as p
from ingest.frame_gate import FrameGate

log = logging.getLogger(__name__)


class _GatedParser:
    """Stands where aiohttp expects its frame parser; sends the bytes through the gate first."""

    def __init__(self, parser: Any, max_text_bytes: int) -> None:
        self._parser = parser
        self._eof = False
        self.gate = FrameGate(max_text_bytes, self._forward)

    def _forward(self, data: bytes) -> None:
        eof, _ = self._parser.feed_data(data)
        self._eof = self._eof or eof

    def feed_data(self, data: bytes | bytearray | memoryview) -> tuple[bool, bytes]:
        self.gate.feed(bytes(data))
        return self._eof, b""

    def feed_eof(self) -> None:
        self._parser.feed_eof()


class EdgeWebSocket(web.WebSocketResponse):
    def __init__(self, *, max_msg_size: int, **kwargs: Any) -> None:
        super().__init__(max_msg_size=max_msg_size, **kwargs)
        self._frame_cap = max_msg_size
        self._told_too_big = False
        self.gated: _GatedParser | None = None

    def _post_start(self, request: web.BaseRequest, *args: Any, **kwargs: Any) -> None:
        super()._post_start(request, *args, **kwargs)
        handler = request.protocol
        parser = getattr(handler, "_payload_parser", None)
        if parser is None or not hasattr(parser, "feed_data"):
            log.warning("aiohttp internals changed: oversized text messages will close the connection")
            return
        self.gated = _GatedParser(parser, self._frame_cap)
        handler._payload_parser = self.gated

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not self._told_too_big and not self.closed:
            # aiohttp closes with 1009 itself; the contract says the client first hears why.
            self._told_too_big = True
            notice = p.error(p.CHUNK_TOO_LARGE, f"WebSocket frame exceeds the hard limit of {self._frame_cap} bytes")
            try:
                await self.send_str(msgspec.json.encode(notice).decode())
            except (ConnectionError, RuntimeError) as exc:
                log.debug("could not send CHUNK_TOO_LARGE before closing: %s", exc)
        return await super().close(code=code, message=message, drain=drain)
