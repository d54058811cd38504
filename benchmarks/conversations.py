"""Deterministic two-voice conversations for the capacity benchmark, made with espeak-ng and sox.

Each conversation alternates two espeak-ng voices, one or two sentences per turn, with pauses drawn
from 0.3-3 s (so some turns run into each other closer than the endpointer's silence and become
one utterance), until it is 60-90 s long. A faint white-noise floor (-60 dBFS, seeded) gives the
VAD a realistic background. The reference keeps every turn's text and the times its speech starts
and ends (the synthesiser's own leading and trailing silence trimmed), so a benchmark knows when a
speaker stopped talking.

Generated once per (seed, index, sentence list, voices) and cached as WAV + JSON under
benchmarks/.cache/ (git-ignored).
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common.audio import read_wav

RATE = 16000
CACHE = Path(__file__).resolve().parent / ".cache" / "conversations"
VOICES = (("en-us", 160), ("en-gb-x-rp+f3", 150))  # (espeak-ng voice, words per minute)
PAUSE_S = (0.3, 3.0)
LENGTH_S = (60.0, 90.0)
NOISE_AMPLITUDE = 0.001 * 32767  # -60 dBFS white noise, as tests/data/make_speech.sh
_SILENCE = 150  # |sample| below this counts as the synthesiser's silence when trimming
_VERSION = 2  # bump when the way conversations are made changes (2: sox -R, repeatable dither)

SENTENCES = (
    "Good morning, did you get a chance to look at the budget?",
    "I read it last night and I have a few questions.",
    "The numbers for the second quarter look better than we expected.",
    "Can we move the review meeting to Thursday afternoon?",
    "Thursday works for me, but not before two o'clock.",
    "The new office will open at the end of next month.",
    "We still need someone to check the delivery schedule.",
    "I will send you the updated report before lunch.",
    "Please remind the team to book their train tickets early.",
    "The customer asked for a second version of the proposal.",
    "That sounds reasonable, let us keep it short and simple.",
    "My flight lands at seven, so I might be a little late.",
    "Do you know who is giving the presentation tomorrow?",
    "The printer on the third floor is broken again.",
    "We should order more paper and a few new chairs.",
    "I think the design is almost ready for testing.",
    "The weather is supposed to be cold and windy all week.",
    "Let us meet at the coffee shop near the station.",
    "Our manager wants a short summary by Friday morning.",
    "Could you call the supplier and ask about the price?",
    "The training session starts at nine and ends at noon.",
    "Remember to water the plants before you leave.",
    "I found a small mistake in the second table.",
    "The project is on time, but the costs are going up.",
    "We need to hire two more people for the support team.",
    "Send me the file and I will have a look tonight.",
    "The children are playing football in the park.",
    "Dinner will be ready in about twenty minutes.",
    "I left my keys on the kitchen table this morning.",
    "The library closes early on Sunday evenings.",
    "Would you like tea or coffee with your breakfast?",
    "The bus was late again because of the heavy traffic.",
    "We are planning a short trip to the mountains in May.",
    "My brother is learning to play the guitar.",
    "The doctor said I should walk for half an hour every day.",
    "She bought a new bicycle for her daughter's birthday.",
    "Please close the window, it is getting cold in here.",
    "The museum has a new exhibition about old ships.",
    "I need to finish this letter before the post office closes.",
    "They painted the house white and the door bright red.",
    "The meeting room is booked for the whole afternoon.",
    "Our team won the match by three goals to one.",
    "I cannot find the charger for my phone anywhere.",
    "The bakery on the corner sells the best bread in town.",
    "Let us review the plan once more before we decide.",
    "The contract has to be signed by both parties.",
    "I will be working from home on Monday and Tuesday.",
    "The garden looks lovely now that the roses are out.",
    "We ran out of milk, could you buy some on your way home?",
    "The new software update fixed most of the problems.",
    "Tell me more about the job offer you received.",
    "The hotel was clean, quiet and close to the beach.",
    "Your package should arrive within three working days.",
    "I am sorry, I did not hear what you just said.",
    "Let us take a short break and continue in ten minutes.",
    "The river rose after a week of heavy rain.",
    "He fixed the old radio with a few simple tools.",
    "We should write down everything we agreed on today.",
    "Thank you for your help, I really appreciate it.",
    "See you next week, and have a nice weekend.",
)


@dataclass(frozen=True, slots=True)
class Turn:
    voice: str
    text: str
    start_s: float
    """Speech starts here (conversation time)."""
    end_s: float
    """Speech ends here."""


@dataclass(frozen=True, slots=True)
class Conversation:
    name: str
    pcm: bytes
    """PCM s16le 16 kHz mono."""
    turns: tuple[Turn, ...]

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / (2 * RATE)

    @property
    def text(self) -> str:
        return " ".join(t.text for t in self.turns)


def _speak(text: str, voice: str, wpm: int, tmp: Path) -> np.ndarray:
    raw, wav = tmp / "raw.wav", tmp / "speech.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(raw), text], check=True, timeout=60)
    # -R: repeatable dither (sox seeds it at random otherwise: the audio differed by +-2 LSB from
    # one cache to the next, enough to move the benchmark's WER).
    subprocess.run(["sox", "-R", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(wav)], check=True, timeout=60)
    samples = np.frombuffer(read_wav(wav), dtype="<i2").astype(np.float64)
    loud = np.flatnonzero(np.abs(samples) > _SILENCE)
    if len(loud) == 0:
        raise RuntimeError(f"espeak-ng produced silence for {text!r} ({voice})")
    trimmed: np.ndarray = samples[loud[0] : loud[-1] + 1]
    return trimmed


def _make(index: int, seed: int, tmp: Path) -> tuple[np.ndarray, list[Turn]]:
    rng = random.Random(f"{seed}-{index}")
    target = rng.uniform(*LENGTH_S)
    pieces: list[np.ndarray] = [np.zeros(int(rng.uniform(0.5, 1.0) * RATE))]
    t = len(pieces[0]) / RATE
    turns: list[Turn] = []
    speaker = rng.randrange(2)
    while True:
        voice, wpm = VOICES[speaker]
        text = " ".join(rng.sample(SENTENCES, rng.choice((1, 1, 2))))
        speech = _speak(text, voice, wpm, tmp)
        turns.append(Turn(voice, text, round(t, 3), round(t + len(speech) / RATE, 3)))
        pieces.append(speech)
        t += len(speech) / RATE
        if t >= target - 3:
            break
        pause = np.zeros(int(rng.uniform(*PAUSE_S) * RATE))
        pieces.append(pause)
        t += len(pause) / RATE
        speaker = 1 - speaker
    pieces.append(np.zeros(int(1.0 * RATE)))  # a second of room after the last word
    audio = np.concatenate(pieces)
    noise = np.random.default_rng(seed * 1000 + index).normal(0, NOISE_AMPLITUDE / 2, len(audio))
    return np.clip(np.rint(audio + noise), -32768, 32767), turns


def _key(seed: int) -> str:
    h = hashlib.sha256(json.dumps([_VERSION, seed, VOICES, PAUSE_S, LENGTH_S, SENTENCES]).encode())
    return h.hexdigest()[:16]


def conversations(count: int, seed: int = 1, cache: Path = CACHE) -> list[Conversation]:
    """``count`` conversations for ``seed``, from the cache when already made."""
    folder = cache / _key(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="conv-") as tmp:
        for i in range(count):
            if (folder / f"{i:02d}.json").exists():  # written last: the pair is complete
                continue
            audio, turns = _make(i, seed, Path(tmp))
            (folder / f"{i:02d}.pcm").write_bytes(audio.astype("<i2").tobytes())
            (folder / f"{i:02d}.json").write_text(json.dumps([asdict(t) for t in turns], indent=1))
    out = []
    for i in range(count):
        loaded = tuple(Turn(**t) for t in json.loads((folder / f"{i:02d}.json").read_text()))
        out.append(Conversation(f"conv{seed}-{i:02d}", (folder / f"{i:02d}.pcm").read_bytes(), loaded))
    return out


if __name__ == "__main__":  # python -m benchmarks.conversations [COUNT]: make them and show the first
    import sys

    convs = conversations(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    for c in convs:
        print(f"{c.name}: {c.duration_s:.1f} s, {len(c.turns)} turns, {len(c.text.split())} words")
    for turn in convs[0].turns[:6]:
        print(f"  {turn.start_s:6.2f}-{turn.end_s:6.2f} {turn.voice:>14}: {turn.text}")
