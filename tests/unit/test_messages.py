"""common.messages (bus Structs and their decoders) and common.subjects (names and shards)."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest

from common import subjects
from common.messages import (
    AsrJob,
    SessionError,
    SessionFlushed,
    SpeechStarted,
    Transcript,
    UtteranceEnd,
    WorkerHeartbeat,
    encode,
    heartbeat_decoder,
    job_decoder,
    result_decoder,
)

SID = "0123456789abcdef0123456789abcdef"

JOB = AsrJob(
    session_id=SID, utterance_id="u3", is_final=True, audio=b"\x01\x00\xff\x7f" * 100, start_s=1.5,
    end_s=4.25, final_index=3, reason="endpoint", created_at=1_700_000_000.5, speech_end_at=1_700_000_000.25,
)
PARTIAL_JOB = AsrJob(session_id=SID, utterance_id="u4", is_final=False, audio=b"", start_s=5.0, end_s=5.5)
RESULTS: list[Any] = [
    Transcript(
        session_id=SID, utterance_id="u3", is_final=True, text="hello world", start_s=1.5, end_s=4.25,
        final_index=3, context="earlier. hello world", worker_id="asr-1", inference_s=0.125,
        speech_end_at=1_700_000_000.25,
    ),
    Transcript(session_id=SID, utterance_id="u4", is_final=False, text="", start_s=5.0, end_s=5.5),
    SpeechStarted(session_id=SID, utterance_id="u4", start_s=5.0),
    UtteranceEnd(session_id=SID, utterance_id="u4", end_s=6.0),
    SessionFlushed(session_id=SID, finals_total=4, audio_s=12.5),
    SessionError(session_id=SID, code="INVALID_AUDIO", message="bad audio"),
]
HEARTBEAT = WorkerHeartbeat(role="asr", worker_id="asr-1", started_at=1_700_000_000.0, sent_at=1_700_000_010.0)


@pytest.mark.parametrize("job", [JOB, PARTIAL_JOB])
def test_job_round_trips(job: AsrJob) -> None:
    decoded = job_decoder.decode(encode(job))
    assert decoded == job
    assert type(decoded) is AsrJob


@pytest.mark.parametrize("result", RESULTS, ids=lambda r: type(r).__name__)
def test_result_round_trips_to_its_own_class(result: Any) -> None:
    decoded = result_decoder.decode(encode(result))
    assert decoded == result
    assert type(decoded) is type(result)


def test_heartbeat_round_trips() -> None:
    decoded = heartbeat_decoder.decode(encode(HEARTBEAT))
    assert decoded == HEARTBEAT
    assert type(decoded) is WorkerHeartbeat


@pytest.mark.parametrize(
    ("msg", "tag"),
    [
        (JOB, "asr_job"),
        (RESULTS[0], "transcript"),
        (RESULTS[2], "speech_started"),
        (RESULTS[3], "utterance_end"),
        (RESULTS[4], "session_flushed"),
        (RESULTS[5], "session_error"),
        (HEARTBEAT, "heartbeat"),
    ],
)
def test_wire_form_names_its_type(msg: Any, tag: str) -> None:
    assert msgspec.msgpack.decode(encode(msg))["type"] == tag


def test_tag_picks_the_class_from_a_plain_map() -> None:
    raw = msgspec.msgpack.encode({"type": "utterance_end", "session_id": SID, "utterance_id": "u1", "end_s": 2.0})
    assert result_decoder.decode(raw) == UtteranceEnd(session_id=SID, utterance_id="u1", end_s=2.0)


@pytest.mark.parametrize(
    ("decoder", "msg"),
    [(job_decoder, RESULTS[0]), (result_decoder, JOB), (result_decoder, HEARTBEAT), (heartbeat_decoder, JOB)],
)
def test_decoder_rejects_another_family(decoder: msgspec.msgpack.Decoder[Any], msg: Any) -> None:
    with pytest.raises(msgspec.ValidationError):
        decoder.decode(encode(msg))


@pytest.mark.parametrize("msg", [JOB, *RESULTS, HEARTBEAT], ids=lambda m: type(m).__name__)
def test_structs_are_frozen(msg: Any) -> None:
    with pytest.raises(AttributeError):
        msg.session_id = "other"  # heartbeats have no session_id: still refused
    with pytest.raises(AttributeError):
        msg.type = "other"


@pytest.mark.parametrize("decoder", [job_decoder, result_decoder, heartbeat_decoder])
@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\xc1",  # a msgpack byte that is never used
        b"not msgpack at all",
        b"\x92\x01",  # an array announcing 2 items with only one
        msgspec.msgpack.encode([1, 2, 3]),
        msgspec.msgpack.encode({"type": "no_such_type"}),
        msgspec.msgpack.encode({"type": "transcript"}),  # required fields missing
        msgspec.msgpack.encode({"session_id": SID}),  # no tag
    ],
)
def test_garbage_raises_decode_error(decoder: msgspec.msgpack.Decoder[Any], garbage: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        decoder.decode(garbage)


def test_wrong_field_type_raises_decode_error() -> None:
    raw = msgspec.msgpack.encode({"type": "session_flushed", "session_id": SID, "finals_total": "4", "audio_s": 1.0})
    with pytest.raises(msgspec.DecodeError):
        result_decoder.decode(raw)


def _as_map(msg: Any) -> dict[str, Any]:
    decoded: dict[str, Any] = msgspec.msgpack.decode(encode(msg))
    return decoded


def test_unknown_fields_are_tolerated() -> None:
    """A newer worker may add fields; an older edge still decodes what it knows."""
    job = _as_map(JOB) | {"priority": 7, "trace": {"id": "x"}}
    assert job_decoder.decode(msgspec.msgpack.encode(job)) == JOB
    result = _as_map(RESULTS[0]) | {"speakers": [{"id": "s1", "p": 0.9}]}
    assert result_decoder.decode(msgspec.msgpack.encode(result)) == RESULTS[0]
    heartbeat = _as_map(HEARTBEAT) | {"gpu": "H100"}
    assert heartbeat_decoder.decode(msgspec.msgpack.encode(heartbeat)) == HEARTBEAT


def test_optional_fields_default_when_absent() -> None:
    raw = msgspec.msgpack.encode(
        {"type": "transcript", "session_id": SID, "utterance_id": "u1", "is_final": True, "text": "hi",
         "start_s": 0.0, "end_s": 1.0}
    )
    decoded = result_decoder.decode(raw)
    assert isinstance(decoded, Transcript)
    assert (decoded.final_index, decoded.context, decoded.worker_id, decoded.inference_s) == (0, "", "", 0.0)


# --- subjects ---------------------------------------------------------------------------------


def test_shard_of_is_stable_across_processes_and_versions() -> None:
    # crc32, not hash(): every edge and VAD worker must agree, whatever PYTHONHASHSEED says.
    assert subjects.shard_of("session-0001", 16) == 1
    assert subjects.shard_of("session-0001", 256) == 97
    assert subjects.shard_of(SID, 16) == 14


@pytest.mark.parametrize("shards", [1, 2, 16, 256, 1024])
def test_shard_of_is_within_range_and_deterministic(shards: int) -> None:
    for _ in range(200):
        sid = uuid.uuid4().hex
        shard = subjects.shard_of(sid, shards)
        assert 0 <= shard < shards
        assert subjects.shard_of(sid, shards) == shard


def test_shard_of_spreads_sessions() -> None:
    hit = {subjects.shard_of(uuid.uuid4().hex, 16) for _ in range(1000)}
    assert hit == set(range(16))


# Fixed ids of both uuid4 forms (what the edge and the clients make): parametrized ids must be the
# same in every collection, or pytest-xdist's workers disagree on the tests.
@pytest.mark.parametrize("sid", ["24a6bcc6065c496a92280009fe23e2f1", "0385ea30-b19c-48b2-8fed-d311b92ea2da",
                                 "abcdefgh", "A_b-9" * 12, "x" * 64])
def test_valid_session_id_accepts(sid: str) -> None:
    assert subjects.valid_session_id(sid)


@pytest.mark.parametrize(
    "sid",
    ["", "a.b", "abcdefgh.ijkl", "*", ">", "abcdefgh*", "abcdefgh>", "abcd efgh", "abcdefg", "x" * 65,
     "abcdefgh\n", "sessión-1"],
)
def test_valid_session_id_rejects(sid: str) -> None:
    assert not subjects.valid_session_id(sid)


def test_subject_builders() -> None:
    shard = subjects.shard_of(SID, 16)
    assert subjects.audio(SID, 16) == f"audio.{shard}.{SID}"
    assert subjects.audio_shard_filter(3) == "audio.3.*"
    assert subjects.vad_consumer(3) == "vad-shard-3"
    assert subjects.partial_job(SID) == f"jobs.partial.{SID}"
    assert subjects.results(SID) == f"results.{SID}.*"
    assert subjects.result_final(SID) == f"results.{SID}.final"
    assert subjects.result_flushed(SID) == f"results.{SID}.flushed"
    assert subjects.result_partial(SID) == f"results.{SID}.partial"
    assert subjects.result_event(SID) == f"results.{SID}.event"


@pytest.mark.parametrize(
    "subject",
    [subjects.result_final(SID), subjects.result_flushed(SID), subjects.result_partial(SID),
     subjects.result_event(SID)],
)
def test_session_of_result_inverts_the_builders(subject: str) -> None:
    assert subjects.session_of_result(subject) == SID
