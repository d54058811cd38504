"""The client wire protocol (docs/protocol.md): parsing client messages, building server ones.

Pure functions: no sockets, no bus. Every bad input becomes a ``ProtocolError`` carrying the
code and sentence the client receives; the connection stays usable after it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import msgspec

# Error codes of the client contract.
CHUNK_TOO_LARGE = "CHUNK_TOO_LARGE"
INVALID_AUDIO = "INVALID_AUDIO"
INVALID_MESSAGE = "INVALID_MESSAGE"
CAPACITY = "CAPACITY"
UNAUTHORIZED = "UNAUTHORIZED"
RATE_LIMITED = "RATE_LIMITED"
RESUME_FAILED = "RESUME_FAILED"
TRANSCRIPTION_FAILED = "TRANSCRIPTION_FAILED"
INTERNAL = "INTERNAL"

# Close codes.
CLOSE_NORMAL = 1000
CLOSE_TOO_SLOW = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_DRAINING = 1012
CLOSE_CAPACITY = 1013


class ProtocolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Audio:
    pcm: bytes


@dataclass(frozen=True, slots=True)
class Finalize:
    pass


@dataclass(frozen=True, slots=True)
class End:
    pass


@dataclass(frozen=True, slots=True)
class KeepAlive:
    pass


@dataclass(frozen=True, slots=True)
class Reconnect:
    previous_session_id: str
    resume_token: str
    last_seq: int


Command = Audio | Finalize | End | KeepAlive | Reconnect

_json = msgspec.json.Decoder()
OVERSIZED = "__oversized__"
_MESSAGE_TYPES = ("audio", "finalize", "end", "keepalive", "reconnect")


def check_pcm(pcm: bytes, max_chunk_bytes: int) -> Audio:
    if len(pcm) > max_chunk_bytes:
        raise ProtocolError(
            CHUNK_TOO_LARGE, f"Audio chunk of {len(pcm)} bytes exceeds the limit of {max_chunk_bytes} bytes"
        )
    if not pcm:
        raise ProtocolError(INVALID_AUDIO, "Empty audio chunk")
    if len(pcm) % 2:
        raise ProtocolError(
            INVALID_AUDIO, f"Audio chunk of {len(pcm)} bytes is not whole 16-bit samples (odd byte count)"
        )
    return Audio(pcm)


def parse_binary(frame: bytes, max_chunk_bytes: int) -> Audio:
    return check_pcm(frame, max_chunk_bytes)


def parse_text(text: str, max_chunk_bytes: int) -> Command:
    try:
        obj = _json.decode(text)
    except msgspec.DecodeError:
        raise ProtocolError(INVALID_MESSAGE, "Message is not valid JSON") from None
    except RecursionError:
        raise ProtocolError(INVALID_MESSAGE, "Message JSON is nested too deeply") from None
    if not isinstance(obj, dict):
        raise ProtocolError(INVALID_MESSAGE, "Message must be a JSON object with a \"type\" field")
    kind = obj.get("type")
    if kind == "audio":
        return _audio(obj, max_chunk_bytes)
    if kind == "finalize":
        return Finalize()
    if kind == "end":
        return End()
    if kind == "keepalive":
        return KeepAlive()
    if kind == "reconnect":
        return _reconnect(obj)
    if kind == OVERSIZED:  # put in place of a discarded message by ingest.frame_gate
        size = obj.get("bytes")
        raise ProtocolError(
            CHUNK_TOO_LARGE,
            f"Message of {size} bytes exceeds the frame limit and was discarded; "
            f"send audio in chunks of at most {max_chunk_bytes} bytes",
        )
    if not isinstance(kind, str):
        raise ProtocolError(INVALID_MESSAGE, "Message must have a string \"type\" field")
    shown = kind if len(kind) <= 40 else kind[:40] + "…"
    raise ProtocolError(
        INVALID_MESSAGE, f"Unknown message type {shown!r}; expected one of {', '.join(_MESSAGE_TYPES)}"
    )


def _audio(obj: dict[str, Any], max_chunk_bytes: int) -> Audio:
    data = obj.get("data")
    if not isinstance(data, str):
        raise ProtocolError(INVALID_AUDIO, "Audio message needs \"data\": base64-encoded PCM")
    # Refuse by length before decoding: 4 base64 characters carry 3 bytes.
    if (len(data) // 4) * 3 > max_chunk_bytes + 3:
        raise ProtocolError(
            CHUNK_TOO_LARGE,
            f"Audio chunk of about {(len(data) // 4) * 3} bytes exceeds the limit of {max_chunk_bytes} bytes",
        )
    try:
        pcm = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(INVALID_AUDIO, "Audio data is not valid base64") from None
    return check_pcm(pcm, max_chunk_bytes)


def _reconnect(obj: dict[str, Any]) -> Reconnect:
    sid, token, last_seq = obj.get("previous_session_id"), obj.get("resume_token"), obj.get("last_seq", 0)
    if not isinstance(sid, str) or not isinstance(token, str):
        raise ProtocolError(
            INVALID_MESSAGE, "reconnect needs string previous_session_id and resume_token fields"
        )
    if not isinstance(last_seq, int) or isinstance(last_seq, bool) or last_seq < 0:
        raise ProtocolError(INVALID_MESSAGE, "reconnect needs last_seq: the highest final seq received, or 0")
    return Reconnect(sid, token, last_seq)


# --- server messages ------------------------------------------------------------------------


def error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


def session_started(session_id: str, resume_token: str, worker_id: str, sample_rate: int) -> dict[str, Any]:
    return {
        "type": "session_started",
        "session_id": session_id,
        "resume_token": resume_token,
        "worker_id": worker_id,
        "sample_rate": sample_rate,
    }


def transcript(
    *, is_final: bool, utterance_id: str, text: str, start_s: float, end_s: float, seq: int | None = None,
    reason: str = "",
) -> dict[str, Any]:
    """A partial or final ``transcript``; ``reason`` (finals): why the utterance was cut, left out
    when unknown (a final stored by a worker that predates it)."""
    msg: dict[str, Any] = {"type": "transcript", "is_final": is_final}
    if seq is not None:
        msg["seq"] = seq
    msg.update(utterance_id=utterance_id, text=text, start_s=round(start_s, 3), end_s=round(end_s, 3))
    if reason:
        msg["reason"] = reason
    return msg


def revision(*, seq: int, utterance_id: str, text: str, start_s: float, end_s: float,
             words: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The final ``seq`` (which the client has) now reads ``text``."""
    msg: dict[str, Any] = {"type": "revision", "seq": seq, "utterance_id": utterance_id, "text": text,
                           "start_s": round(start_s, 3), "end_s": round(end_s, 3)}
    if words:
        msg["words"] = words
    return msg
