"""How many ASR processes, jobs per process and threads per job a machine should run.

Pure arithmetic in :func:`asr_pool`; :func:`usable_cores` reads what the process may really use
(CPU affinity and a cgroup v2 quota, as in a container limited with ``--cpus``).

The rule on CPU: one single-threaded transcription slot per usable core, less one core in eight
kept for the edge, the VAD workers and nats-server (none below two cores, where the ASR work is
nearly all of the load). Slots are spread over processes rather than threads of one process by
default: a process per slot keeps the Python half of decoding (faster-whisper's token loop) off a
shared GIL. The total of OpenMP threads (processes x concurrency x cpu_threads) never exceeds the
cores: on shared cores a second thread per job slows every job down.

On a GPU one process feeds the device; concurrency is the number of CTranslate2 workers that
overlap their passes on it (``gpu_streams``), each with one CPU thread for the host-side work.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

_RESERVE_PER_CORES = 8  # keep one core in this many for edge, VAD and bus
DEFAULT_GPU_STREAMS = 4


@dataclass(frozen=True, slots=True)
class AsrPool:
    processes: int
    """ASR worker processes to start."""
    concurrency: int
    """``asr_concurrency`` of each process (jobs one process runs at once)."""
    cpu_threads: int
    """``cpu_threads`` of each process (CTranslate2 / OpenMP threads per job)."""

    @property
    def threads(self) -> int:
        """OpenMP threads the whole pool may run at once."""
        return self.processes * self.concurrency * self.cpu_threads

    def env(self) -> dict[str, str]:
        """The ASR_* variables one worker process of this pool needs."""
        return {"ASR_ASR_CONCURRENCY": str(self.concurrency), "ASR_CPU_THREADS": str(self.cpu_threads)}


def asr_pool(cores: int, *, device: str = "cpu", layout: str = "processes",
             gpu_streams: int = DEFAULT_GPU_STREAMS) -> AsrPool:
    """The ASR pool for ``cores`` usable cores.

    ``layout`` = "processes" (one process per slot) or "threads" (one process, ``asr_concurrency``
    slots). ``device`` = "cpu", or "cuda" for one process with ``gpu_streams`` concurrent jobs.
    """
    if cores < 1:
        raise ValueError(f"cores must be at least 1, got {cores}")
    if layout not in ("processes", "threads"):
        raise ValueError(f"layout {layout!r} is unknown; use processes or threads")
    if device == "cuda":
        if gpu_streams < 1:
            raise ValueError(f"gpu_streams must be at least 1, got {gpu_streams}")
        return AsrPool(processes=1, concurrency=min(gpu_streams, cores), cpu_threads=1)
    if device != "cpu":
        raise ValueError(f"device {device!r} is unknown; use cpu or cuda")
    slots = max(1, cores - cores // _RESERVE_PER_CORES)
    if layout == "threads":
        return AsrPool(processes=1, concurrency=slots, cpu_threads=1)
    return AsrPool(processes=slots, concurrency=1, cpu_threads=1)


def _cgroup_cores(root: Path) -> float | None:
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def usable_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota (rounded up)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_cores(cgroup_root)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)
