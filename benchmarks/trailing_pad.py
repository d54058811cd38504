"""How much non-speech a final should keep after its last voiced frame (``trailing_pad_ms``).

    .venv/bin/python -m benchmarks.trailing_pad [--kinds conversation,sentence] [--pads 200,120,60]

For each corpus clip of the kinds (``benchmarks.corpus``) and each pad: the clip goes through the
VAD worker's own ``SessionVad`` (webrtcvad, the settings' endpointing, the pad under test, the
acoustic context of noisy finals), in 100 ms messages, and every final is decoded with the ASR
worker's ``Transcriber`` and the prompt the worker would give it (the session's recent text). WER by
kind and overall, per pad. The pad also decides how early a speculative final can start (at the
pad, ``speculative_finals``): a shorter pad that holds WER lets finals come sooner. Not a test.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from asr_worker.asr_settings import AsrSettings
from asr_worker.prompt import next_prompt
from asr_worker.transcriber import Transcriber
from asr_worker.worker import transcriber_options
from benchmarks.context_replay import pcm_of
from benchmarks.corpus import build
from benchmarks.wer import corpus_wer
from common.settings import Settings, load
from vad_worker.segmenter import FinalReady
from vad_worker.seq_order import Chunk
from vad_worker.session import SessionVad, segmenter_options
from vad_worker.vad_settings import VadSettings

CHUNK = 3200  # bytes: 100 ms of 16 kHz PCM, what clients send


def finals(pcm: bytes, pad_ms: int, settings: Settings) -> list[FinalReady]:
    vad = SessionVad("pad", replace(segmenter_options(VadSettings.from_settings(settings)), trailing_pad_ms=pad_ms),
                     settings.vad_aggressiveness, context_seconds=settings.acoustic_context_seconds,
                     context_max_snr_db=settings.acoustic_context_max_snr_db)
    events = []
    for n, at in enumerate(range(0, len(pcm), CHUNK), start=1):
        events += vad.process([Chunk(n, "audio", pcm[at:at + CHUNK], n, at)])
    end = len(pcm) // CHUNK + 2
    events += vad.process([Chunk(end, "end", b"", end, -1)])
    return [e for e in events if isinstance(e, FinalReady)]


def replay_text(pcm: bytes, pad_ms: int, transcriber: Transcriber, settings: Settings) -> str:
    """The clip's finals (``finals``), each decoded as the ASR worker decodes it, joined."""
    return decode_finals(finals(pcm, pad_ms, settings), transcriber, settings.context_chars)


def decode_finals(cuts: list[FinalReady], transcriber: Transcriber, context_chars: int) -> str:
    """Each final decoded as the ASR worker decodes it, with the prompt it would give (the
    session's recent text), joined."""
    texts, prompt = [], ""
    for final in cuts:
        text = transcriber.transcribe(final.audio, is_final=True, prompt=prompt, context=final.context).text
        texts.append(text)
        prompt = next_prompt(prompt, text, context_chars)
    return " ".join(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="conversation,sentence,continuous,noisy20,noisy10,telephone")
    parser.add_argument("--pads", default="200,120,60", help="trailing pads to compare, ms")
    args = parser.parse_args()
    settings = load()
    kinds = args.kinds.split(",")
    pads = [int(p) for p in args.pads.split(",")]
    transcriber = Transcriber(transcriber_options(AsrSettings.from_settings(settings)))
    clips = [c for c in build() if c.kind in kinds]
    refs: dict[str, list[str]] = {k: [] for k in kinds}
    hyps: dict[int, dict[str, list[str]]] = {p: {k: [] for k in kinds} for p in pads}
    started = time.perf_counter()
    for clip in clips:
        pcm = pcm_of(clip.path).tobytes()
        refs[clip.kind].append(clip.reference)
        for pad in pads:
            hyps[pad][clip.kind].append(replay_text(pcm, pad, transcriber, settings))
        print(f"{clip.name} ({time.perf_counter() - started:.0f} s)", flush=True)
    print(f"\n| pad (ms) | {' | '.join(kinds)} | all |\n| ---: |{' ---: |' * (len(kinds) + 1)}")
    for pad in pads:
        row = [corpus_wer(refs[k], hyps[pad][k]) for k in kinds]
        every = corpus_wer([r for k in kinds for r in refs[k]], [h for k in kinds for h in hyps[pad][k]])
        print(f"| {pad} | {' | '.join(f'{w:.3f}' for w in row)} | {every:.3f} |")


if __name__ == "__main__":
    main()
