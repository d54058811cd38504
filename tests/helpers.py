"""Test helpers: WebSocket clients speaking the client contract, an in-process edge, text
normalisation and a process's memory."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import jiwer
from aiohttp.test_utils import TestServer
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from cli.dev import Stack
from common import bus, subjects
from common.bus_settings import BusSettings
from common.messages import Result, result_decoder
from common.settings import Settings
from ingest.app import init
from ingest.edge_settings import EdgeSettings

STEP = 10.0  # every single await of a test is bounded by this


async def stored_messages(js: JetStreamContext, stream: str, subject: str) -> list[RawStreamMsg]:
    """What ``stream`` keeps on ``subject`` (wildcards allowed), in stream order."""
    out: list[RawStreamMsg] = []
    seq = 0
    while True:
        try:
            msg = await js.get_msg(stream, seq=seq + 1, next=True, subject=subject)
        except NotFoundError:
            return out
        assert msg.seq is not None
        seq = msg.seq
        out.append(msg)


async def stored_results(js: JetStreamContext, subject: str) -> list[Result]:
    """What the RESULTS stream keeps on ``subject`` (wildcards allowed), in stream order."""
    return [result_decoder.decode(msg.data or b"") for msg in await stored_messages(js, subjects.RESULTS_STREAM,
                                                                                   subject)]


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

    def shown(self) -> list[dict[str, Any]]:
        """The finals as the client shows them last: each with the text of its latest `revision`."""
        revised = {m["seq"]: m["text"] for m in self.of_type("revision")}
        return [{**f, "text": revised.get(f["seq"], f["text"])} for f in self.finals()]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]


async def connect(session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> Client:
    ws = await asyncio.wait_for(session.ws_connect(url, max_msg_size=0, headers=headers), STEP)
    client = Client(ws)
    started = await client.recv()
    assert started is not None and started["type"] == "session_started", started
    return client


class RawClient:
    """A WebSocket client on a bare socket: it can stop reading (a slow phone), send frames of any
    size as a stream, or cut a frame in half. Blocking; call it from a thread (asyncio.to_thread)."""

    def __init__(self, host: str, port: int, path: str = "/v1/stream", rcvbuf: int = 0,
                 headers: dict[str, str] | None = None) -> None:
        import base64 as b64
        import os
        import socket

        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(STEP)
        self.sock.connect((host, port))
        key = b64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n".encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ")[1])

    def _read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def read_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame (servers do not mask)."""
        b0, b1 = self._read_exact(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(self._read_exact(2), "big")
        elif n == 127:
            n = int.from_bytes(self._read_exact(8), "big")
        return b0 & 0x0F, self._read_exact(n)

    def read_json(self) -> dict[str, Any]:
        opcode, payload = self.read_frame()
        assert opcode == 1, (opcode, payload)
        data: dict[str, Any] = json.loads(payload)
        return data

    def read_close(self) -> int:
        """Reads frames until the close frame; returns its code."""
        while True:
            opcode, payload = self.read_frame()
            if opcode == 8:
                return int.from_bytes(payload[:2], "big")

    def send(self, opcode: int, payload: bytes) -> None:
        from ingest.frame_gate import masked_frame

        self.sock.sendall(masked_frame(opcode, payload))

    def send_streamed(self, opcode: int, size: int, fill: bytes, prefix: bytes = b"", suffix: bytes = b"") -> None:
        """One frame of ``size`` payload bytes, masked with a zero key and sent in 64 KiB pieces,
        so the client never holds it whole either."""
        total = len(prefix) + size + len(suffix)
        header = bytes([0x80 | opcode, 0x80 | 127]) + total.to_bytes(8, "big") + b"\0\0\0\0"
        self.sock.sendall(header + prefix)
        piece = (fill * (65536 // len(fill) + 1))[:65536]
        left = size
        while left:
            n = min(left, len(piece))
            self.sock.sendall(piece[:n])
            left -= n
        self.sock.sendall(suffix)

    def close(self) -> None:
        self.sock.close()


@asynccontextmanager
async def edge_server(settings: Settings) -> AsyncIterator[TestServer]:
    """An edge in this event loop (aiohttp's test server on a free port), closed afterwards."""
    server = TestServer(init(EdgeSettings.from_settings(settings)), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


def ws_url(server: TestServer) -> str:
    return str(server.make_url("/v1/stream")).replace("http", "ws", 1)


async def wait_ready(http: aiohttp.ClientSession, server: TestServer, timeout: float = 60.0) -> None:
    """Until the edge's /readyz says 200 (both workers' heartbeats seen)."""
    async with asyncio.timeout(timeout):
        while True:
            async with http.get(server.make_url("/readyz")) as resp:
                if resp.status == 200:
                    return
            await asyncio.sleep(0.2)


async def metrics_once_idle(http: aiohttp.ClientSession, port: int, timeout: float = 15.0) -> dict[str, Any]:
    """The edge's /v1/metrics once its session count is back to 0: the edge releases a session
    just after the close handshake, so a count read right after a client leaves may still hold it.
    ``TimeoutError`` if it stays above 0."""
    async with asyncio.timeout(timeout):
        while True:
            async with http.get(f"http://127.0.0.1:{port}/v1/metrics") as resp:
                body: dict[str, Any] = await resp.json()
            if body["active_sessions"] == 0:
                return body
            await asyncio.sleep(0.1)


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


@contextmanager
def running_stack(data_dir: Path, port: int, *, ready_timeout: float = 120.0, **options: Any) -> Iterator[Stack]:
    """What `asr dev` runs (cli.dev.Stack: own nats-server, role processes), logging to
    data_dir/stack.log; stopped however the block ends, its log tail printed for a failed test."""
    log = (data_dir / "stack.log").open("w")
    stack = Stack("127.0.0.1", port, data_dir, out=log, **options)
    try:
        stack.start()
        stack.wait_ready(timeout=ready_timeout)
        yield stack
    finally:
        stack.stop()
        log.close()
        print((data_dir / "stack.log").read_text()[-6000:])


async def final_jobs_waiting(settings: Settings) -> int:
    """Final jobs the ASR consumer has not been given yet (stored, unacknowledged)."""
    nc, js = await bus.connect_jetstream(BusSettings.from_settings(settings), "test-probe")
    try:
        return int((await js.consumer_info(subjects.JOBS_FINAL_STREAM, subjects.FINAL_CONSUMER)).num_pending or 0)
    finally:
        await bus.close(nc)
