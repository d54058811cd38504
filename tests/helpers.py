"""Test helpers: a small WebSocket client speaking the client contract, and text normalisation."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
import jiwer

STEP = 10.0  # every single await of a test is bounded by this


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalise(reference), normalise(hypothesis)))


class Client:
    """One WebSocket session; ``messages`` keeps every server message in arrival order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.last_frame: aiohttp.WSMessage | None = None  # the frame that ended the session

    async def recv(self, timeout: float = STEP) -> dict[str, Any] | None:
        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        if msg.type == aiohttp.WSMsgType.TEXT:
            data: dict[str, Any] = json.loads(msg.data)
            self.messages.append(data)
            return data
        # The code the server sent; aiohttp's own close_code may say 1006 when the server dropped
        # the TCP connection right after its close frame, before the client's reply.
        self.close_code = int(msg.data) if msg.type == aiohttp.WSMsgType.CLOSE else self.ws.close_code
        self.last_frame = msg
        return None

    async def until(self, kind: str, timeout: float = 60.0) -> dict[str, Any]:
        """Reads until a message of type ``kind`` arrives (or the socket closes: AssertionError)."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.recv(timeout)
                assert msg is not None, f"closed ({self.close_code}) before {kind}; got {self.messages}"
                if msg["type"] == kind:
                    return msg

    async def stream(self, pcm: bytes, chunk_ms: int = 100, realtime: float = 0.0) -> None:
        """Sends PCM in chunks; ``realtime`` > 0 paces at that many times real time."""
        step = 32 * chunk_ms
        for i in range(0, len(pcm), step):
            await asyncio.wait_for(self.ws.send_bytes(pcm[i : i + step]), STEP)
            if realtime:
                await asyncio.sleep(chunk_ms / 1000 / realtime)

    async def send_json(self, obj: Any) -> None:
        await asyncio.wait_for(self.ws.send_str(json.dumps(obj)), STEP)

    def finals(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "transcript" and m["is_final"]]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]


async def connect(session: aiohttp.ClientSession, url: str) -> Client:
    ws = await asyncio.wait_for(session.ws_connect(url, max_msg_size=0), STEP)
    client = Client(ws)
    started = await client.recv()
    assert started is not None and started["type"] == "session_started", started
    return client
