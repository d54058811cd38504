"""Packing the finals of several sessions into one encoder window: WER and decoding CPU.

    .venv/bin/python -m benchmarks.packing [--kinds sentence,conversation,...] [--packs 2,3,4]

Issue H lists packing as a way to cheaper encoder passes: a final is 1-10 s long, the encoder
hears ``encoder_window_seconds`` (15) whatever its length, so k short finals waiting at once could
share one encoder pass. For each corpus clip of the kinds (``benchmarks.corpus``) the clip goes
through the VAD worker's own ``SessionVad`` (``benchmarks.trailing_pad.finals``) and every final is
decoded with the ASR worker's ``Transcriber``:

- **alone, as the worker does**: one decode per final, with the session's prompt and acoustic
  context (``benchmarks.trailing_pad.decode_finals``);
- **alone, no prompt**: one decode per final with neither, what a packed final can have at best
  (one window holds one prompt, and the finals of k sessions have k different ones);
- **packed by k**: the finals of all clips taken in turn (final 1 of every clip, then final 2...),
  so that neighbours come from different sessions as they would in a shared queue; k neighbours
  whose audio and gaps fit ``--max-pack-s`` are joined with ``--gap-s`` of the corpus's -60 dBFS
  floor between them, decoded once with word timestamps, and every word goes back to the final
  whose span (extended to the middle of the gaps) holds its middle.

Prints WER by kind per way, the decodes and their CPU seconds (``time.process_time``: one decode
at a time in this process), and the words whose middle fell in a gap between two sessions' audio
(heard where nobody spoke: given to the nearer final, and a sign that one session's words can end
up in another's transcript), and the words of a final that are not in its own clip's reference
but are in the reference of another clip of its pack (distinct words, a lower bound of what one
session's transcript took from another's audio; beside it the same count on the finals decoded
alone, with the same packs: what chance gives). Not a test.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace

import numpy as np

from asr_worker.asr_settings import AsrSettings
from asr_worker.transcriber import SAMPLE_RATE, Transcriber
from asr_worker.worker import transcriber_options
from benchmarks.context_replay import pcm_of
from benchmarks.corpus import FLOOR_DBFS, build, noise
from benchmarks.trailing_pad import decode_finals, finals
from benchmarks.wer import corpus_wer, normalise
from common.settings import load


@dataclass(slots=True)
class Member:
    clip: int
    index: int
    audio: np.ndarray  # int16 samples


@dataclass(slots=True)
class Packed:
    """Decoded packs' words per (clip, final), the decodes, their CPU seconds and words in gaps."""

    texts: dict[tuple[int, int], str]
    decodes: int
    cpu_s: float
    in_gaps: int
    words: int
    foreign: int  # words absent from their own clip's reference and present in a packed neighbour's


def in_turns(cuts: list[list[bytes]]) -> list[Member]:
    """Final 1 of every clip, then final 2 of every clip that has one, and so on."""
    out: list[Member] = []
    for index in range(max((len(c) for c in cuts), default=0)):
        out += [Member(clip, index, np.frombuffer(c[index], dtype="<i2"))
                for clip, c in enumerate(cuts) if index < len(c)]
    return out


def groups(members: list[Member], k: int, max_pack_s: float, gap_s: float) -> list[list[Member]]:
    """Neighbours in turn, at most ``k`` to a pack and ``max_pack_s`` of audio and gaps."""
    out: list[list[Member]] = []
    for member in members:
        last = out[-1] if out else None
        seconds = (sum(m.audio.size for m in last) / SAMPLE_RATE + gap_s * len(last)) if last else 0.0
        if last and len(last) < k and seconds + member.audio.size / SAMPLE_RATE <= max_pack_s:
            last.append(member)
        else:
            out.append([member])
    return out


def floor(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """The corpus's noise floor (white, ``FLOOR_DBFS``), as 16-bit samples."""
    level = 32767 * 10 ** (FLOOR_DBFS / 20)
    return np.round(noise("white", int(seconds * SAMPLE_RATE), rng) * level).astype("<i2")


def _vocabulary(text: str) -> set[str]:
    return set(normalise(text).split())


def decode_packs(packs: list[list[Member]], transcriber: Transcriber, gap_s: float, vocabulary: list[set[str]],
                 seed: int = 1) -> Packed:
    """``vocabulary``: each clip's reference words, to count the words a final seems to have taken
    from another session of its pack (`foreign_words`)."""
    rng = np.random.default_rng(seed)
    texts: dict[tuple[int, int], str] = {}
    cpu_s, in_gaps, words = 0.0, 0, 0
    for pack in packs:
        parts: list[np.ndarray] = []
        spans: list[tuple[float, float]] = []
        at = 0.0
        for i, member in enumerate(pack):
            if i:
                parts.append(floor(gap_s, rng))
                at += gap_s
            parts.append(member.audio)
            spans.append((at, at + member.audio.size / SAMPLE_RATE))
            at += member.audio.size / SAMPLE_RATE
        start = time.process_time()
        rec = transcriber.transcribe(np.concatenate(parts).tobytes(), is_final=True)
        cpu_s += time.process_time() - start
        heard: list[list[str]] = [[] for _ in pack]
        for word in rec.words:
            middle = (word.start_s + word.end_s) / 2
            nearest = min(range(len(spans)), key=lambda i: max(spans[i][0] - middle, middle - spans[i][1], 0.0))
            heard[nearest].append(word.word)
            words += 1
            if not any(s <= middle <= e for s, e in spans):
                in_gaps += 1
        for member, said in zip(pack, heard, strict=True):
            texts[member.clip, member.index] = " ".join(said)
    return Packed(texts, len(packs), cpu_s, in_gaps, words, foreign_words(packs, texts, vocabulary))


def foreign_words(packs: list[list[Member]], texts: dict[tuple[int, int], str], vocabulary: list[set[str]]) -> int:
    """Distinct words of each final absent from its own clip's reference and present in the
    reference of another clip of its pack. On finals decoded alone, the same count with the same
    packs is what chance (a misheard word that happens to be a neighbour's) gives."""
    foreign = 0
    for pack in packs:
        for member in pack:
            others = set().union(*(vocabulary[m.clip] for m in pack if m.clip != member.clip))
            said = _vocabulary(texts[member.clip, member.index])
            foreign += sum(1 for w in said if w not in vocabulary[member.clip] and w in others)
    return foreign


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="sentence,conversation,noisy20,noisy10,telephone,real")
    parser.add_argument("--packs", default="2,3,4", help="finals per encoder window to compare")
    parser.add_argument("--max-pack-s", type=float, default=14.0,
                        help="audio and gaps of one pack at most (the 15 s window keeps 1 s of padding)")
    parser.add_argument("--gap-s", type=float, default=1.0, help="noise floor between two finals of a pack")
    args = parser.parse_args()
    settings = load()
    kinds = args.kinds.split(",")
    options = transcriber_options(AsrSettings.from_settings(settings))
    worker = Transcriber(options)
    timed = Transcriber(replace(options, word_timestamps=True))  # the words tell the finals of a pack apart
    clips = [c for c in build() if c.kind in kinds]
    cuts = []
    singles: dict[tuple[int, int], str] = {}  # (clip, final): decoded alone, no prompt
    rows: dict[str, dict[str, list[str]]] = {k: {"reference": []} for k in kinds}
    cpu: dict[str, float] = {"alone, as the worker does": 0.0, "alone, no prompt": 0.0}
    decodes: dict[str, int] = {}
    started = time.perf_counter()
    for clip in clips:
        found = finals(pcm_of(clip.path).tobytes(), settings.trailing_pad_ms, settings)
        cuts.append([f.audio for f in found])
        rows[clip.kind]["reference"].append(clip.reference)
        start = time.process_time()
        rows[clip.kind].setdefault("alone, as the worker does", []).append(
            decode_finals(found, worker, settings.context_chars))
        cpu["alone, as the worker does"] += time.process_time() - start
        start = time.process_time()
        for i, f in enumerate(found):
            singles[len(cuts) - 1, i] = worker.transcribe(f.audio, is_final=True).text
        cpu["alone, no prompt"] += time.process_time() - start
        rows[clip.kind].setdefault("alone, no prompt", []).append(
            " ".join(t for i in range(len(found)) if (t := singles[len(cuts) - 1, i])))
        print(f"{clip.name} ({time.perf_counter() - started:.0f} s)", flush=True)
    alone = sum(len(c) for c in cuts)
    decodes["alone, as the worker does"] = decodes["alone, no prompt"] = alone
    gaps: dict[str, str] = {}
    members = in_turns(cuts)
    vocabulary = [_vocabulary(c.reference) for c in clips]
    for k in [int(p) for p in args.packs.split(",")]:
        way = f"packed by {k}"
        packs = groups(members, k, args.max_pack_s, args.gap_s)
        packed = decode_packs(packs, timed, args.gap_s, vocabulary)
        cpu[way], decodes[way] = packed.cpu_s, packed.decodes
        chance = foreign_words(packs, singles, vocabulary)
        gaps[way] = f"{packed.in_gaps} of {packed.words} | {packed.foreign} ({chance} decoded alone)"
        for n, clip in enumerate(clips):
            rows[clip.kind].setdefault(way, []).append(
                " ".join(packed.texts[n, i] for i in range(len(cuts[n])) if packed.texts[n, i]))
        print(f"{way}: {packed.decodes} decodes ({time.perf_counter() - started:.0f} s)", flush=True)
    ways = list(cpu)
    print(f"\n{alone} finals of {len(clips)} clips; beam {settings.beam_size}, model {settings.model} "
          f"{settings.compute_type}, encoder window {settings.encoder_window_seconds:g} s, gap {args.gap_s:g} s\n")
    print(f"| way | {' | '.join(kinds)} | all | decodes | CPU s | CPU ms per final | words in gaps "
          "| words from a neighbour |")
    print(f"| --- |{' ---: |' * (len(kinds) + 6)}")
    for way in ways:
        wers = [corpus_wer(rows[k]["reference"], rows[k][way]) for k in kinds]
        every = corpus_wer([r for k in kinds for r in rows[k]["reference"]], [h for k in kinds for h in rows[k][way]])
        print(f"| {way} | {' | '.join(f'{w:.3f}' for w in wers)} | {every:.3f} | {decodes[way]} | {cpu[way]:.0f} | "
              f"{1000 * cpu[way] / alone:.0f} | {gaps.get(way, ' | ')} |")


if __name__ == "__main__":
    main()
