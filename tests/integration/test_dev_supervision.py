"""`asr dev` supervises its children: one that keeps dying is reported and stops the stack (a
child that dies once is restarted: see test_vad_failover.py; nats-server too, here); one that
exits because of its configuration is not restarted at all, and invalid settings are refused
before anything starts."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DATA, ONE_SENTENCE, free_port
from tests.helpers import wer

pytestmark = pytest.mark.slow

ASR = str(Path(sys.executable).parent / "asr")
TIMEOUT_S = 180.0


def _child(parent: int, module: str) -> int | None:
    """The pid of ``parent``'s child running ``python -m module`` (or nats-server), if there is one now."""
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(parent)], capture_output=True, text=True,
                         check=False)
    for line in out.stdout.splitlines():
        pid, _, args = line.strip().partition(" ")
        program = args.split(" ", 1)[0]
        if args.endswith(f"-m {module}") or (module == "nats-server" and program.endswith("/nats-server")):
            return int(pid)
    return None


def _start_dev(tmp_path: Path) -> tuple[subprocess.Popen[str], Path, float]:
    """`asr dev --port 0` with its data and log under ``tmp_path``, once it says it is ready; and
    the deadline the test keeps to."""
    log_path = tmp_path / "dev.log"
    with log_path.open("w") as log:
        dev = subprocess.Popen([ASR, "dev", "--port", "0", "--data-dir", str(tmp_path / "data")],
                               stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + TIMEOUT_S
    while "ready: stream audio to" not in log_path.read_text():
        if dev.poll() is not None or time.monotonic() > deadline:
            dev.kill()
            dev.wait(60)
            raise AssertionError(log_path.read_text()[-3000:])
        time.sleep(0.2)
    return dev, log_path, deadline


def test_invalid_settings_are_refused_before_anything_starts(tmp_path: Path) -> None:
    # A setting every role refuses: asr dev reads the settings first and says so once.
    env = {**os.environ, "ASR_VAD_FRAME_MS": "25"}
    out = subprocess.run([ASR, "dev", "--port", str(free_port()), "--data-dir", str(tmp_path / "data")],
                         env=env, capture_output=True, text=True, timeout=60, check=False)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text[-3000:]
    assert out.stderr.count("vad_frame_ms=25") == 1, out.stderr
    assert "nats-server" not in text and "restarting" not in text  # nothing was started


def test_a_child_that_cannot_start_is_not_restarted(tmp_path: Path) -> None:
    # Valid settings, but a model folder that is not there: each ASR worker exits with code 3.
    env = {**os.environ, "ASR_MODEL": str(tmp_path / "no-such-model")}
    out = subprocess.run([ASR, "dev", "--port", str(free_port()), "--data-dir", str(tmp_path / "data")],
                         env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text[-3000:]
    assert "exited with code 3: its model cannot be loaded" in text and "not restarting it" in text
    assert "restarting it" not in text.replace("not restarting it", "")
    assert "no such folder" in text  # the worker's own reason is in its log
    assert "[dev] stopped" in text


def test_a_crash_loop_is_reported_and_stops_the_stack(tmp_path: Path) -> None:
    dev, log_path, deadline = _start_dev(tmp_path)
    try:
        killed: list[int] = []
        while dev.poll() is None and len(killed) < 10:  # killed as an OOM killer would, again and again
            pid = _child(dev.pid, "vad_worker")
            if pid is not None and pid not in killed:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.1)
        code = dev.wait(60)
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait(60)
    text = log_path.read_text()
    assert code == 1, text[-3000:]
    assert len(killed) == 6, killed  # 5 restarts within the window, then the stack stops
    assert text.count("vad_worker exited with code -9: restarting it") == 5, text[-3000:]
    assert "vad_worker exited 6 times within 60 s (last exit code -9): stopping the stack" in text
    assert "[dev] stopped" in text


def _stream(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ASR, "stream", str(DATA / "one_sentence_44k_stereo.wav"), "--url",
                           f"ws://127.0.0.1:{port}/v1/stream"], capture_output=True, text=True, timeout=60, check=False)


def test_a_killed_nats_server_is_started_again_on_its_port_with_its_data(tmp_path: Path) -> None:
    dev, log_path, deadline = _start_dev(tmp_path)
    data = tmp_path / "data"
    try:
        text = log_path.read_text()
        ready = re.search(r"ready: stream audio to ws://127\.0\.0\.1:(\d+)/", text)
        started = re.search(r"nats-server with JetStream at (nats://\S+)", text)
        assert ready is not None and started is not None, text[-3000:]
        port, url = int(ready.group(1)), started.group(1)
        before = _stream(port)
        assert before.returncode == 0, before.stderr

        bus = _child(dev.pid, "nats-server")
        assert bus is not None
        os.kill(bus, signal.SIGKILL)
        while f"nats-server exited with code -9: restarting it on {url}" not in log_path.read_text():
            assert dev.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        # The roles reconnect to the same URL; a new session is transcribed as before.
        while (after := _stream(port)).returncode != 0:
            assert dev.poll() is None and time.monotonic() < deadline, after.stderr
            time.sleep(1.0)
        lines = after.stdout.strip().splitlines()
        assert len(lines) == 1 and wer(ONE_SENTENCE, lines[0]) <= 0.25, after.stdout
        # And the session recorded before the kill is still in JetStream's data.
        listed = subprocess.run([ASR, "sessions", "--data-dir", str(data)], capture_output=True, text=True,
                                timeout=60, check=False)
        assert listed.returncode == 0 and len(listed.stdout.strip().splitlines()) == 3, listed.stdout + listed.stderr
    finally:
        dev.send_signal(signal.SIGTERM)
        code = dev.wait(60)
    assert code == 0, log_path.read_text()[-3000:]
