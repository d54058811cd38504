"""Reading a session's results back from the RESULTS stream (and writing the one result an edge
may write: a final declared failed).

The live path is core NATS (fast, best effort); this is the durable path the edge falls back on to
repair a gap, to resume a session and to learn how far the session's finals go. Finals come back
with the revisions stored after them (`common.revised_finals` applies them).
"""

from __future__ import annotations

import logging

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, NotFoundError

from common import continuity, subjects
from common.messages import (
    Final,
    Revision,
    SessionFlushed,
    StoredFinal,
    Transcript,
    TranscriptionFailed,
    encode,
    result_decoder,
)

log = logging.getLogger(__name__)


class FinalsCursor:
    """Reads a session's stored finals and their revisions in stream order, each only once:
    ``read_new`` returns what was stored since the last call (from the start on the first call).
    A revision comes after the final it revises (the ASR worker revises a final once the next one
    is published)."""

    def __init__(self, js: JetStreamContext, session_id: str) -> None:
        self.js = js
        self.subject = subjects.results(session_id)  # final, revision and flushed are stored
        self.stream_seq = 0  # stream sequence of the last message read

    async def read_new(self, limit: int = 100_000) -> list[StoredFinal]:
        out: list[StoredFinal] = []
        while len(out) < limit:
            try:
                stored = await self.js.get_msg(subjects.RESULTS_STREAM, seq=self.stream_seq + 1, next=True,
                                               subject=self.subject)
            except NotFoundError:
                break
            self.stream_seq = stored.seq or self.stream_seq + 1
            item = _decode_stored(stored.data)
            if item is not None:
                out.append(item)
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
    """(seq, audio bytes at 16 kHz) up to which the AUDIO stream holds the session's messages
    without a hole: where a resumed session's audio carries on.

    Not simply the last message stored: after a bus outage the edge publishes what was not
    acknowledged again, so the stream can hold 51..110 before 47..50, or 51..110 without 47..50
    if the connection was lost first. Carrying on after 110 would then tell the client that the
    service holds 47..50. The messages are read from where the VAD's checkpoint stands (what it
    processed in order; from the start without one) and the run without a hole is followed."""
    subject = subjects.audio(session_id, shards)
    seq, offset, position = 0, 0, 1
    try:
        kv = await js.key_value(continuity.BUCKET)
        cp = continuity.decode((await kv.get(session_id)).value or b"")
        seq, offset = cp.last_seq, cp.samples * 2
        position = cp.read_from_stream_seq or cp.last_stream_seq + 1
    except (NotFoundError, BucketNotFoundError, msgspec.DecodeError):
        pass
    ends: dict[int, int] = {}
    while True:
        try:
            stored = await js.get_msg(subjects.AUDIO_STREAM, seq=position, next=True, subject=subject)
        except NotFoundError:
            break
        position = (stored.seq or position) + 1
        headers = stored.headers or {}
        try:
            ends.setdefault(int(headers[subjects.H_SEQ]), int(headers[subjects.H_OFFSET]) + len(stored.data or b""))
        except (KeyError, ValueError):
            continue
    while seq + 1 in ends:
        seq += 1
        offset = max(offset, ends[seq])
    return seq, offset


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
    item = _decode_stored(data)
    return None if isinstance(item, Revision) else item


def _decode_stored(data: bytes | None) -> StoredFinal | None:
    """A stored final or revision (None for anything else, e.g. the ``flushed`` marker)."""
    if not data:
        return None
    try:
        result = result_decoder.decode(data)
    except msgspec.DecodeError:
        log.error("undecodable result in %s", subjects.RESULTS_STREAM)
        return None
    if isinstance(result, TranscriptionFailed | Revision) or (isinstance(result, Transcript) and result.is_final):
        return result
    return None
