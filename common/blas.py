"""numpy's BLAS gets one thread in processes that decode speech.

The ASR worker parallelises by processes and slots (common.sizing); the matrix products numpy
does inside a decode (faster-whisper's mel filter bank, the word-timestamp alignment) are small.
OpenBLAS, which numpy's wheels bundle, starts one thread per core for them and lets those
threads spin after each product: on a 2-core machine that doubled the CPU of a 15 s window's
features (10.1 against 4.8 ms) for no gain in wall time, and on a 16-core GPU host four
concurrent decodes kept ten cores busy. numpy reads the variable once, when it is first
imported, so this must run before that; an operator's own OPENBLAS_NUM_THREADS is kept.
"""

from __future__ import annotations

import os

VARIABLE = "OPENBLAS_NUM_THREADS"


def one_blas_thread() -> None:
    os.environ.setdefault(VARIABLE, "1")
