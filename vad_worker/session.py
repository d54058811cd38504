"""One session's VAD state: a webrtcvad instance and a Segmenter. Runs inside the executor.

``SessionVad.process`` takes the session's messages of one batch, in order, and returns the
segmenter events; it is the only code that touches webrtcvad, and it never runs on the event
loop (the worker calls it through its bounded executor). One session is processed by at most one
thread at a time, so its webrtcvad instance is never shared.

A session's state can be rebuilt anywhere from its ``VadCheckpoint`` (common.continuity): the new
state starts at the checkpoint's resume position, ``replay`` re-feeds the audio from there up to
the checkpoint's last message (read back from the AUDIO stream by the worker), and ``process``
carries on with live messages. ``checkpoint()`` says where the state stands now.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import replace
from typing import Any

import webrtcvad

from common import logs
from common.audio import snr_db
from common.continuity import VadCheckpoint
from common.messages import DECODE_WINDOW_S
from common.settings import ENDPOINTING_MS_MAX, ENDPOINTING_MS_MIN, Settings
from vad_worker.segmenter import (
    Event,
    FinalReady,
    Segmenter,
    SegmenterOptions,
    SegmenterStart,
    SpeculativeReady,
    UtteranceEnded,
)
from vad_worker.seq_order import Chunk, SeqOrder
from vad_worker.vad_settings import VadSettings

log = logging.getLogger(__name__)

_SAMPLE_WIDTH = 2
MAX_GAP_BYTES = 60 * 32000  # longest hole in a session's audio filled with silence (60 s)
# Per-session overrides a client may ask for (header Asr-Options), with their accepted bounds.
OVERRIDE_BOUNDS = {"endpointing_ms": (ENDPOINTING_MS_MIN, ENDPOINTING_MS_MAX)}
EVERY_FINAL_SNR_DB = 100.0
"""A context SNR bound at or above this gives every final context (no PCM reaches 100 dB)."""


def final_context(before: bytes, audio: bytes, max_snr_db: float, window_bytes: int) -> bytes:
    """The acoustic context a final of ``audio`` gets from ``before`` (the earlier finals' audio):
    its tail that fits one decoding window with the final, if the final is noisy enough (estimated
    SNR below ``max_snr_db``); b"" for clean audio or a final that fills the window."""
    room = max(0, window_bytes - len(audio))
    if not room or (max_snr_db < EVERY_FINAL_SNR_DB and snr_db(audio) >= max_snr_db):
        return b""
    return before[max(0, len(before) - room):]


def segmenter_options(settings: VadSettings) -> SegmenterOptions:
    max_ms = int(settings.max_utterance_seconds * 1000)
    return SegmenterOptions(
        sample_rate=16000,
        frame_ms=settings.vad_frame_ms,
        endpointing_ms=settings.endpointing_ms,
        pre_roll_ms=settings.pre_roll_ms,
        min_speech_ms=settings.min_speech_ms,
        trailing_pad_ms=settings.trailing_pad_ms,
        max_utterance_ms=max_ms,
        # 0 disables partials: an interval longer than any utterance never fires.
        partial_interval_ms=settings.partial_interval_ms or 2 * max_ms,
        max_buffer_bytes=settings.vad_max_buffer_bytes,
        soft_utterance_ms=int(settings.soft_utterance_seconds * 1000),
        long_utterance_ms=int(settings.long_utterance_seconds * 1000),
        long_endpointing_ms=min(settings.long_endpointing_ms, settings.endpointing_ms),
        speculative_finals=settings.speculative_finals,
    )


def _effective(overrides: dict[str, int]) -> dict[str, int]:
    """A session that chooses its endpointing gets that endpoint all along: the shorter endpoint of
    long utterances (long_endpointing_ms) tunes only the service's own default."""
    out = dict(overrides)
    if "endpointing_ms" in out:
        out.setdefault("long_endpointing_ms", out["endpointing_ms"])
    return out


def parse_overrides(header: str | None, session_id: str = "") -> dict[str, int]:
    """The valid entries of an ``Asr-Options`` header (a JSON object); the rest is ignored with a
    warning, so a bad option never stops a session's audio."""
    if not header:
        return {}
    session_log = logs.for_session(log, session_id)
    try:
        raw = json.loads(header)
    except ValueError:
        session_log.warning("Asr-Options is not JSON, ignored: %.100r", header)
        return {}
    if not isinstance(raw, dict):
        session_log.warning("Asr-Options is not a JSON object, ignored")
        return {}
    out: dict[str, int] = {}
    for name, value in raw.items():
        bounds = OVERRIDE_BOUNDS.get(name)
        if bounds is None:
            session_log.warning("Asr-Options %r is not a per-session option, ignored", name)
        elif not isinstance(value, int) or isinstance(value, bool) or not bounds[0] <= value <= bounds[1]:
            session_log.warning("Asr-Options %s=%r is outside %d-%d, ignored", name, value, *bounds)
        else:
            out[name] = value
    return out


class SessionVad:
    def __init__(self, session_id: str, options: SegmenterOptions, aggressiveness: int,
                 checkpoint: VadCheckpoint | None = None, *, replayable: bool = True,
                 context_seconds: float = 0.0, context_max_snr_db: float = EVERY_FINAL_SNR_DB,
                 reorder_wait_s: float = Settings().vad_reorder_wait_seconds, revise: bool = False) -> None:
        """From ``checkpoint`` (None: a new session). ``replayable``: the caller will ``replay``
        the audio from the checkpoint's resume position; if not, the state starts after the last
        processed sample (an open utterance's audio is then lost, the numbering still continues).
        ``context_seconds``: each final carries up to this much of the session's recent final audio,
        the finals before it joined in order (``FinalReady.context``), for the recogniser to hear
        what led up to it (not checkpointed: the first final after a rebuild has none), if its
        estimated signal-to-noise ratio (``common.audio.snr_db``) is below ``context_max_snr_db``:
        context pays where a lone utterance decodes worst, in noise. ``reorder_wait_s``: how long
        a message missing from the stream is waited for (``order``) before its hole counts as
        silence. ``revise``: each final also carries the previous final's whole audio
        (``FinalReady.previous``) for that final's revision, if it fits one decoding window with
        the final and its context (not checkpointed either)."""
        cp = checkpoint or VadCheckpoint()
        self.session_id = session_id
        self.overrides = dict(cp.options)
        self._vad = webrtcvad.Vad(aggressiveness)
        chosen: dict[str, Any] = _effective(self.overrides)  # the per-session option fields
        opts = replace(options, **chosen) if chosen else options
        if replayable:
            start = SegmenterStart(cp.resume_position, cp.utterances, cp.finals)
        else:
            start = SegmenterStart(cp.samples, cp.utterances + int(cp.in_speech), cp.finals)
        self.segmenter = Segmenter(opts, self._is_speech, start)
        self.sample_rate = options.sample_rate
        self.resumed_from = checkpoint if replayable else None
        self.last_seq = cp.last_seq
        self.last_stream_seq = cp.last_stream_seq
        self.last_seen = time.monotonic()
        self.ended = cp.ended
        self.drained = False  # a drain request was processed in the last batch
        self.missing_bytes = 0  # audio missing from the stream, replaced by silence
        # Which messages may be processed next (the worker reads the stream for it).
        self.order = SeqOrder(cp.last_seq, cp.last_stream_seq, read_from=cp.read_from_stream_seq,
                              wait_s=reorder_wait_s)
        self.flush_due = False  # the session was not ended before this batch (the worker's bookkeeping)
        self.overflow_reported = 0  # overflow bytes already counted in metrics
        self.frames = 0
        self.revision = 0  # of this session's checkpoint in the KV bucket; 0: none written yet
        self.threads_seen: set[int] = set()  # thread idents that ran VAD (checked by tests)
        # Audio messages since the resume position: (stream seq, offset bytes, length bytes).
        self._held: deque[tuple[int, int, int]] = deque()
        self._context_bytes = int(context_seconds * options.sample_rate) * _SAMPLE_WIDTH
        self._window_bytes = int(DECODE_WINDOW_S * options.sample_rate) * _SAMPLE_WIDTH
        self._context_max_snr_db = context_max_snr_db
        self._previous_final = b""  # the recent finals' audio (at most _context_bytes), for the next one
        self._revise = revise
        self._last_final = b""  # the previous final's audio, for its revision

    def _is_speech(self, frame: bytes) -> bool:
        self.frames += 1
        return bool(self._vad.is_speech(frame, self.sample_rate))

    def replay(self, chunks: list[Chunk]) -> list[Event]:
        """Re-feeds the checkpoint's audio from its resume position (``chunks``: the session's
        messages from the one holding that position up to the checkpoint's last one). Returns only
        the finals and utterance ends that come out (the client already saw the rest)."""
        self.threads_seen.add(threading.get_ident())
        cp = self.resumed_from
        assert cp is not None, "replay() needs a checkpoint"
        self.resumed_from = None
        events: list[Event] = []
        start = cp.resume_position * _SAMPLE_WIDTH
        for chunk in chunks:
            if chunk.kind != "audio" or chunk.seq > cp.last_seq:
                continue  # control messages were applied before the resume position
            offset = chunk.offset if chunk.offset >= 0 else self.segmenter.samples_seen * _SAMPLE_WIDTH
            skip = max(0, start - offset)
            if skip >= len(chunk.pcm):
                continue
            self._held.append((chunk.stream_seq, offset, len(chunk.pcm)))
            events += [e for e in self.segmenter.push(chunk.pcm[skip:]) if isinstance(e, FinalReady | UtteranceEnded)]
        if self.segmenter.samples_seen != cp.samples:
            logs.for_session(log, self.session_id).warning("replay reached sample %d, the checkpoint said %d",
                                                           self.segmenter.samples_seen, cp.samples)
        return self._with_context(events)

    def process(self, chunks: list[Chunk]) -> list[Event]:
        """Feeds the chunks in order; duplicates (seq already seen) are skipped."""
        self.threads_seen.add(threading.get_ident())
        events: list[Event] = []
        for chunk in chunks:
            if chunk.seq <= self.last_seq or self.ended:
                continue
            self.last_seq = chunk.seq
            self.last_stream_seq = max(self.last_stream_seq, chunk.stream_seq)
            if chunk.kind == "audio":
                events += self._fill_gap(chunk)
                at = self.segmenter.samples_seen * _SAMPLE_WIDTH
                pcm = chunk.pcm[max(0, at - chunk.offset):] if chunk.offset >= 0 else chunk.pcm
                self._held.append((chunk.stream_seq, at, len(pcm)))
                events += self.segmenter.push(pcm)
            elif chunk.kind == "finalize":
                events += self.segmenter.finalize()
            elif chunk.kind == "drain":  # the edge is going away: cut the utterance, keep the session
                events += self.segmenter.finalize()
                self.drained = True
            elif chunk.kind == "end":
                events += self.segmenter.end()
                self.ended = True
        return self._with_context(events)

    def _with_context(self, events: list[Event]) -> list[Event]:
        """Gives each final (and speculative final) the audio of the finals before it (their last ``_context_bytes``) as
        acoustic context, cut at the front so context and utterance fit one decoding window, when
        the final's audio is noisy enough to need it; and, when revising, the previous final's
        audio if the two fit one window."""
        if not self._context_bytes and not self._revise:
            return events
        out: list[Event] = []
        for event in events:
            if isinstance(event, FinalReady | SpeculativeReady):
                context = final_context(self._previous_final, event.audio, self._context_max_snr_db,
                                        self._window_bytes) if self._context_bytes else b""
                if isinstance(event, FinalReady):
                    # The job stays within one window of audio (NATS's 1 MB max_payload).
                    fits = len(self._last_final) + len(context) + len(event.audio) <= self._window_bytes
                    previous = self._last_final if self._revise and fits else b""
                    out.append(replace(event, context=context, previous=previous))
                    if self._context_bytes:
                        self._previous_final = (self._previous_final + event.audio)[-self._context_bytes:]
                    self._last_final = event.audio if self._revise else b""
                else:
                    out.append(replace(event, context=context))
            else:
                out.append(event)
        return out

    def _fill_gap(self, chunk: Chunk) -> list[Event]:
        """Audio the stream does not hold (lost before it was stored) is replaced by silence of the
        same length, so the session's time base stays the client's (``Asr-Offset``)."""
        gap = chunk.offset - self.segmenter.samples_seen * _SAMPLE_WIDTH if chunk.offset >= 0 else 0
        if gap <= 0:
            return []
        gap = min(gap, MAX_GAP_BYTES)
        self.missing_bytes += gap
        return self.segmenter.push(bytes(gap))

    def checkpoint(self) -> VadCheckpoint:
        """Where this state stands (after the last ``process``), for the next owner."""
        seg = self.segmenter
        position = seg.resume_position * _SAMPLE_WIDTH
        while self._held and self._held[0][1] + self._held[0][2] <= position:
            self._held.popleft()  # entirely before the resume position: never re-read
        # The stream may hold these messages out of seq order (after a bus outage): re-reading
        # starts at the lowest position among them.
        resume_stream_seq = min(h[0] for h in self._held) if self._held and not self.ended else 0
        return VadCheckpoint(
            finals=seg.finals_emitted, utterances=seg.utterances, last_seq=self.last_seq,
            last_stream_seq=self.last_stream_seq, samples=seg.samples_seen,
            resume_position=seg.resume_position, resume_stream_seq=resume_stream_seq,
            in_speech=seg.in_speech, ended=self.ended, options=self.overrides,
            read_from_stream_seq=0 if self.ended else self.order.floor,
        )
