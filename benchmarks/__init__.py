"""Benchmarks (benchmarks/README.md). Their direct faster-whisper baselines run in this process
with the ASR worker's own thread settings, numpy's BLAS included."""

from common.blas import one_blas_thread

one_blas_thread()  # before numpy is imported (common/blas.py)
