"""common.gc_pauses: start-up objects frozen, thresholds set, every collection timed. Each case runs
in its own interpreter, since the collector's state is per process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import gc, json, sys
from common import gc_pauses, metrics
gc_pauses.install(int(sys.argv[1]))
gc_pauses.install(int(sys.argv[1]))  # a second call does nothing
gc.collect()
count = sum(s.value for s in metrics.GC_PAUSE.collect()[0].samples
            if s.name.endswith("_count") and s.labels["generation"] == "2")
print(json.dumps({"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count(), "full_collections_timed": count}))
"""


def probe(threshold: int) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", PROBE, str(threshold)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("threshold", [50_000, 1_000])
def test_a_threshold_freezes_start_up_and_sets_the_generations(threshold: int) -> None:
    got = probe(threshold)
    assert got["threshold"] == [threshold, 20, 20]
    assert isinstance(got["frozen"], int) and got["frozen"] > 10_000  # modules, classes, functions
    assert got["full_collections_timed"] == 2  # install's own collection, then the probe's, each timed once


def test_zero_keeps_pythons_defaults_and_still_times_collections() -> None:
    got = probe(0)
    assert got["threshold"] == [700, 10, 10]
    assert got["frozen"] == 0
    assert got["full_collections_timed"] == 1
