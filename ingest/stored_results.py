"""Reading a session's results back from the RESULTS stream (and writing the one result an edge
may write: a final declared failed).

The live path is core NATS (fast, best effort); this is the durable path the edge falls back on to
repair a gap, to resume a session and to learn how far the session's finals go.
"""

from __future__ import annotations

import logging

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from common import subjects
from common.messages import Final, SessionFlushed, Transcript, TranscriptionFailed, encode, result_decoder

log = logging.getLogger(__name__)


class FinalsCursor:
    """Reads a session's stored finals in stream order, each only once: ``read_new`` returns what
    was stored since the last call (from the start on the first call)."""

    def __init__(self, js: JetStreamContext, session_id: str) -> None:
        self.js = js
        self.subject = subjects.result_final(session_id)
        self.stream_seq = 0  # stream sequence of the last message read

    async def read_new(self, limit: int = 100_000) -> list[Final]:
        out: list[Final] = []
        while len(out) < limit:
            try:
                stored = await self.js.get_msg(subjects.RESULTS_STREAM, seq=self.stream_seq + 1, next=True,
                                               subject=self.subject)
            except NotFoundError:
                break
            self.stream_seq = stored.seq or self.stream_seq + 1
            final = _decode_final(stored.data)
            if final is not None:
                out.append(final)
        return out


async def last_final_index(js: JetStreamContext, session_id: str) -> int:
    """Final index of the session's most recently stored final; 0 when none is stored."""
    try:
        last = await js.get_last_msg(subjects.RESULTS_STREAM, subjects.result_final(session_id), direct=True)
    except NotFoundError:
        return 0
    final = _decode_final(last.data)
    return final.final_index if final is not None else 0


async def audio_position(js: JetStreamContext, session_id: str, shards: int) -> tuple[int, int]:
    """(last message seq, audio bytes at 16 kHz) of what the AUDIO stream holds for the session:
    where a resumed session's audio carries on."""
    try:
        last = await js.get_last_msg(subjects.AUDIO_STREAM, subjects.audio(session_id, shards))
    except NotFoundError:
        return 0, 0
    headers = last.headers or {}
    return int(headers.get(subjects.H_SEQ, 0)), int(headers.get(subjects.H_OFFSET, 0)) + len(last.data or b"")


async def flushed(js: JetStreamContext, session_id: str) -> SessionFlushed | None:
    try:
        stored = await js.get_last_msg(subjects.RESULTS_STREAM, subjects.result_flushed(session_id))
    except NotFoundError:
        return None
    if not stored.data:
        return None
    result = result_decoder.decode(stored.data)
    return result if isinstance(result, SessionFlushed) else None


async def declare_failed(js: JetStreamContext, failure: TranscriptionFailed) -> bool:
    """Stores ``failure`` for its index unless a transcript for it is already stored (same
    de-duplication id as the ASR worker's result); True when the failure was stored."""
    ack = await js.publish(subjects.result_final(failure.session_id), encode(failure),
                           headers={subjects.H_MSG_ID: subjects.final_result_id(failure.session_id,
                                                                                failure.final_index)})
    return not ack.duplicate


def _decode_final(data: bytes | None) -> Final | None:
    if not data:
        return None
    try:
        result = result_decoder.decode(data)
    except msgspec.DecodeError:
        log.error("undecodable result in %s", subjects.RESULTS_STREAM)
        return None
    if isinstance(result, TranscriptionFailed) or (isinstance(result, Transcript) and result.is_final):
        return result
    return None
