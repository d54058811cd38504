"""Python's garbage collector, tuned for a process that holds many sessions' objects.

A full collection walks every object the process holds. Measured on the edge with 400 streaming
sessions (Python 3.11, default thresholds 700/10/10): 184 young collections (372 ms) and one full
collection that stopped the event loop for 86 ms within 20 s, above the edge's 50 ms p99
chunk->ack budget on its own. So every role, as it starts (``common.role.run_worker``: after the
imports and the settings, before it connects or loads a model):

* freezes what is allocated by then (modules, classes, functions; ``gc.freeze``): collections no
  longer walk it;
* collects the young generation every ``threshold`` allocations instead of 700, and the older ones
  every ``OLDER_EVERY`` collections of the one below;
* times every collection into ``asr_gc_pause_seconds{generation}``.

``threshold`` 0 keeps Python's defaults (no freeze); the pauses are timed either way.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from common import metrics

OLDER_EVERY = 20
"""Collections of one generation between two of the next older one (Python's default: 10)."""


class _Timer:
    def __init__(self) -> None:
        self.started = 0.0
        self.by_generation = [metrics.GC_PAUSE.labels(str(g)) for g in range(3)]  # CPython's 3 generations

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.by_generation[info["generation"]].observe(time.perf_counter() - self.started)


def install(threshold: int) -> None:
    """Starts timing collections, then (``threshold`` > 0) collects once, freezes what is left and
    sets the thresholds. Once per process: later calls do nothing."""
    if any(isinstance(cb, _Timer) for cb in gc.callbacks):
        return
    gc.callbacks.append(_Timer())
    if threshold > 0:
        gc.collect()  # what start-up left as garbage goes now, not into the frozen generation
        gc.freeze()
        gc.set_threshold(threshold, OLDER_EVERY, OLDER_EVERY)
