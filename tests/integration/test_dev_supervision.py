"""`asr dev` supervises its children: one that keeps dying is reported and stops the stack (a
child that dies once is restarted: see test_vad_failover.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.slow

ASR = str(Path(sys.executable).parent / "asr")


def test_a_crash_loop_is_reported_and_stops_the_stack(tmp_path: Path) -> None:
    # A setting every role refuses: each child exits with code 2 as soon as it starts.
    env = {**os.environ, "ASR_VAD_FRAME_MS": "25"}
    out = subprocess.run([ASR, "dev", "--port", str(free_port()), "--data-dir", str(tmp_path / "data")],
                         env=env, capture_output=True, text=True, timeout=180, check=False)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text[-3000:]
    assert "exited with code 2: restarting it" in text
    assert "exited 6 times within 60 s (last exit code 2): stopping the stack" in text
    assert "vad_frame_ms=25" in text  # the child's own reason is in its log
    assert "[dev] stopped" in text
