"""The ASR worker: faster-whisper decodes of the jobs the VAD worker stores (asr_worker.worker)."""

from common.blas import one_blas_thread

one_blas_thread()  # before numpy is imported (common/blas.py)
