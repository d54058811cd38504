"""Endpointing engine: cuts a stream of PCM into utterances. Pure and synchronous, no I/O.

The speech classifier is injected (`is_speech(frame) -> bool`, e.g. a wrapped webrtcvad), so the
engine can be driven by a fake in unit tests. Usage, in the style of whisper_streaming::

    seg = Segmenter(SegmenterOptions(), is_speech)
    events = seg.push(pcm)      # any number of bytes, as often as audio arrives
    events = seg.finalize()     # the client asked to finish the current utterance now
    events = seg.end()          # no more audio

Semantics:

* Audio is PCM s16le mono. Time is counted in samples pushed; every ``*_s`` field is
  ``samples / sample_rate`` measured from the first byte pushed.
* Audio is classified in whole frames of ``frame_ms`` (``sample_rate * frame_ms / 1000 * 2``
  bytes), in order. A partial frame is buffered until the rest arrives. Every duration option is
  rounded UP to whole frames.
* Silence: only the last ``pre_roll_ms`` of audio is kept. After ``min_speech_ms`` of consecutive
  speech frames an utterance starts (`SpeechStarted`); its audio is the kept pre-roll plus those
  voiced frames, so ``start_s`` is the first voiced frame minus the pre-roll actually available
  (never before the stream start nor before the end of the previous utterance). A shorter blip
  of speech never starts an utterance.
* Speech: every frame is appended. Each time the utterance audio length reaches another multiple
  of ``partial_interval_ms``, a `PartialReady` carries the audio so far (except on the frame that
  closes the utterance). ``endpointing_ms`` of consecutive non-speech ends the utterance with
  reason ``"endpoint"``: `FinalReady` with the audio up to the end of the last voiced frame plus
  ``trailing_pad_ms`` (capped at what was appended), then `UtteranceEnded`. The non-speech frames
  after that cut are the pre-roll candidates of the next utterance.
* When the utterance audio reaches ``max_utterance_ms`` it is cut as is (reason
  ``"max_length"``). If the frame that filled it was speech, a new, empty utterance begins at the
  cut point (no pre-roll); otherwise the engine is back in silence.
* ``max_buffer_bytes`` (0 = off) is a hard cap on the open utterance's audio, rounded down to whole
  frames. When the utterance grows past it (possible only when it is set below
  ``max_utterance_ms``), its OLDEST audio is dropped so the most recent is kept: partials and the
  final then carry only the kept audio, and their ``start_s`` is the time of the first byte kept
  (it moves forward by the dropped duration; ``end_s`` is unchanged). `SpeechStarted` still
  reports where the utterance began. The ``max_utterance_ms`` cut and the partial cadence count
  the TOTAL duration since the utterance start, dropped audio included, so an utterance is still
  cut at ``max_utterance_ms``. If the cap is shorter than the silence before an endpoint, the
  last voiced frame may already be dropped; the final is then empty (``start_s == end_s``).
  ``overflow_bytes`` counts every byte dropped.
* Long utterances (both off by default). Once the utterance's audio up to its last voiced frame
  is at least ``long_utterance_ms`` long, ``long_endpointing_ms`` of non-speech ends it instead of
  ``endpointing_ms``: a speaker who has talked for a while is finalised after a shorter pause.
  Once the utterance's total duration reaches ``soft_utterance_ms``, it is cut at its best pause
  (reason ``"soft_length"``): among the complete non-speech runs (followed by speech) of at least
  ``min_cut_pause_ms`` whose middle lies in the second half of ``soft_utterance_ms`` (measured from
  the utterance start) and inside the kept audio, the longest; ties go to the lower RMS energy,
  then the latest. The final ends at the middle frame boundary of that run and a new utterance
  (`SpeechStarted`) begins there, holding the rest of the audio, with its own partial cadence.
  If no run qualifies and the frame is voiced, the cut goes to the quietest frame boundary instead:
  among the boundaries in the second half (and the kept audio) with two whole frames on each side
  before the current one, the lowest energy of those four frames weighted 1, 2, 2, 1
  (``QUIET_CUT_WEIGHTS``; ties: the later). Noise can hide every pause from the VAD (in white noise
  of -28 dBFS webrtcvad calls every frame of continuous speech speech), and a word boundary is
  where speech is quietest. In a pause that is still running nothing is cut: the endpoint may
  close the utterance, or the pause, once complete, qualifies. So an utterance reaches
  ``max_utterance_ms`` only when ``soft_utterance_ms`` is off.
* Speculative finals (off by default, ``speculative_finals``). The final's audio is known as
  soon as ``trailing_pad_ms`` of non-speech follow the last voiced frame: if no speech comes
  before the endpoint, the final will carry exactly that audio. At that frame, when the endpoint
  is still at least ``SPECULATION_MIN_GAIN_MS`` away, a `SpeculativeReady` carries it (with the
  ``final_index`` the final will get), so a recogniser can start decoding before the endpoint.
  With speculation on, partials come only on voiced frames: a partial due in a pause would hold
  no new speech (the speculation is the pause's update), and its decode would hold up the
  speculation's. The cadence catches up on the next voiced frame. If speech resumes, the
  speculation is simply not confirmed: nothing is retracted.
* `finalize` and `end` close an open utterance like an endpoint (same trailing-pad rule) with
  reason ``"finalize"`` / ``"end"``. `end` first zero-pads a buffered partial frame to classify
  it, but only the real bytes become audio (a dangling odd byte is dropped).
* ``utterance_index`` counts utterances from 0; ``final_index`` counts `FinalReady` from 1.
* Resuming (another VAD owner carries on a session): ``Segmenter(options, is_speech,
  SegmenterStart(position, utterances, finals))`` starts the counters at those values and counts
  time from sample ``position`` (a frame boundary of the original stream), so the first byte pushed
  is that sample. ``resume_position`` is the sample from which a new segmenter must be fed to
  rebuild this one's state: the first kept byte of the open utterance, or in silence the oldest
  pre-roll candidate frame.
  Memory is bounded: the open utterance (at most ``max_utterance_ms``, and at most
  ``max_buffer_bytes`` when set) or, in silence, the pre-roll and ``min_speech_ms`` of candidate
  frames; plus less than one frame of input.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np

_SAMPLE_WIDTH = 2  # bytes per sample, s16le

SPECULATION_MIN_GAIN_MS = 90
"""A speculative final is emitted only when the endpoint is at least this far away."""
QUIET_CUT_WEIGHTS = (1.0, 2.0, 2.0, 1.0)
"""Weights of the frames around a frame boundary (two before it, two after) in the energy of the
stretch a soft cut splits when no pause qualifies (see the module docstring): a silent gap of any
length then scores best at its middle."""

Reason: TypeAlias = Literal["endpoint", "soft_length", "max_length", "finalize", "end"]
"""Why an utterance was closed."""


@dataclass(frozen=True, slots=True)
class SegmenterOptions:
    """Thresholds of the endpointer. All durations are rounded up to whole frames."""

    sample_rate: int = 16000
    """Hz of the PCM s16le mono input: 8000, 16000, 32000 or 48000 (what webrtcvad accepts)."""
    frame_ms: int = 30
    """Classification frame: 10, 20 or 30 ms (webrtcvad frame sizes)."""
    endpointing_ms: int = 500
    """This much consecutive non-speech ends an utterance (reason "endpoint")."""
    pre_roll_ms: int = 300
    """Audio kept before the first voiced frame so first syllables survive; may be 0."""
    min_speech_ms: int = 90
    """This much consecutive speech starts an utterance; shorter blips are ignored."""
    trailing_pad_ms: int = 200
    """Non-speech kept after the last voiced frame in the final audio; may be 0."""
    max_utterance_ms: int = 30000
    """An utterance is cut (reason "max_length") when its audio reaches this length."""
    partial_interval_ms: int = 1000
    """A partial is emitted each time the utterance audio grows by this much."""
    max_buffer_bytes: int = 0
    """Hard cap on the open utterance's audio in bytes, rounded down to whole frames; 0 = off.
    When an utterance grows past it (possible only when it is set below max_utterance_ms), its
    OLDEST audio is dropped so the most recent is kept; the final then starts later (start_s moves
    forward). max_utterance_ms normally cuts first, and still counts the total duration."""
    soft_utterance_ms: int = 0
    """0 = off. From this total duration on, the utterance is cut at its best recent pause (reason
    "soft_length"; see the module docstring); max_utterance_ms stays the hard cut."""
    long_endpointing_ms: int = 0
    """0 = endpointing_ms. The endpoint of an utterance whose speech is already long_utterance_ms
    long; set it shorter than endpointing_ms to finalise long turns after a shorter pause."""
    long_utterance_ms: int = 0
    """From this much audio up to the last voiced frame on, long_endpointing_ms applies; 0 = never."""
    min_cut_pause_ms: int = 60
    """Shortest complete non-speech run a soft cut splits as a pause (shorter gaps are inside
    words); with none, the soft cut goes to the quietest stretch (module docstring)."""
    speculative_finals: bool = False
    """Emit `SpeculativeReady` once trailing_pad_ms of non-speech make the final's audio known
    (see "Speculative finals" in the module docstring)."""

    def __post_init__(self) -> None:
        if self.sample_rate not in (8000, 16000, 32000, 48000):
            raise ValueError(f"sample_rate must be 8000, 16000, 32000 or 48000 Hz, not {self.sample_rate}")
        if self.frame_ms not in (10, 20, 30):
            raise ValueError(f"frame_ms must be 10, 20 or 30, not {self.frame_ms}")
        for name in ("endpointing_ms", "min_speech_ms", "max_utterance_ms", "partial_interval_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        for name in ("pre_roll_ms", "trailing_pad_ms", "soft_utterance_ms", "long_endpointing_ms",
                     "long_utterance_ms", "min_cut_pause_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be zero or positive, not {getattr(self, name)}")
        if self.max_buffer_bytes != 0 and self.max_buffer_bytes < self.frame_bytes:
            raise ValueError(
                f"max_buffer_bytes must be 0 (off) or at least one frame ({self.frame_bytes} bytes), "
                f"not {self.max_buffer_bytes}"
            )
        if self.long_endpointing_ms > self.endpointing_ms:
            raise ValueError("long_endpointing_ms must be 0 (same as endpointing_ms) or at most endpointing_ms")
        if self.soft_utterance_ms and self.frames(self.soft_utterance_ms) >= self.frames(self.max_utterance_ms):
            raise ValueError("soft_utterance_ms must be 0 (off) or shorter than max_utterance_ms")
        opening = self.frames(self.pre_roll_ms) + self.frames(self.min_speech_ms)
        if self.frames(self.max_utterance_ms) <= opening:
            raise ValueError("max_utterance_ms must be longer than pre_roll_ms + min_speech_ms")

    @property
    def frame_bytes(self) -> int:
        """Bytes in one classification frame."""
        return self.sample_rate * self.frame_ms // 1000 * _SAMPLE_WIDTH

    def frames(self, ms: int) -> int:
        """`ms` as a whole number of frames, rounded up."""
        return -(-ms // self.frame_ms)


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    utterance_index: int
    start_s: float


@dataclass(frozen=True, slots=True)
class PartialReady:
    utterance_index: int
    audio: bytes
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class FinalReady:
    utterance_index: int
    final_index: int
    audio: bytes
    start_s: float
    end_s: float
    reason: Reason
    context: bytes = b""
    """Audio just before this utterance's (the previous final's tail), set by SessionVad."""
    previous: bytes = b""
    """The previous final's whole audio, for its revision (set by SessionVad when revising)."""


@dataclass(frozen=True, slots=True)
class SpeculativeReady:
    """The audio the next final will carry if no speech comes before the endpoint."""

    utterance_index: int
    final_index: int
    audio: bytes
    start_s: float
    end_s: float
    context: bytes = b""
    """Set by SessionVad, as for FinalReady."""


@dataclass(frozen=True, slots=True)
class UtteranceEnded:
    utterance_index: int
    end_s: float


Event: TypeAlias = SpeechStarted | PartialReady | SpeculativeReady | FinalReady | UtteranceEnded


@dataclass(frozen=True, slots=True)
class SegmenterStart:
    """Where a resumed segmenter starts (see "Resuming" in the module docstring)."""

    position: int = 0
    """Samples of the stream before the first byte pushed (a frame boundary)."""
    utterances: int = 0
    """utterance_index of the next utterance (an open one being re-fed keeps its index)."""
    finals: int = 0
    """Finals already emitted: the next FinalReady has final_index finals + 1."""


class Segmenter:
    """Turns pushed PCM into utterance events; see the module docstring for the semantics."""

    def __init__(
        self, options: SegmenterOptions, is_speech: Callable[[bytes], bool], start: SegmenterStart | None = None
    ) -> None:
        start = start or SegmenterStart()
        self._opts = options
        self._is_speech = is_speech
        fb = options.frame_bytes
        self._pre_roll_frames = options.frames(options.pre_roll_ms)
        self._min_speech_frames = options.frames(options.min_speech_ms)
        self._endpoint_frames = options.frames(options.endpointing_ms)
        self._long_endpoint_frames = options.frames(options.long_endpointing_ms or options.endpointing_ms)
        self._long_bytes = options.frames(options.long_utterance_ms) * fb if options.long_utterance_ms else 0
        self._soft_bytes = options.frames(options.soft_utterance_ms) * fb
        self._min_cut_frames = max(1, options.frames(options.min_cut_pause_ms))
        self._pad_bytes = options.frames(options.trailing_pad_ms) * fb
        self._max_bytes = options.frames(options.max_utterance_ms) * fb
        self._partial_bytes = options.frames(options.partial_interval_ms) * fb
        self._cap_bytes = options.max_buffer_bytes // fb * fb  # 0: no cap
        self._pad_frames = options.frames(options.trailing_pad_ms)
        self._speculate = options.speculative_finals
        self._min_gain_frames = options.frames(SPECULATION_MIN_GAIN_MS)

        self._pending = bytearray()  # less than one frame of input
        self._pushed_bytes = start.position * _SAMPLE_WIDTH
        self._pos = start.position  # samples classified so far
        self._ended = False
        self._utterances = start.utterances
        self._finals = start.finals
        self._overflow = 0  # bytes dropped by max_buffer_bytes, all utterances
        # Silence state: the pre-roll plus the current run of voiced frames.
        self._history: deque[bytes] = deque(maxlen=self._pre_roll_frames + self._min_speech_frames)
        self._voiced_run = 0
        # Speech state (self._utt is None in silence).
        self._utt: bytearray | None = None
        self._utt_start = 0  # samples: the first byte kept in self._utt
        self._utt_dropped = 0  # bytes dropped from the front of the open utterance
        self._voiced_end = 0  # bytes into self._utt where the last voiced frame ends (< 0: dropped)
        self._speech_dropped = False  # the cap dropped voiced audio of the open utterance
        self._silence_run = 0  # frames
        self._partials = 0
        self._pauses: list[tuple[int, int]] = []  # complete non-speech runs: (first sample, frames)
        self._speculated = False  # a SpeculativeReady went out for the current run of non-speech

    def __repr__(self) -> str:
        return (
            f"Segmenter(samples_seen={self.samples_seen}, utterances={self._utterances}, "
            f"finals_emitted={self._finals}, in_speech={self.in_speech}, overflow_bytes={self._overflow})"
        )

    @property
    def samples_seen(self) -> int:
        """Samples pushed so far, including a buffered partial frame."""
        return self._pushed_bytes // _SAMPLE_WIDTH

    @property
    def finals_emitted(self) -> int:
        return self._finals

    @property
    def in_speech(self) -> bool:
        """True while an utterance is open."""
        return self._utt is not None

    @property
    def utterances(self) -> int:
        """utterance_index of the open utterance, or of the next one in silence."""
        return self._utterances

    @property
    def resume_position(self) -> int:
        """Sample from which a new segmenter must be fed to rebuild this state (a frame boundary)."""
        if self._utt is not None:
            return self._utt_start
        return self._pos - sum(map(len, self._history)) // _SAMPLE_WIDTH

    @property
    def overflow_bytes(self) -> int:
        """Utterance audio dropped so far by ``max_buffer_bytes`` (oldest first), in bytes."""
        return self._overflow

    @property
    def buffered_bytes(self) -> int:
        """Audio bytes held in memory: partial frame, pre-roll candidates and open utterance."""
        utt = len(self._utt) if self._utt is not None else 0
        return len(self._pending) + sum(map(len, self._history)) + utt

    def push(self, pcm: bytes) -> list[Event]:
        """Add audio of any length; returns the events of every whole frame now available."""
        if self._ended:
            raise RuntimeError("push() after end(): the stream is closed")
        self._pushed_bytes += len(pcm)
        self._pending += pcm
        fb = self._opts.frame_bytes
        whole = len(self._pending) // fb * fb
        events: list[Event] = []
        for offset in range(0, whole, fb):
            frame = bytes(self._pending[offset : offset + fb])
            self._on_frame(frame, self._is_speech(frame), events)
        del self._pending[:whole]
        return events

    def finalize(self) -> list[Event]:
        """Close the open utterance now (reason "finalize"); [] in silence. Keeps a partial frame."""
        events: list[Event] = []
        if self._utt is not None:
            self._close("finalize", events)
        return events

    def end(self) -> list[Event]:
        """No more audio: classify the buffered partial frame, close any open utterance ("end")."""
        if self._ended:
            raise RuntimeError("end() called twice")
        self._ended = True
        events: list[Event] = []
        real = bytes(self._pending[: len(self._pending) // _SAMPLE_WIDTH * _SAMPLE_WIDTH])
        self._pending.clear()
        if real:
            padded = real.ljust(self._opts.frame_bytes, b"\0")
            self._on_frame(real, self._is_speech(padded), events)
        if self._utt is not None:
            self._close("end", events)
        return events

    def _on_frame(self, frame: bytes, voiced: bool, events: list[Event]) -> None:
        self._pos += len(frame) // _SAMPLE_WIDTH
        if self._utt is None:
            self._history.append(frame)
            self._voiced_run = self._voiced_run + 1 if voiced else 0
            if self._voiced_run >= self._min_speech_frames:
                audio = b"".join(self._history)
                self._open(self._pos - len(audio) // _SAMPLE_WIDTH, audio, events)
            return
        self._utt += frame
        if voiced:
            if self._silence_run >= self._min_cut_frames:
                run_start = self._pos - (self._silence_run + 1) * len(frame) // _SAMPLE_WIDTH
                self._pauses.append((run_start, self._silence_run))
            self._voiced_end = len(self._utt)
            self._silence_run = 0
            self._speculated = False
        else:
            self._silence_run += 1
        self._trim()
        endpoint = self._endpoint()
        if self._silence_run >= endpoint:
            self._close("endpoint", events)
            return
        if (self._speculate and self._silence_run == max(1, self._pad_frames) and self._voiced_end > 0
                and endpoint - self._silence_run >= self._min_gain_frames):
            self._speculated = True
            self._emit_speculative(events)
        if self._utt_dropped + len(self._utt) >= self._max_bytes:
            self._cut_at_max(voiced, events)
        elif not (self._soft_bytes and self._utt_dropped + len(self._utt) >= self._soft_bytes
                  and self._cut_at_pause(events)):
            self._maybe_partial(events)

    def _endpoint(self) -> int:
        """Frames of non-speech that end the open utterance now (shorter once it is long)."""
        long = self._long_bytes and self._utt_dropped + self._voiced_end >= self._long_bytes
        return self._long_endpoint_frames if long else self._endpoint_frames

    def _cut_at_pause(self, events: list[Event]) -> bool:
        """Soft cut at the best complete pause of the recent part, else at its quietest stretch
        (see the module docstring); False if the recent part is not long enough yet."""
        assert self._utt is not None
        origin = self._utt_start - self._utt_dropped // _SAMPLE_WIDTH  # where the utterance began
        earliest = max(origin + self._soft_bytes // 2 // _SAMPLE_WIDTH, self._utt_start + 1)
        cut = self._best_pause(earliest)
        if cut is None:
            cut = self._quietest(earliest)
        if cut is None:
            return False
        cut_bytes = (cut - self._utt_start) * _SAMPLE_WIDTH
        rest = bytes(self._utt[cut_bytes:])
        voiced_end = self._voiced_end - cut_bytes
        silence_run = self._silence_run
        pauses = [p for p in self._pauses if p[0] >= cut]
        self._emit_final(bytes(self._utt[:cut_bytes]), "soft_length", events)
        self._open(cut, rest, events)
        self._voiced_end, self._silence_run, self._pauses = voiced_end, silence_run, pauses
        return True

    def _best_pause(self, earliest: int) -> int | None:
        """The middle of the longest complete non-speech run at or after ``earliest`` (ties: the
        quieter, then the later), as a sample; None if there is none."""
        assert self._utt is not None
        fb = self._opts.frame_bytes
        frame_samples = fb // _SAMPLE_WIDTH
        best: tuple[int, float, int] | None = None  # (frames, -energy, cut sample)
        for run_start, frames in self._pauses:
            cut = run_start + frames // 2 * frame_samples
            if cut < earliest or run_start < self._utt_start:
                continue
            offset = (run_start - self._utt_start) * _SAMPLE_WIDTH
            score = (frames, -_energy(self._utt[offset : offset + frames * fb]), cut)
            if best is None or score > best:
                best = score
        return None if best is None else best[2]

    def _quietest(self, earliest: int) -> int | None:
        """On a voiced frame: the frame boundary at or after ``earliest`` whose surrounding frames
        (``QUIET_CUT_WEIGHTS``, all before this frame) are the quietest, as a sample (ties: the
        later). None in a pause (it may yet end the utterance, or become a cut once complete) or
        when the kept audio holds no such boundary."""
        assert self._utt is not None
        if self._silence_run:
            return None
        frame_samples = self._opts.frame_bytes // _SAMPLE_WIDTH
        weights = np.array(QUIET_CUT_WEIGHTS)
        before = len(self._utt) // _SAMPLE_WIDTH // frame_samples - 1  # whole frames before this one
        if before < weights.size:
            return None
        samples = np.frombuffer(self._utt, dtype="<i2", count=before * frame_samples).astype(np.float64)
        power = np.square(samples).reshape(before, frame_samples).mean(axis=1)
        scores = np.correlate(power, weights, mode="valid")  # i: frames i .. i+3, boundary i+2
        boundaries = self._utt_start + (np.arange(scores.size) + weights.size // 2) * frame_samples
        allowed = np.flatnonzero(boundaries >= earliest)
        if allowed.size == 0:
            return None
        quiet = allowed[scores[allowed] == scores[allowed].min()][-1]
        return int(boundaries[quiet])

    def _open(self, start: int, audio: bytes, events: list[Event]) -> None:
        self._history.clear()
        self._voiced_run = 0
        self._utt = bytearray(audio)
        self._utt_start = start
        self._utt_dropped = 0
        self._voiced_end = len(audio)
        self._speech_dropped = False
        self._silence_run = 0
        self._partials = 0
        self._pauses = []
        self._speculated = False
        events.append(SpeechStarted(self._utterances, self._seconds(start)))
        self._trim()
        self._maybe_partial(events)

    def _trim(self) -> None:
        """Drop the oldest utterance audio beyond max_buffer_bytes; the kept audio starts later."""
        assert self._utt is not None
        excess = len(self._utt) - self._cap_bytes
        if self._cap_bytes == 0 or excess <= 0:
            return
        del self._utt[:excess]
        self._utt_start += excess // _SAMPLE_WIDTH
        self._utt_dropped += excess
        # Voiced audio is dropped only if the kept audio held some; silence after a max-length cut,
        # trimmed, is not speech.
        self._speech_dropped |= self._voiced_end > 0
        self._voiced_end -= excess
        self._overflow += excess

    def _maybe_partial(self, events: list[Event]) -> None:
        assert self._utt is not None
        if self._speculate and self._silence_run:
            return  # in a pause: nothing new to decode (see "Speculative finals")
        total = self._utt_dropped + len(self._utt)  # the cadence counts dropped audio too
        if total >= (self._partials + 1) * self._partial_bytes:
            self._partials = total // self._partial_bytes
            start, end = self._utt_start, self._utt_start + len(self._utt) // _SAMPLE_WIDTH
            audio = bytes(self._utt)
            events.append(PartialReady(self._utterances, audio, self._seconds(start), self._seconds(end)))

    def _close(self, reason: Reason, events: list[Event]) -> None:
        """Emit the final up to the last voiced frame + trailing pad; the rest becomes pre-roll.

        An utterance with no voiced frame (reopened at a max-length cut, then nothing more was
        said) ends without a final: there is nothing to transcribe."""
        assert self._utt is not None
        said = self._voiced_end > 0 or self._speech_dropped  # (trimmed speech still gets its final)
        cut = max(0, min(self._voiced_end + self._pad_bytes, len(self._utt))) if said else 0
        tail = self._utt[cut:]
        if said:
            self._emit_final(bytes(self._utt[:cut]), reason, events)
        else:  # it ends where it began, before any silence the cap dropped
            self._end_utterance(self._seconds(self._utt_start - self._utt_dropped // _SAMPLE_WIDTH), events)
        fb = self._opts.frame_bytes
        self._history.extend(bytes(tail[i : i + fb]) for i in range(0, len(tail), fb))

    def _cut_at_max(self, voiced: bool, events: list[Event]) -> None:
        assert self._utt is not None
        cut_at = self._utt_start + len(self._utt) // _SAMPLE_WIDTH
        self._emit_final(bytes(self._utt), "max_length", events)
        if voiced:
            self._open(cut_at, b"", events)

    def _emit_speculative(self, events: list[Event]) -> None:
        """The final the endpoint would emit now: the audio up to the last voiced frame + pad."""
        assert self._utt is not None
        audio = bytes(self._utt[: self._voiced_end + self._pad_bytes])
        start = self._seconds(self._utt_start)
        end = self._seconds(self._utt_start + len(audio) // _SAMPLE_WIDTH)
        events.append(SpeculativeReady(self._utterances, self._finals + 1, audio, start, end))

    def _emit_final(self, audio: bytes, reason: Reason, events: list[Event]) -> None:
        self._finals += 1
        start = self._seconds(self._utt_start)
        end = self._seconds(self._utt_start + len(audio) // _SAMPLE_WIDTH)
        events.append(FinalReady(self._utterances, self._finals, audio, start, end, reason))
        self._end_utterance(end, events)

    def _end_utterance(self, end: float, events: list[Event]) -> None:
        events.append(UtteranceEnded(self._utterances, end))
        self._utterances += 1
        self._utt = None
        self._history.clear()
        self._voiced_run = 0

    def _seconds(self, samples: int) -> float:
        return samples / self._opts.sample_rate


def _energy(pcm: bytes | bytearray) -> float:
    """Mean square of PCM s16le samples (0.0 for no audio)."""
    samples = memoryview(bytes(pcm[: len(pcm) // _SAMPLE_WIDTH * _SAMPLE_WIDTH])).cast("h")
    return sum(x * x for x in samples) / len(samples) if len(samples) else 0.0
