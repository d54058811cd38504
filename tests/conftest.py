"""Shared fixtures: real servers on free ports with their own data folders, stopped afterwards."""

from __future__ import annotations

import io
import socket
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.nats_server import NatsServer

DATA = Path(__file__).parent / "data"

# What the committed speech says (see tests/data/make_speech.sh).
THREE_UTTERANCES = [
    "Please call me back tomorrow morning.",
    "We will meet at the train station at noon.",
    "Open the window and let the fresh air in.",
]
ONE_SENTENCE = "We will meet at the train station at noon."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pcm_of(name: str) -> bytes:
    """PCM s16le 16 kHz mono frames of a committed WAV (those files are already in that format)."""
    with wave.open(str(DATA / name), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        return w.readframes(w.getnframes())


def wav_bytes(pcm: bytes, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()
