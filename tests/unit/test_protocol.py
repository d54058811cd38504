"""ingest.protocol: every client message, every bad input's error code, the server messages."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
import pytest

from ingest import protocol as p

LIMIT = 65536


def _text(obj: Any) -> str:
    return json.dumps(obj)


def _error(raw: str | bytes, limit: int = LIMIT) -> p.ProtocolError:
    with pytest.raises(p.ProtocolError) as info:
        if isinstance(raw, bytes):
            p.parse_binary(raw, limit)
        else:
            p.parse_text(raw, limit)
    return info.value


def _b64(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode()


# --- good messages ----------------------------------------------------------------------------


def test_binary_frame_is_audio() -> None:
    assert p.parse_binary(b"\x01\x00\xff\x7f", LIMIT) == p.Audio(b"\x01\x00\xff\x7f")


def test_json_audio_is_decoded() -> None:
    pcm = bytes(range(256)) * 4
    assert p.parse_text(_text({"type": "audio", "data": _b64(pcm)}), LIMIT) == p.Audio(pcm)


@pytest.mark.parametrize(
    ("obj", "command"),
    [
        ({"type": "finalize"}, p.Finalize()),
        ({"type": "end"}, p.End()),
        ({"type": "keepalive"}, p.KeepAlive()),
        ({"type": "keepalive", "extra": [1, 2]}, p.KeepAlive()),  # extra fields are ignored
        (
            {"type": "reconnect", "previous_session_id": "abc12345", "resume_token": "tok", "last_seq": 42},
            p.Reconnect("abc12345", "tok", 42),
        ),
        (
            {"type": "reconnect", "previous_session_id": "abc12345", "resume_token": "tok"},
            p.Reconnect("abc12345", "tok", 0),
        ),
    ],
)
def test_control_messages(obj: dict[str, Any], command: p.Command) -> None:
    assert p.parse_text(_text(obj), LIMIT) == command


# --- bad messages -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["", "{", "not json", "{'type': 'end'}", '{"type": "end"} trailing', "\x00", '{"type": "end",}'],
)
def test_invalid_json(raw: str) -> None:
    err = _error(raw)
    assert (err.code, err.message) == (p.INVALID_MESSAGE, "Message is not valid JSON")


@pytest.mark.parametrize("raw", ["[]", '[{"type": "end"}]', "42", "1.5", '"end"', "null", "true"])
def test_json_that_is_not_an_object(raw: str) -> None:
    err = _error(raw)
    assert err.code == p.INVALID_MESSAGE
    assert '"type"' in err.message


@pytest.mark.parametrize("obj", [{}, {"data": "AAAA"}, {"type": None}, {"type": 1}, {"type": ["audio"]}, {"type": {}}])
def test_missing_or_non_string_type(obj: dict[str, Any]) -> None:
    err = _error(_text(obj))
    assert err.code == p.INVALID_MESSAGE
    assert "string" in err.message


@pytest.mark.parametrize("kind", ["", "Audio", "start", "audio ", "session_started"])
def test_unknown_type_lists_the_known_ones(kind: str) -> None:
    err = _error(_text({"type": kind}))
    assert err.code == p.INVALID_MESSAGE
    assert repr(kind) in err.message
    for known in ("audio", "finalize", "end", "keepalive", "reconnect"):
        assert known in err.message


def test_huge_unknown_type_is_truncated_in_the_message() -> None:
    kind = "x" * 10_000
    err = _error(_text({"type": kind}))
    assert err.code == p.INVALID_MESSAGE
    assert len(err.message) < 200
    assert "x" * 40 + "…" in err.message
    assert "x" * 41 not in err.message


def test_deeply_nested_json_is_an_invalid_message() -> None:
    # 2 kB of "[" is far below the frame cap; the parser must answer with a ProtocolError
    # (the connection stays usable), not let a RecursionError end the session.
    err = _error("[" * 2000 + "]" * 2000)
    assert err.code == p.INVALID_MESSAGE


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "audio"},
        {"type": "audio", "data": None},
        {"type": "audio", "data": 12},
        {"type": "audio", "data": [1, 2]},
        {"type": "audio", "pcm": "AAAA"},
    ],
)
def test_audio_without_string_data(obj: dict[str, Any]) -> None:
    err = _error(_text(obj))
    assert err.code == p.INVALID_AUDIO
    assert "base64" in err.message


@pytest.mark.parametrize("data", ["!!!!", "AAA", "AA=A", "AAAA AAAA", "AAAA\n", "üüüü", "A" * 5, "-_-_"])
def test_invalid_base64(data: str) -> None:
    err = _error(_text({"type": "audio", "data": data}))
    assert (err.code, err.message) == (p.INVALID_AUDIO, "Audio data is not valid base64")


@pytest.mark.parametrize("pcm", [b"\x01", b"\x01\x02\x03", b"\x00" * 321])
def test_odd_byte_count_binary(pcm: bytes) -> None:
    err = _error(pcm)
    assert err.code == p.INVALID_AUDIO
    assert f"{len(pcm)} bytes" in err.message
    assert "odd" in err.message


@pytest.mark.parametrize("pcm", [b"\x01", b"\x01\x02\x03", b"\x00" * 321])
def test_odd_byte_count_base64(pcm: bytes) -> None:
    err = _error(_text({"type": "audio", "data": _b64(pcm)}))
    assert err.code == p.INVALID_AUDIO
    assert "odd" in err.message


def test_empty_audio() -> None:
    assert _error(b"").code == p.INVALID_AUDIO
    assert _error(_text({"type": "audio", "data": ""})).code == p.INVALID_AUDIO


@pytest.mark.parametrize("size", [LIMIT + 2, LIMIT * 16])
def test_oversize_binary(size: int) -> None:
    err = _error(b"\x00" * size)
    assert err.code == p.CHUNK_TOO_LARGE
    assert str(size) in err.message
    assert str(LIMIT) in err.message


def test_oversize_check_comes_before_the_odd_check() -> None:
    assert _error(b"\x00" * (LIMIT + 1)).code == p.CHUNK_TOO_LARGE


@pytest.mark.parametrize("size", [LIMIT + 2, LIMIT + 6, LIMIT * 2])
def test_oversize_base64(size: int) -> None:
    err = _error(_text({"type": "audio", "data": _b64(b"\x00" * size)}))
    assert err.code == p.CHUNK_TOO_LARGE
    assert str(LIMIT) in err.message


def test_oversize_base64_is_refused_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("base64 was decoded")

    monkeypatch.setattr("ingest.protocol.base64.b64decode", no_decoding)
    with pytest.raises(AssertionError):  # the patch is the one parse_text uses
        p.parse_text(_text({"type": "audio", "data": "AAAA"}), LIMIT)
    huge = "A" * 10_000_000
    err = _error(_text({"type": "audio", "data": huge}))
    assert err.code == p.CHUNK_TOO_LARGE


@pytest.mark.parametrize("limit", [LIMIT, 320, 321, 322, 1000])
def test_base64_exactly_at_the_limit_passes(limit: int) -> None:
    pcm = b"\x01\x00" * (limit // 2)
    assert len(pcm) in (limit, limit - 1)
    assert p.parse_text(_text({"type": "audio", "data": _b64(pcm)}), limit) == p.Audio(pcm)
    assert p.parse_binary(pcm, limit) == p.Audio(pcm)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"resume_token": "tok"}, "previous_session_id"),
        ({"previous_session_id": "abc12345"}, "resume_token"),
        ({"previous_session_id": 5, "resume_token": "tok"}, "previous_session_id"),
        ({"previous_session_id": "abc12345", "resume_token": None}, "resume_token"),
        ({"previous_session_id": "abc12345", "resume_token": "tok", "last_seq": True}, "last_seq"),
        ({"previous_session_id": "abc12345", "resume_token": "tok", "last_seq": False}, "last_seq"),
        ({"previous_session_id": "abc12345", "resume_token": "tok", "last_seq": -1}, "last_seq"),
        ({"previous_session_id": "abc12345", "resume_token": "tok", "last_seq": 1.5}, "last_seq"),
        ({"previous_session_id": "abc12345", "resume_token": "tok", "last_seq": "3"}, "last_seq"),
        ({"previous_session_id": "abc12345", "resume_token": "tok", "last_seq": None}, "last_seq"),
    ],
)
def test_bad_reconnect(fields: dict[str, Any], fragment: str) -> None:
    err = _error(_text({"type": "reconnect", **fields}))
    assert err.code == p.INVALID_MESSAGE
    assert fragment in err.message


def test_protocol_error_carries_code_and_message() -> None:
    err = p.ProtocolError(p.INVALID_AUDIO, "Empty audio chunk")
    assert (err.code, err.message, str(err)) == (p.INVALID_AUDIO, "Empty audio chunk", "Empty audio chunk")


# --- server messages --------------------------------------------------------------------------


def test_error_message() -> None:
    msg = p.error(p.CHUNK_TOO_LARGE, "too big")
    assert msg == {"type": "error", "code": "CHUNK_TOO_LARGE", "message": "too big"}


def test_error_codes_are_the_documented_ones() -> None:
    codes = {p.CHUNK_TOO_LARGE, p.INVALID_AUDIO, p.INVALID_MESSAGE, p.CAPACITY, p.UNAUTHORIZED,
             p.RATE_LIMITED, p.RESUME_FAILED, p.INTERNAL}
    assert codes == {"CHUNK_TOO_LARGE", "INVALID_AUDIO", "INVALID_MESSAGE", "CAPACITY", "UNAUTHORIZED",
                     "RATE_LIMITED", "RESUME_FAILED", "INTERNAL"}


def test_close_codes_are_the_documented_ones() -> None:
    assert (p.CLOSE_NORMAL, p.CLOSE_TOO_SLOW, p.CLOSE_TOO_BIG, p.CLOSE_INTERNAL, p.CLOSE_DRAINING,
            p.CLOSE_CAPACITY) == (1000, 1008, 1009, 1011, 1012, 1013)


def test_session_started_message() -> None:
    msg = p.session_started("sid12345", "tok", "edge-1", 16000)
    assert list(msg) == ["type", "session_id", "resume_token", "worker_id", "sample_rate"]
    assert msg == {"type": "session_started", "session_id": "sid12345", "resume_token": "tok",
                   "worker_id": "edge-1", "sample_rate": 16000}


def test_partial_transcript_message_has_no_seq() -> None:
    msg = p.transcript(is_final=False, utterance_id="u1", text="hel", start_s=1.23456, end_s=2.0)
    assert list(msg) == ["type", "is_final", "utterance_id", "text", "start_s", "end_s"]
    assert msg == {"type": "transcript", "is_final": False, "utterance_id": "u1", "text": "hel",
                   "start_s": 1.235, "end_s": 2.0}


def test_final_transcript_message_has_seq() -> None:
    msg = p.transcript(is_final=True, utterance_id="u1", text="hello.", start_s=1.0, end_s=2.98765, seq=3)
    assert list(msg) == ["type", "is_final", "seq", "utterance_id", "text", "start_s", "end_s"]
    assert (msg["seq"], msg["end_s"]) == (3, 2.988)


@pytest.mark.parametrize(
    "msg",
    [
        p.error(p.INTERNAL, "x"),
        p.session_started("sid12345", "tok", "edge-1", 16000),
        p.transcript(is_final=True, utterance_id="u1", text="é ✓", start_s=0.0, end_s=1.0, seq=1),
    ],
)
def test_server_messages_are_json(msg: dict[str, Any]) -> None:
    assert json.loads(msgspec.json.encode(msg)) == msg
