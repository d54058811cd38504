"""What the local stack costs while no one speaks: CPU of each process over a quiet spell.

    .venv/bin/python -m benchmarks.idle [--seconds 30] [--settle 10] [--rounds 1]

Starts the stack as `asr dev` would on this machine (``benchmarks.capacity``'s ``default`` pool:
own nats-server on a free port, one edge, one VAD worker, the sized ASR pool), waits until every
worker is ready and ``--settle`` seconds more, then reads each process's CPU seconds from /proc
over ``--seconds`` with no session open, and prints them in cores. Each round is a fresh stack.
Any ``ASR_*`` variable of the shell reaches the stack. What an idle stack spends is what the
fixed costs of figure 4 (``benchmarks.capacity --overhead-streams``) are made of. Not a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks import procstat
from benchmarks.capacity import our_stack


def idle_cores(seconds: float, settle: float) -> tuple[str, dict[str, float]]:
    """One fresh stack: what it runs, and each process's CPU in cores over ``seconds`` of quiet."""
    with (tempfile.TemporaryDirectory(prefix="asr-idle-") as tmp, open(Path(tmp) / "stack.log", "w") as log,
          our_stack("default", {}, log, Path(tmp)) as (_, pids, real)):
        time.sleep(settle)
        before = procstat.snapshot(pids)
        time.sleep(seconds)
        spent = procstat.delta(before, procstat.snapshot(pids))
    return real, {name: cpu / seconds for name, cpu in sorted(spent.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="quiet spell measured, per round")
    parser.add_argument("--settle", type=float, default=10.0, help="wait after the stack is ready")
    parser.add_argument("--rounds", type=int, default=1, help="fresh stacks, one after the other")
    args = parser.parse_args()
    for round_ in range(1, args.rounds + 1):
        real, cores = idle_cores(args.seconds, args.settle)
        parts = ", ".join(f"{name} {value:.4f}" for name, value in cores.items())
        print(f"round {round_} ({real}): whole stack {sum(cores.values()):.4f} cores; {parts}", flush=True)


if __name__ == "__main__":
    main()
