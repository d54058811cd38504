"""``asr stream FILE``: stream an audio file to an edge and print its transcripts.

FILE is a WAV file or anything FFmpeg decodes through PyAV (mp3, m4a, ogg, flac, the sound track
of a video): :func:`common.audio.read_audio` turns it into PCM s16le 16 kHz mono.

The pure parts (:class:`Renderer`, :func:`chunks`) hold no I/O; :func:`stream_pcm` is the async
shell that speaks the client contract of DESIGN.md: wait for ``session_started``, send binary
PCM frames and then ``{"type":"end"}`` while concurrently reading server messages until
``session_ended`` or the close.

Exit codes: 0 the session ended normally, 1 connection refused/lost or closed with an error,
2 the file cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import aiohttp

from common.audio import TARGET_RATE, AudioFormatError, pcm_duration_s, read_audio

DEFAULT_URL = "ws://127.0.0.1:8080/v1/stream"
CONNECT_TIMEOUT_S = 10.0  # TCP + WebSocket handshake
START_TIMEOUT_S = 10.0  # from the handshake to session_started
END_TIMEOUT_S = 60.0  # from sending "end" to session_ended (the last finals are recognised then)
CLEAR_LINE = "\r\x1b[K"  # carriage return + erase to end of line

CLOSE_MEANINGS = {
    1000: "normal closure",
    1001: "going away",
    1008: "client too slow",
    1009: "frame over the size limit",
    1011: "internal server error",
    1012: "edge draining, reconnect elsewhere",
    1013: "server at capacity, try again later",
}


@dataclass(frozen=True)
class Output:
    """What one event prints: text for stdout and for stderr (either may be empty)."""

    stdout: str = ""
    stderr: str = ""


class Renderer:
    """Turns server messages into terminal output; pure, keeps only whether a partial is shown.

    Text mode: finals are printed as full lines of text; errors go to stderr as ``error CODE:
    message``. On a TTY, partials are redrawn in place and each final is printed as it comes (a
    live view: its first text). Otherwise (a file or a pipe) partials are not shown, and the finals
    are written when the session ends (or the connection closes), each with its ``revision``
    applied, so the file reads as the service stored the session (``asr transcript``) rather than
    as each final was first decoded. (A revision of final n is decoded once final n+1 is, on CPU the
    finals leave: under load it can come several finals later, so no earlier point is safe.) JSON
    mode: every server message is one JSON line on stdout.
    """

    def __init__(self, *, json_mode: bool, tty: bool) -> None:
        self.json_mode = json_mode
        self.tty = tty
        self._partial_shown = False
        self._held: dict[int, str] = {}  # seq -> text of finals not written yet (files and pipes)

    def render(self, message: dict[str, Any]) -> Output:
        """Output for one server message."""
        if self.json_mode:
            return Output(stdout=json.dumps(message, ensure_ascii=False) + "\n")
        kind = message.get("type")
        if kind == "transcript":
            text = str(message.get("text", "")).strip()
            if not message.get("is_final"):
                if not self.tty:
                    return Output()
                self._partial_shown = True
                return Output(stdout=CLEAR_LINE + text)
            seq = message.get("seq")
            if self.tty or not isinstance(seq, int):
                return Output(stdout=self._clear() + (text + "\n" if text else ""))
            self._held[seq] = text
            return Output()
        if kind == "revision":
            seq = message.get("seq")
            if isinstance(seq, int) and seq in self._held:
                self._held[seq] = str(message.get("text", "")).strip() or self._held[seq]
            return Output()
        if kind == "session_ended":
            return Output(stdout=self._release())
        if kind == "error":
            code = message.get("code", "UNKNOWN")
            return Output(stdout=self._clear(), stderr=f"error {code}: {message.get('message', '')}\n")
        return Output()

    def render_close(self, code: int | None, reason: str) -> Output:
        """Output for a close that came before ``session_ended``."""
        meaning = CLOSE_MEANINGS.get(code or 0, "")
        detail = "; ".join(part for part in (meaning, reason) if part)
        suffix = f" ({detail})" if detail else ""
        return Output(
            stdout=self._clear() + self._release(),
            stderr=f"connection closed before session_ended: code {code}{suffix}\n",
        )

    def finish(self) -> Output:
        """Output at the end of the run: erase a partial still on screen, write held finals."""
        return Output(stdout=self._clear() + self._release())

    def _release(self) -> str:
        """The held finals in seq order, as lines."""
        held, self._held = self._held, {}
        return "".join(f"{held[seq]}\n" for seq in sorted(held) if held[seq])

    def _clear(self) -> str:
        if self._partial_shown:
            self._partial_shown = False
            return CLEAR_LINE
        return ""


def chunks(pcm: bytes, chunk_ms: int, rate: int = TARGET_RATE) -> Iterator[bytes]:
    """Split PCM s16le mono into frames of ``chunk_ms`` milliseconds (the last may be shorter)."""
    if chunk_ms <= 0:
        raise ValueError(f"chunk_ms must be positive, got {chunk_ms}")
    size = max(2, rate * chunk_ms // 1000 * 2)
    for start in range(0, len(pcm), size):
        yield pcm[start : start + size]


class _Printer:
    """Writes :class:`Output` to the real streams, flushing so partials appear at once."""

    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self.stdout = stdout
        self.stderr = stderr

    def __call__(self, output: Output) -> None:
        if output.stdout:
            self.stdout.write(output.stdout)
            self.stdout.flush()
        if output.stderr:
            self.stderr.write(output.stderr)
            self.stderr.flush()


async def _send_audio(ws: aiohttp.ClientWebSocketResponse, pcm: bytes, chunk_ms: int, speed: float) -> None:
    """Send the audio as binary frames at ``speed`` times real time (0: as fast as the socket
    takes it), then ``end``; stops quietly if the server closes."""
    realtime = speed > 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = 0
    try:
        for chunk in chunks(pcm, chunk_ms):
            if ws.closed:
                return
            if realtime:
                # Pace against the clock, not by sleeping chunk_ms each time, so no drift builds up.
                await asyncio.sleep(max(0.0, started + pcm_duration_s(sent) / speed - loop.time()))
            await ws.send_bytes(chunk)
            sent += len(chunk)
            if not realtime:
                await asyncio.sleep(0)  # let the receiver print as we go
        if not ws.closed:
            await ws.send_str(json.dumps({"type": "end"}))
    except ConnectionError:
        return  # the server went away mid-send; the receiver reports how it closed


async def _receive(ws: aiohttp.ClientWebSocketResponse, renderer: Renderer, emit: _Printer) -> int:
    """Print server messages until ``session_ended`` (returns 0) or the close (returns 1)."""
    while True:
        msg = await ws.receive()
        if msg.type == aiohttp.WSMsgType.TEXT:
            try:
                message = json.loads(msg.data)
            except ValueError:
                emit(Output(stderr=f"ignoring a text frame that is not JSON: {msg.data[:80]!r}\n"))
                continue
            if not isinstance(message, dict):
                emit(Output(stderr=f"ignoring a JSON message that is not an object: {msg.data[:80]!r}\n"))
                continue
            emit(renderer.render(message))
            if message.get("type") == "session_ended":
                return 0
        elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            emit(renderer.render_close(ws.close_code, str(msg.extra or "")))
            return 1
        elif msg.type == aiohttp.WSMsgType.ERROR:
            emit(Output(stderr=f"connection error: {ws.exception()}\n"))
            return 1
        # BINARY frames are not part of the contract towards the client: ignore them.


async def _await_start(ws: aiohttp.ClientWebSocketResponse, renderer: Renderer, emit: _Printer) -> bool:
    """Wait for ``session_started``; print what came instead and return False if it does not."""
    msg = await ws.receive(timeout=START_TIMEOUT_S)
    if msg.type == aiohttp.WSMsgType.TEXT:
        try:
            message = json.loads(msg.data)
        except ValueError:
            message = None
        if isinstance(message, dict):
            emit(renderer.render(message))
            if message.get("type") == "session_started":
                return True
            if message.get("type") == "error":
                # The server normally closes right after a rejection: show the close code too.
                with contextlib.suppress(TimeoutError):
                    closing = await ws.receive(timeout=1.0)
                    if closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                        emit(renderer.render_close(ws.close_code, str(closing.extra or "")))
                return False
        emit(Output(stderr=f"expected session_started, got {str(msg.data)[:80]!r}\n"))
        return False
    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
        emit(renderer.render_close(ws.close_code, str(msg.extra or "")))
    else:
        emit(Output(stderr=f"expected session_started, got a {msg.type.name} frame\n"))
    return False


async def stream_pcm(
    pcm: bytes,
    url: str,
    *,
    renderer: Renderer,
    stdout: TextIO,
    stderr: TextIO,
    chunk_ms: int = 100,
    realtime: bool = False,
    token: str | None = None,
    speed: float = 0.0,
) -> int:
    """Stream PCM s16le 16 kHz mono to ``url`` and print the results; returns the exit code."""
    emit = _Printer(stdout, stderr)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(connect=CONNECT_TIMEOUT_S)) as session:
        try:
            ws = await session.ws_connect(url, headers=headers)
        except aiohttp.WSServerHandshakeError as error:
            emit(Output(stderr=f"{url}: WebSocket handshake refused: HTTP {error.status} {error.message}\n"))
            return 1
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            emit(Output(stderr=f"cannot connect to {url}: {error or type(error).__name__}\n"))
            return 1
        async with ws:
            try:
                if not await _await_start(ws, renderer, emit):
                    return 1
            except TimeoutError:
                emit(Output(stderr=f"no session_started from {url} within {START_TIMEOUT_S:.0f} s\n"))
                return 1
            return await _run_session(ws, pcm, chunk_ms, 1.0 if realtime else speed, renderer, emit)


async def _run_session(
    ws: aiohttp.ClientWebSocketResponse,
    pcm: bytes,
    chunk_ms: int,
    speed: float,
    renderer: Renderer,
    emit: _Printer,
) -> int:
    sender = asyncio.create_task(_send_audio(ws, pcm, chunk_ms, speed), name="asr-stream-send")
    receiver = asyncio.create_task(_receive(ws, renderer, emit), name="asr-stream-receive")
    try:
        await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        if not receiver.done():
            sender.result()  # re-raise a sending bug instead of waiting for a reply that won't come
            try:
                return await asyncio.wait_for(receiver, timeout=END_TIMEOUT_S)
            except TimeoutError:
                emit(Output(stderr=f"no session_ended within {END_TIMEOUT_S:.0f} s after end\n"))
                return 1
        return receiver.result()
    finally:
        for task in (sender, receiver):
            task.cancel()
        await asyncio.gather(sender, receiver, return_exceptions=True)
        emit(renderer.finish())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``asr stream`` options on its subparser."""
    parser.add_argument("file", metavar="FILE",
                        help="WAV, mp3, m4a, ogg, flac or video file (anything FFmpeg decodes)")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"edge WebSocket URL (default: {DEFAULT_URL})")
    parser.add_argument("--realtime", action="store_true", help="send at real-time pace, like a microphone")
    parser.add_argument(
        "--speed", type=float, default=2.0,
        help="times real time to send at, below the edge's max_realtime_factor (default 2; 0: unpaced)",
    )
    parser.add_argument("--json", action="store_true", help="print every server message as a JSON line")
    parser.add_argument(
        "--chunk-ms",
        type=int,
        default=100,
        metavar="MS",
        help="milliseconds of audio per frame (default 100)",
    )
    parser.add_argument("--token", default=None, help="bearer token, sent as 'Authorization: Bearer T'")


def run(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Entry point of ``asr stream``; returns the process exit code."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    if args.chunk_ms <= 0:
        err.write(f"--chunk-ms must be positive, got {args.chunk_ms}\n")
        return 2
    if args.speed < 0:
        err.write(f"--speed must be 0 (unpaced) or positive, got {args.speed}\n")
        return 2
    try:
        pcm = read_audio(args.file)
    except (AudioFormatError, OSError) as error:
        err.write(f"{error}\n")
        return 2
    renderer = Renderer(json_mode=args.json, tty=out.isatty())
    try:
        return asyncio.run(
            stream_pcm(
                pcm,
                args.url,
                renderer=renderer,
                stdout=out,
                stderr=err,
                chunk_ms=args.chunk_ms,
                realtime=args.realtime,
                token=args.token,
                speed=args.speed,
            )
        )
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return 130
