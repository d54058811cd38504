"""Figure 4's stack with one setting changed, A against B, runs alternated in one process.

Figure 4 (``benchmarks.capacity``) runs each stack once and compares it with direct decoding; a
setting that moves the fixed part (edge, nats-server, VAD worker) by a tenth is lost in a VM's drift
between two such runs. This script starts the headline stack of figure 4 (every final decoded
once: partials, speculation and revisions off) as A, the same stack with ``--set`` applied as B,
and runs A, B, A, B... (``--pairs`` of each), every run streaming the same ``--streams`` real-time
conversations with their chunks spread as independent clients send them (``capacity.phase``).

It prints and stores, per run: CPU seconds per audio second by process, the ASR processes' sum and
the fixed part's, final latency p50/p95 from the end of each turn, and WER. Direct decoding is not
timed: A and B decode the same cuts, so the ASR parts should agree and the difference is B's.

    .venv/bin/python -m benchmarks.overhead_ab --set ASR_AUDIO_BATCH_MS=200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.capacity import HEADLINE, OVERHEAD_RUNS, corpus_wer, our_stack, quiesce, run_level
from benchmarks.conversations import conversations
from benchmarks.pipeline_latency import header, warm_up

FIXED = ("ingest", "nats-server", "vad_worker")
"""The processes of the fixed part; every other measured process is an ASR process."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", dest="changes", action="append", required=True, metavar="ASR_NAME=VALUE",
                   help="B's change over A (repeatable), as the stack's environment spells it")
    p.add_argument("--pairs", type=int, default=2, help="runs of A and of B, alternated (default 2)")
    p.add_argument("--streams", type=int, default=12, help="concurrent real-time conversations (default 12)")
    p.add_argument("--conversations", type=int, default=4, help="distinct conversations, reused round the "
                   "streams (default 4, as figure 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the runs here")
    args = p.parse_args(argv)
    for change in args.changes:
        name, sep, _ = change.partition("=")
        if not sep or not name.startswith("ASR_"):
            p.error(f"--set {change!r}: write ASR_NAME=VALUE, e.g. ASR_AUDIO_BATCH_MS=200")
    if args.pairs < 1 or args.streams < 1 or args.conversations < 1:
        p.error("--pairs, --streams and --conversations must be at least 1")
    args.change = dict(c.split("=", 1) for c in args.changes)
    return args


def split(cpu: dict[str, float], audio_s: float) -> dict[str, float]:
    """CPU-s per audio second: each process, the ASR processes together and the fixed part."""
    out = {name: round(s / audio_s, 5) for name, s in sorted(cpu.items())}
    out["asr"] = round(sum(s for n, s in cpu.items() if n not in FIXED) / audio_s, 5)
    out["fixed"] = round(sum(s for n, s in cpu.items() if n in FIXED) / audio_s, 5)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command, when, info = header("benchmarks.overhead_ab", argv)
    headline = dict(OVERHEAD_RUNS[0][1])  # figure 4's first stack, HEADLINE
    convs = conversations(args.conversations, args.seed)
    picked = [convs[i % len(convs)] for i in range(args.streams)]
    audio_s = sum(c.duration_s for c in picked)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="asr-overhead-ab-") as tmp_name:
        tmp = Path(tmp_name)
        with (tmp / "stacks.log").open("a") as log:
            for k in range(args.pairs * 2):
                label = "AB"[k % 2]
                env = {**headline, **(args.change if label == "B" else {})}
                with our_stack("default", env, log, tmp) as (stack, pids, _):
                    url = f"ws://127.0.0.1:{stack.port}/v1/stream"
                    asyncio.run(warm_up(url))
                    asyncio.run(quiesce(pids))
                    streams, wall, cpu = asyncio.run(run_level(picked, url, None, 0.0, True, pids))
                latency = [x for s in streams for x in s.final_latencies()]
                ended = sum(1 for s in streams if s.ended and not s.error)
                c = split(cpu, audio_s)
                run = {"run": k + 1, "label": label, "cpu_per_audio_s": c,
                       "final_p50_ms": round(float(np.percentile(latency, 50)) * 1000) if latency else None,
                       "final_p95_ms": round(float(np.percentile(latency, 95)) * 1000) if latency else None,
                       "wer": corpus_wer([s.conv.text for s in streams], [s.hypothesis() for s in streams]),
                       "ended": f"{ended}/{len(streams)}", "wall_s": round(wall, 1)}
                runs.append(run)
                print(f"  run {k + 1} ({label}): fixed {c['fixed']:.4f} (edge {c.get('ingest', 0):.4f}, nats-server "
                      f"{c.get('nats-server', 0):.4f}, VAD {c.get('vad_worker', 0):.4f}), ASR {c['asr']:.4f} CPU-s per "
                      f"audio-s; final p50 {run['final_p50_ms']} / p95 {run['final_p95_ms']} ms; WER {run['wer']:.3f}; "
                      f"ended {run['ended']}", flush=True)
    print(f"\nA: figure 4's headline stack ({HEADLINE}); B: A with {' '.join(args.changes)}; {args.streams} streams of "
          f"{len(convs)} conversations, {audio_s:.0f} s of audio a run\n")
    print("| | fixed part (edge + nats-server + VAD) | ASR processes | final p50 / p95 (ms) | WER |")
    print("| --- | --- | --- | --- | --- |")
    for label in "AB":
        mine = [r for r in runs if r["label"] == label]
        fixed_s = ", ".join(f"{r['cpu_per_audio_s']['fixed']:.4f}" for r in mine)
        asr_s = ", ".join(f"{r['cpu_per_audio_s']['asr']:.4f}" for r in mine)
        lat_s = ", ".join(f"{r['final_p50_ms']} / {r['final_p95_ms']}" for r in mine)
        wer_s = ", ".join(f"{r['wer']:.3f}" for r in mine)
        print(f"| {label} | {fixed_s} | {asr_s} | {lat_s} | {wer_s} |")
    fixed = {label: statistics.mean(r["cpu_per_audio_s"]["fixed"] for r in runs if r["label"] == label)
             for label in "AB"}
    print(f"\nB's fixed part against A's: {fixed['B'] / fixed['A']:.2f}x (means of the runs)")
    if args.json:
        args.json.write_text(json.dumps({"date": when, "command": command, "machine": info, "change": args.change,
                                         "streams": args.streams, "audio_s": audio_s, "runs": runs}, indent=1))
        print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
