"""cli.stream: renderer, chunking, and the client against a tiny in-test WebSocket server."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import socket
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cli.stream import CLEAR_LINE, Output, Renderer, add_arguments, chunks, run
from common.audio import read_wav

DATA = Path(__file__).resolve().parent.parent / "data"
WAV = DATA / "one_sentence.wav"
TIMEOUT_S = 20.0


# --- Renderer ----------------------------------------------------------------------------------


def _partial(text: str) -> dict[str, Any]:
    return {"type": "transcript", "is_final": False, "utterance_id": "u1", "text": text}


def _final(text: str, seq: int = 1) -> dict[str, Any]:
    return {"type": "transcript", "is_final": True, "seq": seq, "utterance_id": "u1", "text": text}


def test_tty_partials_in_place_then_final_line() -> None:
    r = Renderer(json_mode=False, tty=True)
    assert r.render({"type": "session_started", "session_id": "s"}) == Output()
    assert r.render(_partial("hello")) == Output(stdout=CLEAR_LINE + "hello")
    assert r.render(_partial("hello wor")) == Output(stdout=CLEAR_LINE + "hello wor")
    assert r.render(_final("Hello world.")) == Output(stdout=CLEAR_LINE + "Hello world.\n")
    # No partial on screen any more: the next final needs no clearing.
    assert r.render(_final("Again.", 2)) == Output(stdout="Again.\n")
    assert r.render({"type": "session_ended", "metrics": {}}) == Output()
    assert r.finish() == Output()


def _revision(text: str, seq: int) -> dict[str, Any]:
    return {"type": "revision", "seq": seq, "utterance_id": "u1", "text": text}


def test_pipe_writes_the_finals_when_the_session_ends() -> None:
    r = Renderer(json_mode=False, tty=False)
    assert r.render(_partial("hello")) == Output()
    assert r.render(_final("  Hello world. ", 1)) == Output()  # held: its revision may follow
    assert r.render(_final("Second.", 2)) == Output()
    assert r.render(_final("Third.", 3)) == Output()
    assert r.render(_final("", 4)) == Output()
    out = r.render({"type": "session_ended", "metrics": {}})
    assert out == Output(stdout="Hello world.\nSecond.\nThird.\n")  # an empty text writes no line
    assert r.finish() == Output()


def test_pipe_writes_finals_as_revised_even_when_the_revision_comes_late() -> None:
    r = Renderer(json_mode=False, tty=False)
    r.render(_final("Go forward 10 meters. Go forward 10 meters.", 1))
    for seq in range(2, 6):
        r.render(_final(f"Final {seq}.", seq))
    assert r.render(_revision(" Go forward ten meters. ", 1)) == Output()  # four finals later
    assert r.render(_revision("", 2)) == Output()  # no text: the final keeps its own
    assert r.render(_revision("Unknown.", 9)) == Output()  # no such final: ignored
    out = r.render({"type": "session_ended", "metrics": {}})
    assert out.stdout.splitlines() == ["Go forward ten meters.", "Final 2.", "Final 3.", "Final 4.", "Final 5."]


def test_pipe_writes_held_finals_when_the_connection_closes() -> None:
    r = Renderer(json_mode=False, tty=False)
    r.render(_final("One.", 1))
    r.render(_final("Two.", 2))
    out = r.render_close(1011, "internal")
    assert out.stdout == "One.\nTwo.\n" and "code 1011" in out.stderr
    r.render(_final("Three.", 3))
    assert r.finish() == Output(stdout="Three.\n")


def test_tty_prints_finals_live_and_leaves_them() -> None:
    r = Renderer(json_mode=False, tty=True)
    assert r.render(_final("First text.", 1)) == Output(stdout="First text.\n")
    assert r.render(_revision("Revised text.", 1)) == Output()
    assert r.render({"type": "session_ended", "metrics": {}}) == Output()


def test_error_goes_to_stderr_and_clears_partial() -> None:
    r = Renderer(json_mode=False, tty=True)
    r.render(_partial("hel"))
    out = r.render({"type": "error", "code": "CHUNK_TOO_LARGE", "message": "frame of 10485760 bytes"})
    assert out == Output(stdout=CLEAR_LINE, stderr="error CHUNK_TOO_LARGE: frame of 10485760 bytes\n")
    r.render(_partial("hel"))
    assert r.finish() == Output(stdout=CLEAR_LINE)


def test_close_message_names_code_and_meaning() -> None:
    r = Renderer(json_mode=False, tty=False)
    out = r.render_close(1013, "no capacity")
    assert out.stdout == ""
    assert "code 1013" in out.stderr and "capacity" in out.stderr and "no capacity" in out.stderr


@pytest.mark.parametrize("tty", [True, False])
def test_json_mode_prints_every_message(tty: bool) -> None:
    r = Renderer(json_mode=True, tty=tty)
    messages: list[dict[str, Any]] = [
        {"type": "session_started", "session_id": "s", "sample_rate": 16000},
        _partial("héllo"),
        _final("héllo."),
        {"type": "error", "code": "RATE_LIMITED", "message": "slow down"},
        {"type": "session_ended", "metrics": {"audio_bytes_received": 10}},
    ]
    for message in messages:
        out = r.render(message)
        assert out.stderr == ""
        assert out.stdout.endswith("\n") and out.stdout.count("\n") == 1
        assert json.loads(out.stdout) == message


# --- chunks ------------------------------------------------------------------------------------


def test_chunks_are_chunk_ms_long() -> None:
    pcm = bytes(range(256)) * 100  # 25,600 bytes = 0.8 s at 16 kHz
    parts = list(chunks(pcm, 100))
    assert [len(p) for p in parts] == [3200] * 8
    assert b"".join(parts) == pcm


def test_last_chunk_is_shorter() -> None:
    pcm = b"\x01\x00" * 2500
    parts = list(chunks(pcm, 100))
    assert [len(p) for p in parts] == [3200, 1800]
    assert b"".join(parts) == pcm
    assert list(chunks(b"", 100)) == []


def test_chunks_rejects_non_positive_length() -> None:
    with pytest.raises(ValueError):
        list(chunks(b"\x00\x00", 0))


# --- end to end against an in-test server --------------------------------------------------------


@dataclass
class FakeEdge:
    """Speaks the server side of the contract: one partial and one final per received chunk."""

    close_after_start: tuple[int, str] | None = None  # close with (code, reason) instead of serving
    received: bytearray = field(default_factory=bytearray)
    frames: int = 0
    headers: dict[str, str] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        self.headers = dict(request.headers)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "session_started", "session_id": "s1", "sample_rate": 16000})
        if self.close_after_start is not None:
            code, reason = self.close_after_start
            await ws.send_json({"type": "error", "code": "CAPACITY", "message": "edge full"})
            await ws.close(code=code, message=reason.encode())
            return ws
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.received += msg.data
                self.frames += 1
                n = self.frames
                await ws.send_json({"type": "transcript", "is_final": False, "text": f"partial {n}"})
                await ws.send_json({"type": "transcript", "is_final": True, "seq": n, "text": f"final {n}"})
            elif msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data) == {"type": "end"}:
                await ws.send_json({"type": "session_ended", "metrics": {"frames": self.frames}})
                await ws.close()
        return ws


async def _serve(edge: FakeEdge) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/v1/stream", edge.handle)
    runner = web.AppRunner(app)
    await asyncio.wait_for(runner.setup(), TIMEOUT_S)
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await asyncio.wait_for(site.start(), TIMEOUT_S)
        port = runner.addresses[0][1]
        yield f"ws://127.0.0.1:{port}/v1/stream"
    finally:
        await asyncio.wait_for(runner.cleanup(), TIMEOUT_S)


@pytest.fixture
def edge() -> FakeEdge:
    return FakeEdge()


@pytest.fixture
async def url(edge: FakeEdge) -> AsyncIterator[str]:
    async for address in _serve(edge):
        yield address


class TtyIO(io.StringIO):
    def isatty(self) -> bool:
        return True


def _args(file: Path, url: str, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="asr stream")
    add_arguments(parser)
    return parser.parse_args([str(file), "--url", url, *extra])


async def _run(args: argparse.Namespace, stdout: io.StringIO | None = None) -> tuple[int, str, str]:
    """The real entry point (it calls asyncio.run) in a thread, while this loop serves."""
    out = stdout if stdout is not None else io.StringIO()
    err = io.StringIO()
    code = await asyncio.wait_for(asyncio.to_thread(run, args, out, err), TIMEOUT_S)
    return code, out.getvalue(), err.getvalue()


async def test_streams_file_and_prints_finals(edge: FakeEdge, url: str) -> None:
    code, out, err = await _run(_args(WAV, url, "--chunk-ms", "200", "--token", "sekret"))
    assert (code, err) == (0, "")
    pcm = read_wav(WAV)
    assert bytes(edge.received) == pcm
    expected_frames = -(-len(pcm) // 6400)
    assert edge.frames == expected_frames
    assert out.splitlines() == [f"final {n}" for n in range(1, expected_frames + 1)]
    assert edge.headers["Authorization"] == "Bearer sekret"


async def test_tty_shows_partials_in_place(edge: FakeEdge, url: str) -> None:
    code, out, _ = await _run(_args(WAV, url, "--chunk-ms", "1000"), stdout=TtyIO())
    assert code == 0
    assert out.startswith(CLEAR_LINE + "partial 1" + CLEAR_LINE + "final 1\n")
    assert out.count("\n") == edge.frames


async def test_json_mode(edge: FakeEdge, url: str) -> None:
    code, out, err = await _run(_args(WAV, url, "--json", "--chunk-ms", "500"))
    assert (code, err) == (0, "")
    messages = [json.loads(line) for line in out.splitlines()]
    assert messages[0]["type"] == "session_started"
    assert messages[-1] == {"type": "session_ended", "metrics": {"frames": edge.frames}}
    assert len(messages) == 2 + 2 * edge.frames


async def test_realtime_paces_sending(edge: FakeEdge, url: str, tmp_path: Path) -> None:
    short = tmp_path / "short.wav"
    with wave.open(str(WAV), "rb") as src, wave.open(str(short), "wb") as dst:
        dst.setparams(src.getparams())
        dst.writeframes(src.readframes(8000))  # 0.5 s
    loop = asyncio.get_running_loop()
    started = loop.time()
    code, out, _ = await _run(_args(short, url, "--realtime", "--chunk-ms", "100"))
    assert code == 0
    assert loop.time() - started >= 0.4  # the last of 5 chunks leaves 0.4 s after the first
    assert out.splitlines() == [f"final {n}" for n in range(1, 6)]


async def test_error_close_exits_1(url: str, edge: FakeEdge) -> None:
    edge.close_after_start = (1013, "at capacity")
    code, out, err = await _run(_args(WAV, url))
    assert code == 1
    assert out == ""
    assert "error CAPACITY: edge full" in err
    assert "1013" in err and "at capacity" in err


async def test_unreachable_server_exits_1() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out, err = await _run(_args(WAV, f"ws://127.0.0.1:{port}/v1/stream"))
    assert code == 1
    assert out == ""
    assert f"cannot connect to ws://127.0.0.1:{port}/v1/stream" in err


def test_bad_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not audio")
    out, err = io.StringIO(), io.StringIO()
    assert run(_args(path, "ws://127.0.0.1:9/v1/stream"), out, err) == 2
    assert "not a WAV file" in err.getvalue() and "sox" in err.getvalue()
    assert out.getvalue() == ""


def test_missing_file_exits_2(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run(_args(tmp_path / "nope.wav", "ws://127.0.0.1:9/v1/stream"), out, err) == 2
    assert "nope.wav" in err.getvalue()
