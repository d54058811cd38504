"""Long speech in loud noise: where the VAD hears no pause, how the pipeline cuts and what it costs.

    .venv/bin/python -m benchmarks.noisy_speech [--old PATH] [--json PATH]

webrtcvad (mode 2) calls every frame of continuous speech speech once white noise reaches about
-28 dBFS, so no pause ends an utterance and the soft cut (`soft_utterance_seconds`) finds no pause
to cut at. This takes the corpus's continuous clips (20-40 s, pauses of 0.2-0.45 s) and its 27 s
recorded reading (`benchmarks.corpus`), adds white or pink noise at 10 and 5 dB SNR (relative to
the speech, as the corpus's noisy kinds; seeded by the clip's name), and for each variant:

- cuts it as the VAD worker does (webrtcvad at ``vad_aggressiveness`` and the segmenter with the
  service's default settings, in 100 ms chunks);
- decodes each cut as the ASR worker does (its `Transcriber`: the session's text as prompt,
  acoustic context for noisy finals, revisions below ``revision_max_logprob``; ``as_the_worker``);
- decodes the whole variant with faster-whisper's default options (direct, decoders seeded at 0).

It reports the longest final and the cut reasons, and WER by noise against direct. ``--old`` points
to a copy of an earlier vad_worker/segmenter.py, whose cuts are made and decoded in the same run
(``git show 9f3e113:vad_worker/segmenter.py > /tmp/old_segmenter.py``: the soft cut before it
fell back to the quietest stretch); a variant that it cuts the same way keeps the same texts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from asr_worker.asr_settings import AsrSettings
from asr_worker.prompt import next_prompt
from asr_worker.revisions import revision_outcome
from asr_worker.transcriber import Transcriber, resolve_model_path
from asr_worker.worker import transcriber_options
from benchmarks.context_replay import contexts
from benchmarks.corpus import Clip, build, noise
from benchmarks.pipeline_latency import Cut, cut_like_the_pipeline
from benchmarks.seeds import seed_decoders
from benchmarks.wer import corpus_wer
from common.settings import Settings, load
from vad_worker import segmenter as current_segmenter
from vad_worker.session import segmenter_options
from vad_worker.vad_settings import VadSettings

NOISES = ((10.0, "white"), (10.0, "pink"), (5.0, "white"), (5.0, "pink"))
RATE = 16000


def variants(clips: list[Clip]) -> list[tuple[str, Clip, bytes]]:
    out = []
    for clip in clips:
        x = np.frombuffer(clip.pcm(), dtype="<i2").astype(np.float64)
        speech = np.concatenate([x[int(s.start_s * RATE) : int(s.end_s * RATE)] for s in clip.segments])
        rms = float(np.sqrt(np.mean(speech**2)))
        for snr, kind in NOISES:
            name = f"{clip.name}@{snr:g}dB-{kind}"
            rng = np.random.default_rng(zlib.crc32(name.encode()))
            y = x + noise(kind, x.size, rng) * rms / 10 ** (snr / 20)
            out.append((name, clip, np.clip(np.rint(y), -32768, 32767).astype("<i2").tobytes()))
    return out


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("old_segmenter", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_segmenter"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def cuts(module: ModuleType, pcm: bytes, settings: Settings) -> list[Cut]:
    """The VAD worker's cuts with the service's settings, made by ``module``'s segmenter."""
    options = segmenter_options(VadSettings.from_settings(settings))
    return cut_like_the_pipeline(pcm, options, settings.vad_aggressiveness, engine=module)


def as_the_worker(transcriber: Transcriber, cut_list: list[Cut], settings: Settings) -> str:
    """The finals as the ASR worker decodes them: the session's text as prompt, acoustic context for
    noisy finals, and a revision with the next final's audio for a final less sure than
    ``revision_max_logprob`` (as ``benchmarks.revision_replay``; no carry of empty finals)."""
    audio = [c.audio for c in cut_list]
    heard = contexts(audio, settings.acoustic_context_seconds, settings.acoustic_context_max_snr_db)
    prompt, prompts, texts, logprobs = "", [], [], []
    for pcm, context in zip(audio, heard, strict=True):
        prompts.append(prompt)
        rec = transcriber.transcribe(pcm, is_final=True, prompt=prompt, context=context)
        texts.append(rec.text)
        logprobs.append(rec.avg_logprob)
        prompt = next_prompt(prompt, rec.text, settings.context_chars)
    for i in range(len(audio) - 1):
        bound = settings.revision_max_logprob
        if settings.revise_finals and texts[i] and (bound >= 0 or logprobs[i] < bound):
            revised = transcriber.revise(audio[i], audio[i + 1], prompt=prompts[i], following_text=texts[i + 1]).text
            if revision_outcome(texts[i], revised) == "ok":
                texts[i] = revised
    return " ".join(t for t in texts if t)


def _shape(cut_list: list[Cut]) -> list[tuple[float, float, str]]:
    return [(c.start_s, c.end_s, c.reason) for c in cut_list]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", type=Path, default=None, help="an earlier vad_worker/segmenter.py to compare with")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    settings = load()
    clips = [c for c in build() if c.kind == "continuous" or c.name == "real-librivox-passage"]
    cases = variants(clips)
    ways: dict[str, ModuleType] = {"current": current_segmenter}
    if args.old:
        ways["old"] = _load(args.old)
    seed_decoders(0)
    transcriber = Transcriber(transcriber_options(AsrSettings.from_settings(settings)))
    rows: dict[str, dict[str, Any]] = {}
    started = time.time()
    for i, (name, clip, pcm) in enumerate(cases):
        row: dict[str, Any] = {"reference": clip.reference}
        for way, module in ways.items():
            made = cuts(module, pcm, settings)
            same = way != "current" and _shape(made) == row["current"]["cuts"]
            text = row["current"]["text"] if same else as_the_worker(transcriber, made, settings)
            row[way] = {"cuts": _shape(made), "text": text, "same_as_current": same}
        rows[name] = row
        print(f"  {i + 1}/{len(cases)} {name} ({time.time() - started:.0f} s)", file=sys.stderr)
    from faster_whisper import WhisperModel

    seed_decoders(0)
    model = WhisperModel(resolve_model_path(settings.model), device=settings.device,
                         compute_type=settings.compute_type, cpu_threads=settings.cpu_threads, local_files_only=True)
    for name, _clip, pcm in cases:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
        rows[name]["direct"] = " ".join(s.text.strip() for s in model.transcribe(samples)[0])
    report(rows, list(ways))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def report(rows: dict[str, dict[str, Any]], ways: list[str]) -> None:
    def wer(names: list[str], way: str) -> float:
        refs = [rows[n]["reference"] for n in names]
        hyps = [rows[n]["direct"] if way == "direct" else rows[n][way]["text"] for n in names]
        return corpus_wer(refs, hyps)

    print(f"| noise | variants | direct WER | {' | '.join(f'{w}: WER / longest final (s) / reasons' for w in ways)} |")
    print("| --- | ---: | ---: |" + " --- |" * len(ways))
    groups = {f"{snr:g} dB {kind}": [n for n in rows if n.endswith(f"@{snr:g}dB-{kind}")] for snr, kind in NOISES}
    groups["all"] = list(rows)
    changed = [n for n in rows if len(ways) > 1 and not rows[n][ways[1]]["same_as_current"]]
    if changed:
        groups["cut differently"] = changed
    for label, names in groups.items():
        cells = []
        for way in ways:
            cut_list = [c for n in names for c in rows[n][way]["cuts"]]
            reasons: dict[str, int] = {}
            for c in cut_list:
                reasons[c[2]] = reasons.get(c[2], 0) + 1
            longest = max((c[1] - c[0] for c in cut_list), default=0.0)
            shown = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
            cells.append(f"{wer(names, way):.3f} / {longest:.1f} / {shown}")
        print(f"| {label} | {len(names)} | {wer(names, 'direct'):.3f} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
