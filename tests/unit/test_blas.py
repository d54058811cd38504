"""common.blas: decoding processes give numpy's OpenBLAS one thread unless the operator chose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = "import asr_worker.transcriber, os; print(os.environ.get('OPENBLAS_NUM_THREADS'))"


def _probe(extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"} | extra
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def test_the_asr_worker_package_sets_one_thread_before_numpy_loads() -> None:
    assert _probe({}) == "1"


def test_an_operators_own_setting_is_kept() -> None:
    assert _probe({"OPENBLAS_NUM_THREADS": "4"}) == "4"
