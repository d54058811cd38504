"""One session's VAD state: a webrtcvad instance and a Segmenter. Runs inside the thread pool.

``SessionVad.process`` takes the session's messages of one batch, in order, and returns the
segmenter events; it is the only code that touches webrtcvad, and it never runs on the event
loop (the worker calls it through its bounded executor). One session is processed by at most one
thread at a time, so its webrtcvad instance is never shared.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import webrtcvad

from common.settings import Settings
from vad_worker.segmenter import Event, Segmenter, SegmenterOptions


def segmenter_options(settings: Settings) -> SegmenterOptions:
    max_ms = int(settings.max_utterance_seconds * 1000)
    return SegmenterOptions(
        sample_rate=16000,
        frame_ms=settings.vad_frame_ms,
        endpointing_ms=settings.endpointing_ms,
        pre_roll_ms=settings.pre_roll_ms,
        min_speech_ms=settings.min_speech_ms,
        max_utterance_ms=max_ms,
        # 0 disables partials: an interval longer than any utterance never fires.
        partial_interval_ms=settings.partial_interval_ms or 2 * max_ms,
        max_buffer_bytes=settings.vad_max_buffer_bytes,
        soft_utterance_ms=int(settings.soft_utterance_seconds * 1000),
        long_utterance_ms=int(settings.long_utterance_seconds * 1000),
        long_endpointing_ms=min(settings.long_endpointing_ms, settings.endpointing_ms),
    )


@dataclass(frozen=True, slots=True)
class Chunk:
    seq: int
    kind: str  # audio | finalize | drain | end
    pcm: bytes


class SessionVad:
    def __init__(self, session_id: str, options: SegmenterOptions, aggressiveness: int) -> None:
        self.session_id = session_id
        self._vad = webrtcvad.Vad(aggressiveness)
        self.segmenter = Segmenter(options, self._is_speech)
        self.sample_rate = options.sample_rate
        self.last_seq = 0
        self.last_seen = time.monotonic()
        self.ended = False
        self.drained = False  # a drain request was processed in the last batch
        self.overflow_reported = 0  # overflow bytes already counted in metrics
        self.frames = 0
        self.threads_seen: set[int] = set()  # thread idents that ran VAD (checked by tests)

    def _is_speech(self, frame: bytes) -> bool:
        self.frames += 1
        return bool(self._vad.is_speech(frame, self.sample_rate))

    def process(self, chunks: list[Chunk]) -> list[Event]:
        """Feeds the chunks in order; duplicates (seq already seen) are skipped."""
        self.threads_seen.add(threading.get_ident())
        events: list[Event] = []
        for chunk in chunks:
            if chunk.seq <= self.last_seq or self.ended:
                continue
            self.last_seq = chunk.seq
            if chunk.kind == "audio":
                events += self.segmenter.push(chunk.pcm)
            elif chunk.kind == "finalize":
                events += self.segmenter.finalize()
            elif chunk.kind == "drain":  # the edge is going away: cut the utterance, keep the session
                events += self.segmenter.finalize()
                self.drained = True
            elif chunk.kind == "end":
                events += self.segmenter.end()
                self.ended = True
        return events

    def expire(self) -> list[Event]:
        """The session went quiet without `end` (its edge died): close what is open."""
        self.threads_seen.add(threading.get_ident())
        if self.ended:
            return []
        self.ended = True
        return self.segmenter.end()
