"""Word error rate of the streaming pipeline beside faster-whisper on the whole files, by kind of clip.

    .venv/bin/python -m benchmarks.accuracy [--streams 3] [--latency-streams 1] [--kinds sentence,...]
        [--limit N] [--json FILE] [--cache DIR] [--direct-seeds 5] [--repeats 1] [--gain-db 0]

1. Corpus: `benchmarks.corpus.build` (generated on first use, then read from its cache folder).
2. Direct, in this process before the stack starts: faster-whisper with the same model and compute
   type as the ASR worker (bundled tiny.en, int8, cpu_threads=1) and its *default* transcribe
   options (beam 5, temperature fallback, condition_on_previous_text, no VAD), on each whole WAV,
   under ``--direct-seeds`` seeds (5): the fallback samples, so "direct" is the mean WER over the
   seeds, the range beside it (`benchmarks.seeds`).
3. Pipeline: a private `cli.dev.Stack` (own nats-server on a free port, edge, VAD and ASR workers;
   any ASR_* variables of this shell reach it). Accuracy pass: every clip streamed like a
   microphone (100 ms chunk k leaves at t0 + (k+1)·100 ms), ``--streams`` sessions at once, then
   ``end``; the finals are joined in order, each as the client shows it in the end (with its
   ``revision``, if one came; the "1st pass" column: as first sent). Latency pass: the ``--latency-kinds`` clips (the
   conversations by default) again, ``--latency-streams`` at once (1 by default, as the scenarios promise), to time each
   reference sentence or turn: arrival of the first final whose audio reaches the end of its speech
   − (t0 + the time its speech ends in the clip).

``--gain-db G`` plays every clip G dB louder or quieter (to both direct and the pipeline: a copy of
each WAV scaled and clipped to 16 bits, under the cache folder), to see that neither accuracy nor
the no-speech clips depend on the level a microphone or a phone line happens to deliver.

WER is corpus-level per kind (all errors / all reference words, after lower-casing, removing
punctuation and spelling out numbers: `benchmarks.wer`); on the no-speech kinds the table counts
words instead. Beside each kind, the 95 % interval of pipeline WER minus direct WER from a paired
bootstrap over the kind's clips (`benchmarks.paired_bootstrap`): how many words a kind's
difference is worth. The
table goes to stdout and everything, per clip, to ``--json``. Not a test: numbers depend on the
machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from asr_worker.transcriber import resolve_model_path
from benchmarks.corpus import DEFAULT_CACHE, NO_SPEECH, Clip, build, write_samples
from benchmarks.paired_bootstrap import errors_of, paired_interval
from benchmarks.seeds import DEFAULT_SEEDS, seed_decoders, spread
from benchmarks.wer import corpus_wer, normalise
from cli.dev import Stack
from common import sizing
from common.settings import Settings, load
from tests.helpers import connect

CHUNK_MS = 100
SLACK_S = 90.0

# --- level ---------------------------------------------------------------------------------------


def at_gain(clips: list[Clip], gain_db: float, folder: Path) -> list[Clip]:
    """The same clips ``gain_db`` louder (or quieter), as 16-bit WAVs under ``folder``: scaled,
    rounded and clipped as a sound card would deliver them. 0 dB returns the clips as they are.
    The copies are written anew every time (a second or two), so they follow a rebuilt corpus."""
    if gain_db == 0:
        return clips
    factor = 10 ** (gain_db / 20)
    out = []
    for clip in clips:
        path = folder / clip.kind / f"{clip.name}.wav"
        write_samples(path, np.frombuffer(clip.pcm(), dtype="<i2").astype(np.float64) * factor, clip.rate)
        out.append(replace(clip, path=str(path)))
    return out


# --- direct faster-whisper --------------------------------------------------------------------


@dataclass(slots=True)
class Direct:
    """One clip decoded directly: its text under each seed, and the first decode's seconds."""

    texts: list[str]
    seconds: float
    sampled: bool
    """The first decode fell back to sampling somewhere (only then can another seed change it)."""


def run_direct(clips: list[Clip], settings: Settings, seeds: int) -> dict[str, Direct]:
    """Clip name -> its `Direct`: faster-whisper's default options on the whole file, under seeds
    0..``seeds``-1 (`benchmarks.seeds`). A clip whose first decode never left temperature 0 decodes
    the same under every seed (beam search, and the fallback's choice, are deterministic), so only
    the sampled ones are decoded again."""
    from faster_whisper import WhisperModel

    out: dict[str, Direct] = {}
    for seed in range(seeds):
        seed_decoders(seed)
        model = WhisperModel(resolve_model_path(settings.model), device=settings.device,
                             compute_type=settings.compute_type, cpu_threads=settings.cpu_threads,
                             local_files_only=True)
        for i, clip in enumerate(clips):
            if seed and not out[clip.name].sampled:
                out[clip.name].texts.append(out[clip.name].texts[0])
                continue
            start = time.perf_counter()
            segments = list(model.transcribe(clip.path)[0])
            text = " ".join(s.text.strip() for s in segments)
            took = time.perf_counter() - start
            if seed:
                out[clip.name].texts.append(text)
            else:
                out[clip.name] = Direct([text], took, any(s.temperature > 0 for s in segments))
            print(f"  direct seed {seed} {i + 1}/{len(clips)} {clip.name}: {took:.1f}s", file=sys.stderr)
        del model
    sampled = sum(d.sampled for d in out.values())
    print(f"  direct: {sampled} of {len(clips)} clips sampled at some window, decoded under {seeds} seeds",
          file=sys.stderr)
    return out


# --- pipeline sessions ------------------------------------------------------------------------


@dataclass(slots=True)
class Streamed:
    clip: str
    finals: list[dict[str, Any]] = field(default_factory=list)
    final_arrival_s: list[float] = field(default_factory=list)  # since audio time 0
    partials: list[dict[str, Any]] = field(default_factory=list)
    revisions: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    send_lag_s: float = 0.0

    @property
    def text(self) -> str:
        """The finals as the client shows them in the end: each with its revision, if one came."""
        revised = {r["seq"]: r["text"] for r in self.revisions}
        return " ".join(revised.get(f["seq"], f["text"]) for f in sorted(self.finals, key=lambda f: f["seq"]))

    @property
    def first_text(self) -> str:
        """The finals as first sent (before revisions)."""
        return " ".join(f["text"] for f in sorted(self.finals, key=lambda f: f["seq"]) if f["text"])


async def stream_clip(http: aiohttp.ClientSession, port: int, clip: Clip) -> Streamed:
    result = Streamed(clip.name)
    pcm = clip.pcm()
    step = clip.rate * 2 * CHUNK_MS // 1000
    url = f"ws://127.0.0.1:{port}/v1/stream?sample_rate={clip.rate}"
    try:
        async with asyncio.timeout(clip.duration_s + SLACK_S):
            client = await connect(http, url)
            t0 = time.monotonic()

            async def read() -> None:
                async for msg in client.ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    data = json.loads(msg.data)
                    if data["type"] == "transcript" and data["is_final"]:
                        result.finals.append(data)
                        result.final_arrival_s.append(time.monotonic() - t0)
                        data["arrival_s"] = result.final_arrival_s[-1]
                    elif data["type"] == "transcript":
                        result.partials.append({**data, "arrival_s": time.monotonic() - t0})
                    elif data["type"] == "revision":
                        result.revisions.append({**data, "arrival_s": time.monotonic() - t0})
                    elif data["type"] == "session_ended":
                        return

            reader = asyncio.create_task(read())
            try:
                for k, i in enumerate(range(0, len(pcm), step)):
                    due = t0 + (k + 1) * CHUNK_MS / 1000
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    result.send_lag_s = max(result.send_lag_s, time.monotonic() - due)
                    await client.ws.send_bytes(pcm[i : i + step])
                await client.send_json({"type": "end"})
                await reader
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                await client.ws.close()
    except (TimeoutError, aiohttp.ClientError, AssertionError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:200]
    return result


async def stream_all(port: int, clips: list[Clip], streams: int) -> list[Streamed]:
    """Every clip once, at most ``streams`` sessions at a time, in corpus order."""
    slots = asyncio.Semaphore(streams)

    async def one(http: aiohttp.ClientSession, clip: Clip, index: int) -> Streamed:
        async with slots:
            result = await stream_clip(http, port, clip)
            print(f"  stream {index + 1}/{len(clips)} {clip.name}: {len(result.finals)} finals "
                  f"{result.error}", file=sys.stderr)
            return result

    async with aiohttp.ClientSession() as http:
        return list(await asyncio.gather(*(one(http, c, i) for i, c in enumerate(clips))))


def latencies(clip: Clip, streamed: Streamed) -> list[float]:
    """Per reference segment: arrival of the first final whose audio reaches the segment's end."""
    out = []
    pairs = sorted(zip(streamed.finals, streamed.final_arrival_s, strict=True), key=lambda p: p[0]["seq"])
    for seg in clip.segments:
        for final, arrival in pairs:
            if final["end_s"] >= seg.end_s - 0.05:
                out.append(arrival - seg.end_s)
                break
    return out


def raw_partial_shrinks(streamed: Streamed) -> int:
    """Partials with fewer words than the previous partial of the same utterance."""
    shrinks, last = 0, dict[str, int]()
    for p in streamed.partials:
        n = len(p["text"].split())
        if n < last.get(p["utterance_id"], 0):
            shrinks += 1
        last[p["utterance_id"]] = n
    return shrinks


# --- report ------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def report(clips: list[Clip], direct: dict[str, Direct], runs: list[dict[str, Streamed]],
           timed: dict[str, Streamed], settings: Settings) -> dict[str, Any]:
    """The table by kind. WERs are means: direct's over its seeds, the pipeline's over the accuracy
    passes (``runs``; the other columns are the first pass's)."""
    piped = runs[0]
    seeds = min(len(d.texts) for d in direct.values())
    kinds: dict[str, list[Clip]] = {}
    for c in clips:
        kinds.setdefault(c.kind, []).append(c)
    rows = []
    for kind, group in [*kinds.items(), ("ALL speech", [c for c in clips if c.kind not in NO_SPEECH])]:
        refs = [c.reference for c in group]
        row: dict[str, Any] = {"kind": kind, "clips": len(group),
                               "audio_s": round(sum(c.duration_s for c in group), 1),
                               "ref_words": sum(len(normalise(r).split()) for r in refs)}
        if kind in NO_SPEECH:
            row["direct_words"] = max(sum(len(normalise(direct[c.name].texts[k]).split()) for c in group)
                                      for k in range(seeds))
            row["pipeline_words"] = max(sum(len(normalise(run[c.name].text).split()) for c in group) for run in runs)
        else:
            by_seed = spread([corpus_wer(refs, [direct[c.name].texts[k] for c in group]) for k in range(seeds)])
            row["direct_wer"] = by_seed.mean
            row["direct_wer_seeds"] = list(by_seed.values)
            by_run = [corpus_wer(refs, [run[c.name].text for c in group]) for run in runs]
            row["pipeline_wer"] = spread(by_run).mean
            row["pipeline_wer_runs"] = by_run
            row["first_pass_wer"] = spread([corpus_wer(refs, [run[c.name].first_text for c in group])
                                            for run in runs]).mean
            interval = paired_interval([errors_of(c.reference, direct[c.name].texts[:seeds],
                                                  [run[c.name].text for run in runs]) for c in group])
            row["pipeline_minus_direct_95"] = [round(interval.low, 4), round(interval.high, 4)]
            row["pipeline_worse_share"] = round(interval.worse_share, 3)
        lat = [x for c in group if c.name in timed for x in latencies(c, timed[c.name])]
        row["latency_p50_ms"] = round(pct(lat, 50) * 1000) if lat else None
        row["latency_p95_ms"] = round(pct(lat, 95) * 1000) if lat else None
        finals = [f for c in group for f in piped[c.name].finals]
        row["finals"] = len(finals)
        row["revisions"] = sum(len(piped[c.name].revisions) for c in group)
        row["longest_final_s"] = round(max((f["end_s"] - f["start_s"] for f in finals), default=0.0), 2)
        row["raw_partial_shrinks"] = sum(raw_partial_shrinks(piped[c.name]) for c in group)
        rows.append(row)
    print()
    print(f"{'kind':13} {'clips':>5} {'audio s':>8} {'words':>6} {'direct':>8} {'seeds':>11} {'pipeline':>9} "
          f"{'difference 95 %':>15} {'1st pass':>9} "
          f"{'lat p50':>8} {'lat p95':>8} {'finals':>6} {'revised':>7} {'longest':>8} {'shrinks':>7}")
    for r in rows:
        if "direct_wer" in r:
            d, p, f1 = f"{r['direct_wer']:.3f}", f"{r['pipeline_wer']:.3f}", f"{r['first_pass_wer']:.3f}"
            rng = f"{min(r['direct_wer_seeds']):.3f}-{max(r['direct_wer_seeds']):.3f}"
            low, high = r["pipeline_minus_direct_95"]
            gap = f"{low:+.3f}..{high:+.3f}"
        else:
            d, p, f1, rng, gap = f"{r['direct_words']}w", f"{r['pipeline_words']}w", "-", "-", "-"
        lat50 = "-" if r["latency_p50_ms"] is None else f"{r['latency_p50_ms']}ms"
        lat95 = "-" if r["latency_p95_ms"] is None else f"{r['latency_p95_ms']}ms"
        print(f"{r['kind']:13} {r['clips']:5d} {r['audio_s']:8.1f} {r['ref_words']:6d} {d:>8} {rng:>11} {p:>9} "
              f"{gap:>15} {f1:>9} "
              f"{lat50:>8} {lat95:>8} {r['finals']:6d} {r['revisions']:7d} {r['longest_final_s']:7.1f}s "
              f"{r['raw_partial_shrinks']:7d}")
    return {"rows": rows, "settings": {k: v for k, v in settings.masked().items() if k in SHOWN_SETTINGS}}


SHOWN_SETTINGS = ("model", "compute_type", "beam_size", "cpu_threads", "asr_concurrency", "endpointing_ms",
                  "long_endpointing_ms", "long_utterance_seconds", "soft_utterance_seconds",
                  "max_utterance_seconds", "partial_interval_ms", "vad_aggressiveness", "context_chars",
                  "acoustic_context_seconds", "acoustic_context_max_snr_db", "revise_finals", "carry_empty_finals",
                  "revision_max_logprob", "revision_max_lag_ms")


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=3, help="sessions at once in the accuracy pass")
    parser.add_argument("--latency-streams", type=int, default=1,
                        help="sessions at once in the latency pass; 0 skips it")
    parser.add_argument("--kinds", default="", help="comma-separated kinds to run (default: all)")
    parser.add_argument("--latency-kinds", default="conversation", help="kinds streamed again in the latency pass")
    parser.add_argument("--limit", type=int, default=0, help="at most this many clips of each kind")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/accuracy.json"))
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--repeats", type=int, default=1,
                        help="accuracy passes; the pipeline's WER is their mean (its decoder samples too)")
    parser.add_argument("--direct-seeds", type=int, default=DEFAULT_SEEDS,
                        help="seeds of direct faster-whisper's sampling; its WER is their mean "
                             f"(default {DEFAULT_SEEDS})")
    pool = sizing.asr_pool(sizing.usable_cores())
    parser.add_argument("--asr-workers", type=int, default=pool.processes,
                        help=f"ASR worker processes (default: what `asr dev` starts here, {pool.processes})")
    parser.add_argument("--gain-db", type=float, default=0.0,
                        help="play every clip this many dB louder (negative: quieter), clipped to 16 bits")
    args = parser.parse_args()

    clips = build(args.cache)
    if args.kinds:
        clips = [c for c in clips if c.kind in args.kinds.split(",")]
    if args.limit:
        kept: list[Clip] = []
        for c in clips:
            if sum(k.kind == c.kind for k in kept) < args.limit:
                kept.append(c)
        clips = kept
    clips = at_gain(clips, args.gain_db, args.cache / f"gain{args.gain_db:+g}dB")
    settings = load()
    started = dt.datetime.now(dt.UTC)
    print(f"{len(clips)} clips, {sum(c.duration_s for c in clips) / 60:.1f} min; direct faster-whisper first",
          file=sys.stderr)
    t = time.perf_counter()
    direct = run_direct(clips, settings, max(1, args.direct_seeds))
    direct_wall = time.perf_counter() - t

    stack_log = args.json.with_suffix(".stack.log")
    with tempfile.TemporaryDirectory() as tmp, stack_log.open("w") as log:
        stack = Stack("127.0.0.1", 0, Path(tmp), out=log, asr_workers=args.asr_workers, asr_env=pool.env())
        try:
            stack.start()
            stack.wait_ready(timeout=180)
            t = time.perf_counter()
            runs = [{s.clip: s for s in asyncio.run(stream_all(stack.port, clips, args.streams))}
                    for _ in range(max(1, args.repeats))]
            piped = runs[0]
            accuracy_wall = time.perf_counter() - t
            timed: dict[str, Streamed] = {}
            latency_wall = 0.0
            if args.latency_streams:
                t = time.perf_counter()
                again = [c for c in clips if c.kind in args.latency_kinds.split(",")]
                timed = {s.clip: s for s in asyncio.run(stream_all(stack.port, again, args.latency_streams))}
                latency_wall = time.perf_counter() - t
        except BaseException:
            log.flush()
            print(stack_log.read_text()[-5000:], file=sys.stderr)
            raise
        finally:
            stack.stop()

    failed = {f"{name} (pass {i + 1})": s.error for i, run in enumerate(runs) for name, s in run.items() if s.error}
    failed |= {f"{name} (latency)": s.error for name, s in timed.items() if s.error}
    result = report(clips, direct, runs, timed, settings)
    result.update(
        date=started.isoformat(timespec="seconds"), commit=_commit(), machine=platform.platform(),
        cpus=os.cpu_count(), load_avg=os.getloadavg(), asr_workers=args.asr_workers, streams=args.streams,
        latency_streams=args.latency_streams, repeats=len(runs), direct_seeds=args.direct_seeds,
        gain_db=args.gain_db,
        wall_s={"direct": round(direct_wall), "accuracy_pass": round(accuracy_wall),
                "latency_pass": round(latency_wall)},
        failed_sessions=failed,
        clips=[{**asdict(c), "direct": direct[c.name].texts[0],
                "direct_seeds": direct[c.name].texts, "direct_sampled": direct[c.name].sampled,
                "pipeline": piped[c.name].text, "pipeline_runs": [run[c.name].text for run in runs],
                "first_pass": piped[c.name].first_text,
                "revisions": [{k: r[k] for k in ("seq", "text", "arrival_s")} for r in piped[c.name].revisions],
                "finals": [{k: f[k] for k in ("seq", "start_s", "end_s", "text", "arrival_s")}
                           for f in piped[c.name].finals],
                "latencies_s": [round(x, 3) for x in latencies(c, timed[c.name])] if c.name in timed else [],
                "max_send_lag_s": round(max(piped[c.name].send_lag_s, timed[c.name].send_lag_s if c.name in timed
                                            else 0.0), 3)}
               for c in clips],
    )
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    lag = max((c["max_send_lag_s"] for c in result["clips"]), default=0.0)
    print(f"\n{started:%Y-%m-%d %H:%M} UTC, commit {result['commit']}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}, gain {args.gain_db:+g} dB, "
          f"{args.streams} streams (latency pass: {args.latency_streams}); wall: direct {direct_wall:.0f}s, "
          f"accuracy {accuracy_wall:.0f}s, latency {latency_wall:.0f}s; worst client send lag {lag:.2f}s; "
          f"failed sessions: {len(failed)}; JSON in {args.json}, stack log in {stack_log}")
    if failed:
        print(f"failed: {failed}")


if __name__ == "__main__":
    main()
