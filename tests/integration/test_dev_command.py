"""The README's run command: `asr dev` brings the stack up, `asr stream` prints the right words,
Ctrl-C stops everything. Runs the installed console scripts as a user would."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.sizing import asr_pool, usable_cores
from tests.conftest import DATA, ONE_SENTENCE
from tests.helpers import wer

pytestmark = pytest.mark.slow

ASR = str(Path(sys.executable).parent / "asr")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False)
    return [int(x) for x in out.stdout.split()]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_asr_dev_then_asr_stream_then_ctrl_c(tmp_path: Path) -> None:
    log_path = tmp_path / "dev.log"
    with log_path.open("w") as log:
        # --port 0: the OS picks the edge's port (no race with other programs), printed when ready.
        # Ctrl-C as a terminal delivers it: a test run started in the background of a
        # non-interactive shell ignores SIGINT, and the child would inherit that.
        dev = subprocess.Popen([ASR, "dev", "--port", "0", "--data-dir", str(tmp_path / "data")],
                               stdout=log, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 120
        while "ready: stream audio to" not in log_path.read_text():
            assert dev.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        text = log_path.read_text()
        match = re.search(r"ready: stream audio to ws://127\.0\.0\.1:(\d+)/v1/stream", text)
        assert match is not None, text
        port = int(match.group(1))
        assert port > 0
        # Its own nats-server, never the usual 4222 (which may belong to someone else).
        nats_line = next(line for line in text.splitlines() if "nats-server with JetStream at" in line)
        assert ":4222 " not in nats_line and "nats://127.0.0.1:" in nats_line
        children = _children(dev.pid)
        asr_workers = asr_pool(usable_cores()).processes  # asr dev sizes the ASR pool to the cores
        assert len(children) == 3 + asr_workers, children  # nats-server, ingest, vad_worker, the ASR pool

        out = subprocess.run(
            [ASR, "stream", str(DATA / "one_sentence_44k_stereo.wav"), "--url", f"ws://127.0.0.1:{port}/v1/stream"],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert out.returncode == 0, out.stderr
        lines = out.stdout.strip().splitlines()
        assert len(lines) == 1 and wer(ONE_SENTENCE, lines[0]) <= 0.25, out.stdout
    finally:
        dev.send_signal(signal.SIGINT)
        code = dev.wait(60)
    assert code == 0, log_path.read_text()[-3000:]
    assert "[dev] stopped" in log_path.read_text()
    for pid in children:
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_asr_dev_refuses_a_busy_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([ASR, "dev", "--port", str(port)], capture_output=True, text=True, timeout=30,
                             check=False)
    assert out.returncode == 2 and f"port {port}" in out.stderr and "--port" in out.stderr


def test_asr_stream_explains_what_it_cannot_read(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.wav"
    bogus.write_text("not audio")
    out = subprocess.run([ASR, "stream", str(bogus), "--url", "ws://127.0.0.1:9/v1/stream"],
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 2 and "not a WAV file" in out.stderr and "sox" in out.stderr
