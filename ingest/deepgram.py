"""Deepgram's live-streaming wire format (``GET /v1/listen``, docs/deepgram.md) over the native session.

Pure and synchronous, no I/O. Two parts:

* ``parse_query``: the connection's query parameters as ``ListenOptions``, or ``QueryError``
  with the sentence of the HTTP 400 answer. Options this service cannot honour are refused, never
  silently ignored; a feature switched off (``diarize=false``) is accepted.
* ``DeepgramWire``: the connection's ``Wire`` (see ``ingest.connection``). ``parse`` turns
  Deepgram client frames (binary audio, ``KeepAlive``, ``Finalize``, ``CloseStream``) into native
  commands; ``render`` turns each native server message into Deepgram's (``Results``,
  ``SpeechStarted``, ``UtteranceEnd``, ``Metadata``, ``Error``) or suppresses it.

Native finals say why their utterance was cut (``reason``; absent from finals stored by workers
that predate it), and ``render`` also infers two flags from audio positions:

* ``from_finalize``: a ``Finalize`` at audio position P closes the utterance that is open then,
  i.e. one whose last speech is less than the endpointing silence before P. The first final
  ending in (P - endpointing, P] is that utterance's final; a ``Finalize`` in silence matches
  nothing (as on Deepgram, no response). ``endpointing`` here is the larger of the session's and
  the service's, so the window never misses.
* ``speech_final``: true when the VAD ended the utterance on a pause (endpointing); false for the
  final flushed by ``Finalize`` or ``CloseStream`` and for an utterance cut while the speaker went
  on (at the soft length or ``max_utterance_seconds``). With a ``reason``: exactly
  ``reason == "endpoint"``; without: inferred from the positions of ``CloseStream`` and
  ``Finalize`` and the final's length.
* A ``reason`` other than ``finalize`` also vetoes ``from_finalize`` (a ``Finalize`` that found the
  utterance already ending on a pause); ``finalize`` without a client ``Finalize`` (an edge
  draining its sessions cuts them the same way) does not set it.

Positions are seconds of the client's audio forwarded so far, the clock of the native ``*_s``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from ingest import g711
from ingest import protocol as p
from ingest.edge_settings import EdgeSettings

MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 48000  # as the native endpoint
MIN_ENDPOINTING_MS, MAX_ENDPOINTING_MS = 100, 5000  # what the VAD accepts (common.settings validation)
CHANNEL_INDEX = [0, 1]  # [channel, channels]: one channel
SLACK_S = 0.05  # rounding between client positions and the VAD's (frames, resampling, ms rounding)
MAX_MARKS = 64  # Finalize positions / UtteranceEnds held at most (a client finalising in silence in a loop)
NO_GAP_REASONS = frozenset({"soft_length", "max_length"})
"""Native final reasons of an utterance cut while the speaker went on: no gap, so no UtteranceEnd."""

# Accepted with any value; they do not change what this service returns.
_IGNORED = frozenset({"model", "version", "tag", "mip_opt_out", "token"})
# Accepted with any boolean: Whisper punctuates and formats its text anyway.
_BOOLEAN_NOOP = frozenset({"punctuate", "smart_format"})
# Features this service does not have: accepted only when switched off.
_OFF_ONLY = frozenset({
    "diarize", "multichannel", "numerals", "profanity_filter", "dictation", "detect_entities",
    "filler_words", "measurements", "paragraphs", "utterances", "no_delay",
})
_HONOURED = frozenset({
    "encoding", "sample_rate", "channels", "interim_results", "endpointing", "utterance_end_ms",
    "vad_events", "language",
})
_KNOWN = _IGNORED | _BOOLEAN_NOOP | _OFF_ONLY | _HONOURED

_json = msgspec.json.Decoder()


class QueryError(Exception):
    """An option this service cannot honour; ``message`` is the sentence of the 400 answer."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


ENCODINGS = ("linear16", *g711.TABLES)
"""Raw audio this endpoint takes: 16-bit PCM, or 8-bit G.711 (decoded to PCM as it arrives)."""


@dataclass(frozen=True, slots=True)
class ListenOptions:
    sample_rate: int
    encoding: str = "linear16"
    """One of ``ENCODINGS``."""
    interim_results: bool = False
    """Deepgram's default: only finals."""
    endpointing_ms: int | None = None
    """Silence that ends an utterance, for the VAD; None: the service's ``endpointing_ms``."""
    utterance_end_ms: int | None = None
    """Set: an ``UtteranceEnd`` follows each utterance's final (see docs/deepgram.md)."""
    vad_events: bool = False
    """``SpeechStarted`` when the VAD hears an utterance begin."""

    def options_header(self) -> str:
        """The per-session VAD overrides (``Asr-Options`` on every audio message), or ""."""
        if self.endpointing_ms is None:
            return ""
        return json.dumps({"endpointing_ms": self.endpointing_ms}, separators=(",", ":"))


_ERR_CODES = {400: "Bad Request", 401: "INVALID_AUTH", 403: "INSUFFICIENT_PERMISSIONS", 429: "TOO_MANY_REQUESTS"}


def http_error(status: int, message: str) -> dict[str, Any]:
    """The JSON body of an HTTP refusal before the upgrade, in Deepgram's shape."""
    return {"err_code": _ERR_CODES.get(status, "Bad Request"), "err_msg": message, "request_id": str(uuid.uuid4())}


def parse_query(query: Mapping[str, str], settings: EdgeSettings) -> ListenOptions:
    unknown = sorted(set(query) - _KNOWN)
    if unknown:
        raise QueryError(f"Unsupported query parameter {unknown[0]!r}: this service supports "
                         f"{', '.join(sorted(_HONOURED | _BOOLEAN_NOOP))} (see docs/deepgram.md)")
    for name in sorted(_OFF_ONLY & set(query)):
        if _boolean(query, name, False):
            raise QueryError(f"{name}=true is not supported by this service; leave it out or set it to false")
    for name in sorted(_BOOLEAN_NOOP & set(query)):
        _boolean(query, name, False)
    encoding = query.get("encoding")
    if encoding not in ENCODINGS:
        shown = "missing" if encoding is None else f"{encoding!r}"
        raise QueryError(f"encoding is {shown}: this service takes raw audio with sample_rate, encoding=linear16 "
                         "(16-bit little-endian PCM), mulaw or alaw (8-bit G.711); containers and compressed "
                         "audio are not decoded")
    raw_rate = query.get("sample_rate", "")
    if not raw_rate.isdigit() or not MIN_SAMPLE_RATE <= int(raw_rate) <= MAX_SAMPLE_RATE:
        raise QueryError(f"sample_rate must be a whole number of Hz from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE}")
    if query.get("channels", "1") != "1":
        raise QueryError("channels must be 1: this service transcribes mono audio only")
    _check_language(query.get("language"), settings)
    return ListenOptions(
        sample_rate=int(raw_rate),
        encoding=encoding,
        interim_results=_boolean(query, "interim_results", False),
        endpointing_ms=_endpointing(query.get("endpointing")),
        utterance_end_ms=_positive_ms(query, "utterance_end_ms"),
        vad_events=_boolean(query, "vad_events", False),
    )


def _boolean(query: Mapping[str, str], name: str, default: bool) -> bool:
    value = query.get(name)
    if value is None:
        return default
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise QueryError(f"{name} must be true or false, not {value[:40]!r}")


def _endpointing(value: str | None) -> int | None:
    """Milliseconds, clamped to what the VAD accepts; false: the longest (utterances then end on a
    long pause, Finalize, CloseStream or max_utterance_seconds); true: the service default."""
    if value is None or value.lower() == "true":
        return None
    if value.lower() == "false":
        return MAX_ENDPOINTING_MS
    if not value.isdigit():
        raise QueryError(f"endpointing must be a whole number of milliseconds or false, not {value[:40]!r}")
    return min(MAX_ENDPOINTING_MS, max(MIN_ENDPOINTING_MS, int(value)))


def _positive_ms(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None:
        return None
    if not value.isdigit() or int(value) <= 0:
        raise QueryError(f"{name} must be a positive whole number of milliseconds, not {value[:40]!r}")
    return int(value)


def _check_language(language: str | None, settings: EdgeSettings) -> None:
    if not language:
        return
    base = language.split("-")[0].lower()
    if settings.model.endswith(".en"):
        supported = "en"
    elif settings.language:
        supported = settings.language.split("-")[0].lower()
    else:
        return  # a multilingual model detects the language itself
    if base != supported:
        raise QueryError(f"language={language[:40]} is not supported: this service transcribes "
                         f"{supported} (model {settings.model})")


# --- the wire -------------------------------------------------------------------------------


class DeepgramWire:
    """One connection's Deepgram wire; see the module docstring. Not shared between connections."""

    def __init__(self, options: ListenOptions, settings: EdgeSettings) -> None:
        self.options = options
        self.endpointing_s = max(options.endpointing_ms or 0, settings.endpointing_ms) / 1000
        self.max_utterance_s = settings.max_utterance_seconds
        self.created = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.request_id = str(uuid.uuid4())  # replaced by the session id once the session starts
        self.model_info = {"name": settings.model, "version": "", "arch": "whisper"}
        self.model_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"asr-model:{settings.model}"))
        self.audio_bytes = 0  # PCM forwarded (whole 16-bit samples, after G.711 decoding)
        self._g711 = g711.TABLES.get(options.encoding)  # None: linear16
        self._carry = b""  # an odd byte waiting for the next chunk
        self._sha = hashlib.sha256()
        self._finalize_at: deque[float] = deque(maxlen=MAX_MARKS)  # positions of pending Finalize
        self._closed_at: float | None = None  # position of CloseStream
        self._held_ends: dict[str, float] = {}  # utterance id -> end_s, UtteranceEnd waiting for its final
        self._no_gap: deque[str] = deque(maxlen=MAX_MARKS)  # utterances whose final says they had no gap

    @property
    def position_s(self) -> float:
        return self.audio_bytes / (2 * self.options.sample_rate)

    # --- client -> native -----------------------------------------------------------------

    def parse(self, data: bytes | str, max_chunk_bytes: int) -> p.Command:
        if isinstance(data, bytes):
            return self._audio(data, max_chunk_bytes)
        try:
            obj = _json.decode(data)
        except (msgspec.DecodeError, RecursionError):
            raise p.ProtocolError(p.INVALID_MESSAGE, "Message is not valid JSON") from None
        kind = obj.get("type") if isinstance(obj, dict) else None
        if kind == "KeepAlive":
            return p.KeepAlive()
        if kind == "Finalize":
            self._finalize_at.append(self.position_s)
            return p.Finalize()
        if kind == "CloseStream":
            self._closed_at = self.position_s
            return p.End()
        if kind == p.OVERSIZED:
            return p.parse_text(data, max_chunk_bytes)  # raises its CHUNK_TOO_LARGE
        shown = kind if isinstance(kind, str) and len(kind) <= 40 else "?"
        raise p.ProtocolError(
            p.INVALID_MESSAGE,
            f"Unsupported message type {shown!r}; expected KeepAlive, Finalize or CloseStream (audio as binary frames)",
        )

    def _audio(self, frame: bytes, max_chunk_bytes: int) -> p.Command:
        if not frame:
            self._closed_at = self.position_s
            return p.End()  # Deepgram's legacy close: an empty binary frame
        if len(frame) > max_chunk_bytes:
            raise p.ProtocolError(
                p.CHUNK_TOO_LARGE, f"Audio chunk of {len(frame)} bytes exceeds the limit of {max_chunk_bytes} bytes"
            )
        self._sha.update(frame)
        if self._g711 is not None:  # one byte, one sample: nothing to carry
            pcm = g711.decode(frame, self._g711)
            self.audio_bytes += len(pcm)
            return p.Audio(pcm)
        pcm = self._carry + frame
        # Deepgram clients cut audio anywhere: an odd byte waits for the next chunk.
        cut = len(pcm) - len(pcm) % 2
        pcm, self._carry = pcm[:cut], pcm[cut:]
        if not pcm:
            return p.KeepAlive()
        self.audio_bytes += len(pcm)
        return p.Audio(pcm)

    # --- native -> client -----------------------------------------------------------------

    def render(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        kind = message.get("type")
        if kind == "session_started":
            self.request_id = str(uuid.UUID(hex=message["session_id"]))
            return []
        if kind == "transcript":
            if not message["is_final"]:
                return [self._results(message, is_final=False)] if self.options.interim_results else []
            return self._final(message)
        if kind == "speech_started":
            if not self.options.vad_events:
                return []
            return [{"type": "SpeechStarted", "channel": CHANNEL_INDEX, "timestamp": message["start_s"]}]
        if kind == "utterance_end":
            if self.options.utterance_end_ms is None or message["utterance_id"] in self._no_gap:
                return []
            self._held_ends[message["utterance_id"]] = message["end_s"]
            if len(self._held_ends) > MAX_MARKS:  # finals far behind: do not hold without bound
                return self._release_ends(until_s=next(iter(self._held_ends.values())))
            return []
        if kind == "error":
            out = [self._error(message)]
            failed = message.get("utterance_id")
            if failed in self._held_ends:  # TRANSCRIPTION_FAILED: that utterance's final will not come
                out.extend(self._release_ends(until_s=self._held_ends[failed]))
            return out
        if kind == "session_ended":
            return [*self._release_ends(), self._metadata(message["metrics"])]
        return []  # no Deepgram counterpart (session_recovered cannot happen: no resume here)

    def _final(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        end_s = message["end_s"]
        reason = message.get("reason", "")
        from_finalize = self._take_finalize(end_s) and reason in ("", "finalize")
        if reason:
            speech_final = reason == "endpoint"
        else:
            closing = self._closed_at is not None and end_s > self._closed_at - self.endpointing_s
            cut_at_max = message["end_s"] - message["start_s"] >= self.max_utterance_s - SLACK_S
            speech_final = not (from_finalize or closing or cut_at_max)
        if reason in NO_GAP_REASONS:  # cut while the speaker went on: Deepgram sees no gap there
            self._held_ends.pop(message["utterance_id"], None)
            self._no_gap.append(message["utterance_id"])
        # Utterances before this one that got no final (no text) end first; this one's after it.
        out = self._release_ends(until_s=message["start_s"])
        out.append(self._results(message, is_final=True, speech_final=speech_final, from_finalize=from_finalize))
        out.extend(self._release_ends(until_s=end_s + SLACK_S))
        return out

    def _take_finalize(self, end_s: float) -> bool:
        marks = self._finalize_at
        while marks and end_s > marks[0] + SLACK_S:
            marks.popleft()  # finals come in order: that Finalize closed nothing (silence)
        if marks and end_s > marks[0] - self.endpointing_s:
            marks.popleft()
            return True
        return False

    def _release_ends(self, until_s: float | None = None) -> list[dict[str, Any]]:
        """Held UtteranceEnds of utterances that ended by ``until_s`` (all without it), in order.
        Utterances do not overlap and finals come in their order, so an utterance that ended
        before the one whose final is out has had its final, or never gets one (no text)."""
        out: list[dict[str, Any]] = []
        for uid, end_s in list(self._held_ends.items()):
            if until_s is not None and end_s > until_s:
                break
            del self._held_ends[uid]
            out.append({"type": "UtteranceEnd", "channel": CHANNEL_INDEX, "last_word_end": end_s})
        return out

    def _results(
        self, message: dict[str, Any], *, is_final: bool, speech_final: bool = False, from_finalize: bool = False
    ) -> dict[str, Any]:
        start, end = message["start_s"], message["end_s"]
        return {
            "type": "Results",
            "channel_index": CHANNEL_INDEX,
            "duration": round(max(0.0, end - start), 3),
            "start": start,
            "is_final": is_final,
            "speech_final": speech_final,
            "channel": {"alternatives": [{"transcript": message["text"], "confidence": _confidence(message),
                                          "words": _words(message)}]},
            "metadata": {"request_id": self.request_id, "model_info": self.model_info, "model_uuid": self.model_uuid},
            "from_finalize": from_finalize,
        }

    @staticmethod
    def _error(message: dict[str, Any]) -> dict[str, Any]:
        code = message["code"]
        return {
            "type": "Error",
            "variant": "SchemaError" if code == p.INVALID_MESSAGE else code,
            "description": message["message"],
            "code": code,
        }

    def _metadata(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": self._sha.hexdigest(),
            "created": self.created,
            "duration": metrics.get("audio_seconds", round(self.position_s, 3)),
            "channels": 1,
            "models": [self.model_uuid],
            "model_info": {self.model_uuid: self.model_info},
        }


def _words(message: dict[str, Any]) -> list[dict[str, Any]]:
    """Deepgram's word objects from a native final's ``words`` (present when word_timestamps is on)."""
    return [{"word": w["word"].strip().strip(".,!?;:").lower(), "start": w["start_s"], "end": w["end_s"],
             "confidence": w["probability"], "punctuated_word": w["word"].strip()}
            for w in message.get("words", ())]


def _confidence(message: dict[str, Any]) -> float:
    """The mean word probability when words are known; 1.0 otherwise (the recognizer gives none)."""
    words = message.get("words") or ()
    return round(sum(w["probability"] for w in words) / len(words), 3) if words else 1.0
