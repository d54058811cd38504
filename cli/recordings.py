"""Reading recorded sessions out of JetStream: the library behind `asr sessions`, `asr export`,
`asr transcript`, `asr delete` and `asr replay`.

What the streams hold (common/subjects.py): the session's audio messages on
``audio.<shard>.<session>`` in stream AUDIO (PCM s16le 16 kHz mono payloads, control messages
with empty payloads; headers ``Asr-Kind``, ``Asr-Seq``, ``Asr-Offset``, ``Asr-Sent-At``), and its
finals, their revisions and ``flushed`` marker on ``results.<session>.final|revision|flushed`` in
stream RESULTS. Nothing else is needed: a session's start is its first audio message's
``Asr-Sent-At``, its length the last message's offset plus payload, and it ended when its last
message is ``end``. Transcripts read back carry the revisions (`common.revised_finals`).

Errors a user can act on are :class:`RecordingError` subclasses whose message is one sentence.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RawStreamMsg
from nats.js.errors import NotFoundError

from cli.transcript_formats import delivered
from common import subjects
from common.audio import pcm_duration_s
from common.messages import Revision, SessionFlushed, Transcript, result_decoder
from common.revised_finals import revised
from common.streams import RECORD_AUDIO_KEY

FETCH_BATCH = 256
FETCH_TIMEOUT_S = 5.0
LIST_CONCURRENCY = 16  # sessions `asr sessions` looks up at once


class RecordingError(Exception):
    """A problem the user can act on; ``str()`` is one sentence."""


class UnknownSession(RecordingError):
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(
            f"session {session_id} is unknown: neither its audio nor its results are kept here "
            "(list the recorded sessions with `asr sessions`)."
        )


class AudioGone(RecordingError):
    def __init__(self, session_id: str, missing_s: float | None = None) -> None:
        self.session_id = session_id
        self.missing_s = missing_s  # None: all of it; else the seconds dropped from the start
        what = "is no longer kept" if missing_s is None else f"is incomplete (its first {missing_s:.1f} s are gone)"
        super().__init__(
            f"the audio of session {session_id} {what}: it expired under the retention limits "
            "(audio_retention_seconds, audio_max_bytes) or was deleted with `asr delete`."
        )


class NotRecorded(RecordingError):
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(
            f"session {session_id} was not recorded: this deployment runs with record_audio off, so its "
            "audio is kept only for crash recovery and cannot be replayed or exported."
        )


@dataclass(frozen=True, slots=True)
class AudioMessage:
    """One message of a session's audio subject, as the edge published it."""

    kind: str  # audio | finalize | drain | end
    seq: int  # the session's message sequence (Asr-Seq), from 1
    offset: int  # bytes of session audio before this chunk (Asr-Offset)
    sent_at: float  # wall clock when the edge published it (Asr-Sent-At)
    pcm: bytes  # PCM s16le 16 kHz mono; empty for control messages


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One row of `asr sessions`."""

    session_id: str
    started_at: float | None  # UNIX seconds of the first audio (or the first final when no audio is kept)
    audio_s: float  # seconds of audio the session had (from the last audio message)
    audio_kept: bool  # some of its audio is still in the AUDIO stream
    finals: int  # finals with text, as delivered to the client
    ended: bool  # the client sent `end` (or the VAD worker closed it)
    replay_of: str  # the recorded session this one replays; "" for live sessions

    def as_json(self) -> dict[str, object]:
        return {
            "session_id": self.session_id, "started_at": self.started_at, "audio_s": round(self.audio_s, 3),
            "audio_kept": self.audio_kept, "finals": self.finals, "ended": self.ended,
            "replay_of": self.replay_of or None,
        }


def _audio_message(headers: dict[str, str] | None, data: bytes | None) -> AudioMessage:
    h = headers or {}
    return AudioMessage(
        kind=h.get(subjects.H_KIND, "audio"), seq=int(h.get(subjects.H_SEQ, 0)),
        offset=int(h.get(subjects.H_OFFSET, 0)), sent_at=float(h.get(subjects.H_SENT_AT, 0.0)), pcm=data or b"",
    )


def audio_filter(session_id: str) -> str:
    """Every shard's subject of one session (the CLI need not know the deployment's shard count)."""
    return f"audio.*.{session_id}"


async def recording_enabled(js: JetStreamContext) -> bool:
    """False when the deployment runs with record_audio off (the AUDIO stream's metadata says so)."""
    try:
        info = await js.stream_info(subjects.AUDIO_STREAM)
    except NotFoundError:
        return True
    return (info.config.metadata or {}).get(RECORD_AUDIO_KEY, "true") != "false"


async def _subject_counts(js: JetStreamContext, stream: str, subject_filter: str) -> dict[str, int]:
    try:
        info = await js.stream_info(stream, subjects_filter=subject_filter)
    except NotFoundError:
        return {}
    return dict(info.state.subjects or {})


async def read_stream(js: JetStreamContext, stream: str, subject_filter: str, expected: int) -> list[Msg]:
    """Every message on ``subject_filter`` in stream order, through a short-lived ordered pull consumer."""
    if expected == 0:
        return []
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=30.0,
        mem_storage=True,
    )
    sub = await js.pull_subscribe(subject_filter, stream=stream, config=config)
    consumer = (await sub.consumer_info()).name
    out: list[Msg] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(FETCH_BATCH, timeout=FETCH_TIMEOUT_S)
            except (TimeoutError, nats.errors.TimeoutError):
                break  # nothing more (messages may have expired since they were counted)
            out += msgs
            if not msgs or msgs[-1].metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await js.delete_consumer(stream, consumer)  # else it lingers for inactive_threshold
    return out


async def read_audio(js: JetStreamContext, session_id: str) -> list[AudioMessage]:
    """The session's audio and control messages in the order the edge published them."""
    counts = await _subject_counts(js, subjects.AUDIO_STREAM, audio_filter(session_id))
    msgs = await read_stream(js, subjects.AUDIO_STREAM, audio_filter(session_id), sum(counts.values()))
    return [_audio_message(m.headers, m.data) for m in msgs]


async def _get(js: JetStreamContext, stream: str, subject: str, *, first: bool, direct: bool) -> RawStreamMsg | None:
    try:
        if first:
            return await js.get_msg(stream, seq=1, subject=subject, next=True, direct=direct)
        return await js.get_last_msg(stream, subject, direct=direct)
    except NotFoundError:
        return None


async def read_results(js: JetStreamContext, session_id: str) -> tuple[list[Transcript], SessionFlushed | None]:
    """The session's finals kept in RESULTS (stream order), with their stored revisions applied,
    and its ``flushed`` marker, if any."""
    kept: list[Transcript | Revision] = []
    seq = 0
    while True:
        try:
            stored = await js.get_msg(subjects.RESULTS_STREAM, seq=seq + 1, next=True,
                                      subject=subjects.results(session_id), direct=True)
        except NotFoundError:
            break
        seq = stored.seq or seq + 1
        result = result_decoder.decode(stored.data or b"")
        if isinstance(result, Revision) or (isinstance(result, Transcript) and result.is_final):
            kept.append(result)
    finals = [f for f in revised(kept) if isinstance(f, Transcript)]
    flushed = None
    last = await _get(js, subjects.RESULTS_STREAM, subjects.result_flushed(session_id), first=False, direct=True)
    if last is not None and last.data:
        decoded = result_decoder.decode(last.data)
        if isinstance(decoded, SessionFlushed):
            flushed = decoded
    return finals, flushed


async def session_info(js: JetStreamContext, session_id: str, audio_subject: str, audio_messages: int) -> SessionInfo:
    """What `asr sessions` shows of one session; ``audio_subject`` is where its audio is ("" if none)."""
    finals, flushed = await read_results(js, session_id)
    started_at: float | None = None
    audio_s = 0.0
    ended = flushed is not None and flushed.ended
    replay_of = ""
    if audio_messages:
        first = await _get(js, subjects.AUDIO_STREAM, audio_subject, first=True, direct=False)
        last = await _get(js, subjects.AUDIO_STREAM, audio_subject, first=False, direct=False)
        if first is not None:
            started_at = _audio_message(first.headers, first.data).sent_at
            replay_of = (first.headers or {}).get(subjects.H_REPLAY, "")
        if last is not None:
            end = _audio_message(last.headers, last.data)
            audio_s = pcm_duration_s(end.offset + len(end.pcm))
            ended = ended or end.kind == "end"
    elif flushed is not None:
        audio_s = flushed.audio_s
    if started_at is None and finals:
        first_final = min(finals, key=lambda f: f.final_index)
        if first_final.published_at:
            started_at = first_final.published_at - first_final.end_s
    return SessionInfo(session_id, started_at, audio_s, audio_messages > 0, len(delivered(finals)), ended, replay_of)


async def list_sessions(js: JetStreamContext, since_s: float | None = None) -> list[SessionInfo]:
    """Every session with audio or results kept, oldest first; ``since_s``: started in the last N s."""
    audio = await _subject_counts(js, subjects.AUDIO_STREAM, "audio.*.*")
    results = await _subject_counts(js, subjects.RESULTS_STREAM, "results.*.*")
    per_session: dict[str, tuple[str, int]] = {}
    for subject, count in audio.items():
        per_session[subject.rsplit(".", 1)[-1]] = (subject, count)
    for subject in results:
        per_session.setdefault(subjects.session_of_result(subject), ("", 0))
    slots = asyncio.Semaphore(LIST_CONCURRENCY)

    async def info(session_id: str, subject: str, count: int) -> SessionInfo:
        async with slots:
            return await session_info(js, session_id, subject, count)

    infos = await asyncio.gather(*(info(sid, subject, n) for sid, (subject, n) in per_session.items()))
    cutoff = time.time() - since_s if since_s is not None else None
    rows = [i for i in infos if cutoff is None or (i.started_at is not None and i.started_at >= cutoff)]
    return sorted(rows, key=lambda i: (i.started_at or 0.0, i.session_id))


async def recorded_audio(js: JetStreamContext, session_id: str) -> list[AudioMessage]:
    """The session's complete recording, or the :class:`RecordingError` that says why there is none."""
    if not subjects.valid_session_id(session_id):
        raise UnknownSession(session_id)
    if not await recording_enabled(js):
        raise NotRecorded(session_id)
    messages = await read_audio(js, session_id)
    if not messages:
        results = await _subject_counts(js, subjects.RESULTS_STREAM, f"results.{session_id}.*")
        if results:
            raise AudioGone(session_id)
        raise UnknownSession(session_id)
    first = messages[0]
    if first.seq != 1 or first.offset != 0:
        raise AudioGone(session_id, missing_s=pcm_duration_s(first.offset))
    return messages


async def delete_session(js: JetStreamContext, session_id: str) -> tuple[int, int]:
    """Removes the session's audio and results; returns how many messages of each were removed."""
    if not subjects.valid_session_id(session_id):
        raise UnknownSession(session_id)
    audio = sum((await _subject_counts(js, subjects.AUDIO_STREAM, audio_filter(session_id))).values())
    results = sum((await _subject_counts(js, subjects.RESULTS_STREAM, f"results.{session_id}.*")).values())
    if not audio and not results:
        raise UnknownSession(session_id)
    if audio:
        await js.purge_stream(subjects.AUDIO_STREAM, subject=audio_filter(session_id))
    if results:
        await js.purge_stream(subjects.RESULTS_STREAM, subject=f"results.{session_id}.*")
    return audio, results


def valid_id(session_id: str) -> bool:
    """Session ids are subject tokens; anything else cannot name a recorded session."""
    return subjects.valid_session_id(session_id)


async def has_audio(js: JetStreamContext, session_id: str) -> bool:
    return bool(await _subject_counts(js, subjects.AUDIO_STREAM, audio_filter(session_id)))
