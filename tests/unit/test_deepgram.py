"""The Deepgram wire as a pure engine: query parsing, client frames, and the translation of native
server messages, checked against the official SDK's own models of Deepgram's messages."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from deepgram.listen.v1.types import (
    ListenV1Error,
    ListenV1Metadata,
    ListenV1Results,
    ListenV1SpeechStarted,
    ListenV1UtteranceEnd,
)

from common.settings import Settings
from ingest import deepgram as dg
from ingest import g711
from ingest import protocol as p
from ingest.auth import Gatekeeper
from ingest.edge_settings import EdgeSettings

SETTINGS = Settings()
BASE = {"encoding": "linear16", "sample_rate": "16000"}
SID = "3f2a9c0e8b7d4c1a9e6f5b4a3c2d1e0f"


def options(**query: str) -> dg.ListenOptions:
    return dg.parse_query({**BASE, **query}, EdgeSettings.from_settings(SETTINGS))


def wire(**query: str) -> dg.DeepgramWire:
    w = dg.DeepgramWire(options(**query), EdgeSettings.from_settings(SETTINGS))
    assert w.render(p.session_started(SID, "token", "edge-1", 16000)) == []
    return w


def audio(w: dg.DeepgramWire, seconds: float) -> bytes:
    pcm = b"\x01\x00" * int(16000 * seconds)
    assert w.parse(pcm, 1 << 30) == p.Audio(pcm)
    return pcm


def final(uid: str, text: str, start: float, end: float, seq: int = 1) -> dict[str, Any]:
    return p.transcript(is_final=True, seq=seq, utterance_id=uid, text=text, start_s=start, end_s=end)


def partial(uid: str, text: str, start: float, end: float) -> dict[str, Any]:
    return p.transcript(is_final=False, utterance_id=uid, text=text, start_s=start, end_s=end)


# --- query ------------------------------------------------------------------------------------


def test_defaults_are_deepgrams() -> None:
    o = options()
    assert o == dg.ListenOptions(sample_rate=16000)
    assert not o.interim_results and not o.vad_events and o.utterance_end_ms is None
    assert o.options_header() == ""


def test_honoured_options() -> None:
    o = options(sample_rate="44100", interim_results="true", vad_events="True", utterance_end_ms="1000",
                endpointing="300", channels="1", language="en-US", punctuate="true", smart_format="false",
                model="nova-3", tag="x", diarize="false")
    assert (o.sample_rate, o.interim_results, o.vad_events, o.utterance_end_ms, o.endpointing_ms) == (
        44100, True, True, 1000, 300)
    assert json.loads(o.options_header()) == {"endpointing_ms": 300}


@pytest.mark.parametrize(("value", "expected"), [
    ("10", dg.MIN_ENDPOINTING_MS), ("100", 100), ("800", 800), ("60000", dg.MAX_ENDPOINTING_MS),
    ("false", dg.MAX_ENDPOINTING_MS), ("true", None),
])
def test_endpointing_maps_onto_what_the_vad_accepts(value: str, expected: int | None) -> None:
    assert options(endpointing=value).endpointing_ms == expected


@pytest.mark.parametrize(("query", "words"), [
    ({"encoding": "opus"}, "encoding=linear16"),
    ({"encoding": "ulaw"}, "mulaw or alaw"),
    ({"encoding": ""}, "encoding=linear16"),
    ({"sample_rate": "4000"}, "sample_rate must be"),
    ({"sample_rate": "16k"}, "sample_rate must be"),
    ({"channels": "2"}, "channels must be 1"),
    ({"diarize": "true"}, "diarize=true is not supported"),
    ({"multichannel": "true"}, "multichannel=true is not supported"),
    ({"keywords": "hello:2"}, "Unsupported query parameter 'keywords'"),
    ({"callback": "https://example.com"}, "Unsupported query parameter 'callback'"),
    ({"interim_results": "yes"}, "interim_results must be true or false"),
    ({"endpointing": "soon"}, "endpointing must be"),
    ({"utterance_end_ms": "0"}, "utterance_end_ms must be a positive"),
    ({"language": "fr"}, "language=fr is not supported"),
])
def test_unsupported_options_are_refused_with_a_sentence(query: dict[str, str], words: str) -> None:
    with pytest.raises(dg.QueryError) as info:
        dg.parse_query({**BASE, **query}, EdgeSettings.from_settings(SETTINGS))
    assert words in info.value.message


def test_missing_encoding_is_refused() -> None:
    with pytest.raises(dg.QueryError, match="encoding is missing"):
        dg.parse_query({"sample_rate": "16000"}, EdgeSettings.from_settings(SETTINGS))
    with pytest.raises(dg.QueryError, match="sample_rate must be"):
        dg.parse_query({"encoding": "linear16"}, EdgeSettings.from_settings(SETTINGS))


def test_http_error_body_is_deepgrams() -> None:
    body = dg.http_error(400, "channels must be 1")
    assert body["err_code"] == "Bad Request" and body["err_msg"] == "channels must be 1"
    assert len(body["request_id"]) == 36
    assert dg.http_error(401, "Invalid API key")["err_code"] == "INVALID_AUTH"


@pytest.mark.parametrize(("headers", "query", "refused"), [
    ({"Authorization": "Token k-0123456789abcdef"}, {}, False),
    ({"Authorization": "token k-0123456789abcdef"}, {}, False),
    ({"Authorization": "Bearer k-0123456789abcdef"}, {}, False),
    ({"Authorization": "Token wrong"}, {}, True),
    ({"Sec-WebSocket-Protocol": "token, k-0123456789abcdef"}, {}, False),
    ({"Sec-WebSocket-Protocol": "token, wrong"}, {}, True),
    ({"Sec-WebSocket-Protocol": "k-0123456789abcdef"}, {}, True),
    ({}, {"token": "k-0123456789abcdef"}, False),
    ({}, {}, True),
])
def test_deepgram_clients_keys_are_accepted(headers: dict[str, str], query: dict[str, str], refused: bool) -> None:
    gate = Gatekeeper.from_settings(EdgeSettings.from_settings(Settings(), api_keys="k-0123456789abcdef"))
    assert (gate.check(headers, query) is not None) == refused


# --- client frames ----------------------------------------------------------------------------


def test_control_messages() -> None:
    w = wire()
    assert w.parse('{"type": "KeepAlive"}', 100) == p.KeepAlive()
    assert w.parse('{"type": "Finalize"}', 100) == p.Finalize()
    assert w.parse('{"type": "CloseStream"}', 100) == p.End()
    assert w.parse(b"", 100) == p.End()  # Deepgram's legacy close


@pytest.mark.parametrize(("text", "code"), [
    ("{nope", p.INVALID_MESSAGE), ('{"type": "finalize"}', p.INVALID_MESSAGE), ("[1]", p.INVALID_MESSAGE),
    ('{"type": "Configure", "keyterms": []}', p.INVALID_MESSAGE),
])
def test_bad_text_is_a_protocol_error(text: str, code: str) -> None:
    with pytest.raises(p.ProtocolError) as info:
        wire().parse(text, 100)
    assert info.value.code == code


def test_audio_cut_at_odd_bytes_is_joined_and_hashed() -> None:
    w = wire()
    assert w.parse(b"\x01", 100) == p.KeepAlive()  # nothing whole yet: the byte waits
    assert w.parse(b"\x02\x03", 100) == p.Audio(b"\x01\x02")
    assert w.parse(b"\x04\x05\x06\x07", 100) == p.Audio(b"\x03\x04\x05\x06")
    assert w.audio_bytes == 6
    with pytest.raises(p.ProtocolError) as info:
        w.parse(b"\0" * 101, 100)
    assert info.value.code == p.CHUNK_TOO_LARGE
    ended = w.render({"type": "session_ended", "metrics": {"audio_seconds": 0.0}})
    assert ended[-1]["sha256"] == hashlib.sha256(b"\x01\x02\x03\x04\x05\x06\x07").hexdigest()


@pytest.mark.parametrize(("encoding", "table"), [("mulaw", g711.MULAW), ("alaw", g711.ALAW)])
def test_g711_audio_is_decoded_one_sample_per_byte(encoding: str, table: g711.Table) -> None:
    w = wire(encoding=encoding, sample_rate="8000")
    assert w.options.encoding == encoding
    frame = bytes([0x00, 0x7F, 0x80, 0xFF, 0x55, 0xD5, 0x01])  # odd length: no byte waits
    assert w.parse(frame, 100) == p.Audio(table[list(frame)].astype("<i2").tobytes())
    assert w.audio_bytes == 14 and w.position_s == pytest.approx(7 / 8000)  # seconds of the client's audio
    with pytest.raises(p.ProtocolError) as info:  # the limit is on what the client sent, before decoding
        w.parse(b"\xff" * 101, 100)
    assert info.value.code == p.CHUNK_TOO_LARGE
    ended = w.render({"type": "session_ended", "metrics": {"audio_seconds": 0.0}})
    assert ended[-1]["sha256"] == hashlib.sha256(frame).hexdigest()  # of the bytes as sent


# --- server messages --------------------------------------------------------------------------


def test_final_results_shape_field_by_field() -> None:
    w = wire()
    [msg] = w.render(final("u1", "Please call me back.", 0.4, 2.16))
    ListenV1Results.model_validate(msg)  # the SDK's own model of Deepgram's Results
    assert msg == {
        "type": "Results",
        "channel_index": [0, 1],
        "duration": 1.76,
        "start": 0.4,
        "is_final": True,
        "speech_final": True,
        "channel": {"alternatives": [{"transcript": "Please call me back.", "confidence": 1.0, "words": []}]},
        "metadata": {
            "request_id": "3f2a9c0e-8b7d-4c1a-9e6f-5b4a3c2d1e0f",
            "model_info": {"name": SETTINGS.model, "version": "", "arch": "whisper"},
            "model_uuid": msg["metadata"]["model_uuid"],
        },
        "from_finalize": False,
    }


def test_word_timestamps_become_deepgram_words() -> None:
    message = final("u1", "Call me.", 0.4, 1.2)
    message["words"] = [{"word": " Call", "start_s": 0.4, "end_s": 0.7, "probability": 0.9},
                        {"word": " me.", "start_s": 0.7, "end_s": 1.1, "probability": 0.7}]
    [msg] = wire().render(message)
    ListenV1Results.model_validate(msg)
    alternative = msg["channel"]["alternatives"][0]
    assert alternative["words"] == [
        {"word": "call", "start": 0.4, "end": 0.7, "confidence": 0.9, "punctuated_word": "Call"},
        {"word": "me", "start": 0.7, "end": 1.1, "confidence": 0.7, "punctuated_word": "me."},
    ]
    assert alternative["confidence"] == 0.8


def test_partials_only_with_interim_results() -> None:
    assert wire().render(partial("u1", "please", 0.4, 1.0)) == []
    [msg] = wire(interim_results="true").render(partial("u1", "please", 0.4, 1.0))
    ListenV1Results.model_validate(msg)
    assert (msg["is_final"], msg["speech_final"], msg["from_finalize"]) == (False, False, False)
    assert msg["channel"]["alternatives"][0]["transcript"] == "please"
    assert (msg["start"], msg["duration"]) == (0.4, 0.6)


def test_finalize_flags_the_final_it_cut_and_nothing_else() -> None:
    w = wire()
    audio(w, 3.0)
    w.parse('{"type": "Finalize"}', 100)  # at 3.0 s, speaking: the VAD cuts at <= 3.0
    [first] = w.render(final("u1", "one", 0.5, 2.9))
    assert (first["from_finalize"], first["speech_final"], first["is_final"]) == (True, False, True)
    audio(w, 4.0)
    [second] = w.render(final("u2", "two", 3.5, 5.5, seq=2))  # ended on a pause
    assert (second["from_finalize"], second["speech_final"]) == (False, True)


def test_finalize_in_silence_flags_nothing() -> None:
    w = wire()
    audio(w, 2.0)
    [endpointed] = w.render(final("u1", "one", 0.3, 1.0))  # cut by the pause, long before
    audio(w, 2.0)
    w.parse('{"type": "Finalize"}', 100)  # at 4.0 s, in silence: no final comes of it
    assert endpointed["from_finalize"] is False
    audio(w, 3.0)
    [later] = w.render(final("u2", "two", 4.5, 6.0, seq=2))
    assert (later["from_finalize"], later["speech_final"]) == (False, True)


def test_endpointing_window_uses_the_longer_of_session_and_service() -> None:
    w = wire(endpointing="200")  # service default 500 ms: the VAD may still use it
    audio(w, 3.0)
    w.parse('{"type": "Finalize"}', 100)
    [msg] = w.render(final("u1", "one", 0.5, 2.6))  # 0.4 s before the Finalize
    assert msg["from_finalize"] is True


def test_closestream_flush_is_not_speech_final_and_metadata_is_last() -> None:
    w = wire(utterance_end_ms="1000")
    audio(w, 2.0)
    w.parse('{"type": "CloseStream"}', 100)
    assert w.render({"type": "utterance_end", "utterance_id": "u1", "end_s": 1.95}) == []
    [results, end] = w.render(final("u1", "one", 0.5, 1.95))
    assert (results["speech_final"], results["from_finalize"]) == (False, False)
    assert end == {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 1.95}
    metrics = {"audio_seconds": 2.0, "transcripts_sent": 1}
    [metadata] = w.render({"type": "session_ended", "metrics": metrics})
    ListenV1Metadata.model_validate(metadata)
    assert metadata["type"] == "Metadata" and metadata["transaction_key"] == "deprecated"
    assert metadata["request_id"] == "3f2a9c0e-8b7d-4c1a-9e6f-5b4a3c2d1e0f"
    assert (metadata["duration"], metadata["channels"]) == (2.0, 1)
    assert metadata["created"].endswith("Z") and len(metadata["sha256"]) == 64


def test_cut_at_max_length_is_not_speech_final() -> None:
    w = wire()
    audio(w, 31.0)
    [msg] = w.render(final("u1", "long", 0.0, SETTINGS.max_utterance_seconds))
    assert msg["speech_final"] is False


@pytest.mark.parametrize(
    ("reason", "speech_final"),
    [("endpoint", True), ("soft_length", False), ("max_length", False), ("end", False), ("finalize", False)],
)
def test_the_finals_reason_decides_speech_final(reason: str, speech_final: bool) -> None:
    """A voice agent answers on speech_final: an utterance cut while the speaker went on (the soft
    length, 10 s by default, cuts far shorter than max_utterance_seconds) must not say the turn ended."""
    w = wire()
    audio(w, 12.0)
    message = p.transcript(is_final=True, seq=1, utterance_id="u1", text="one", start_s=0.2, end_s=9.4,
                           reason=reason)
    [msg] = w.render(message)
    assert (msg["speech_final"], msg["from_finalize"]) == (speech_final, False)


def test_a_soft_length_cut_without_a_reason_was_taken_for_a_pause() -> None:
    """What the positions alone say (finals stored before ``reason``): the same cut reads as a pause."""
    w = wire()
    audio(w, 12.0)
    [msg] = w.render(final("u1", "one", 0.2, 9.4))
    assert msg["speech_final"] is True


def test_finalize_is_flagged_only_when_the_client_asked_for_it() -> None:
    w = wire()
    audio(w, 3.0)
    w.parse('{"type": "Finalize"}', 100)
    cut = p.transcript(is_final=True, seq=1, utterance_id="u1", text="one", start_s=0.5, end_s=2.9, reason="finalize")
    [first] = w.render(cut)
    assert (first["from_finalize"], first["speech_final"]) == (True, False)
    audio(w, 4.0)  # an edge draining its sessions cuts the open utterance the same way, unasked
    drained = p.transcript(is_final=True, seq=2, utterance_id="u2", text="two", start_s=3.5, end_s=6.9,
                           reason="finalize")
    [second] = w.render(drained)
    assert (second["from_finalize"], second["speech_final"]) == (False, False)


def test_a_finalize_that_found_the_utterance_ending_on_a_pause_flags_nothing() -> None:
    w = wire()
    audio(w, 3.0)
    w.parse('{"type": "Finalize"}', 100)  # the VAD had ended it on the pause just before
    ended = p.transcript(is_final=True, seq=1, utterance_id="u1", text="one", start_s=0.5, end_s=2.8,
                         reason="endpoint")
    [msg] = w.render(ended)
    assert (msg["from_finalize"], msg["speech_final"]) == (False, True)


def test_vad_events() -> None:
    started = {"type": "speech_started", "utterance_id": "u1", "start_s": 0.42}
    assert wire().render(started) == []
    [msg] = wire(vad_events="true").render(started)
    ListenV1SpeechStarted.model_validate(msg)
    assert msg == {"type": "SpeechStarted", "channel": [0, 1], "timestamp": 0.42}


def test_utterance_end_follows_its_final_and_never_overtakes_a_later_one() -> None:
    w = wire(utterance_end_ms="1000")
    assert wire().render({"type": "utterance_end", "utterance_id": "u1", "end_s": 2.0}) == []  # not asked for
    # The VAD is ahead of the recognizer: two utterances ended before the first final.
    assert w.render({"type": "utterance_end", "utterance_id": "u1", "end_s": 2.0}) == []
    assert w.render({"type": "utterance_end", "utterance_id": "u2", "end_s": 4.0}) == []
    assert w.render({"type": "utterance_end", "utterance_id": "u3", "end_s": 6.0}) == []
    first = w.render(final("u1", "one", 0.5, 2.0))
    assert [m["type"] for m in first] == ["Results", "UtteranceEnd"]
    ListenV1UtteranceEnd.model_validate(first[1])
    assert first[1]["last_word_end"] == 2.0
    # u2 had no text (no final): its UtteranceEnd goes before u3's final, u3's after it.
    third = w.render(final("u3", "three", 4.5, 6.0, seq=2))
    assert [(m["type"], m.get("last_word_end")) for m in third] == [
        ("UtteranceEnd", 4.0), ("Results", None), ("UtteranceEnd", 6.0)]


@pytest.mark.parametrize("reason", ["soft_length", "max_length"])
def test_no_utterance_end_where_the_speaker_did_not_pause(reason: str) -> None:
    """Deepgram sends UtteranceEnd after a gap following the last word; an utterance cut at the soft
    or the maximum length while the speaker went on has none, whichever of its final and its
    native utterance_end comes first."""
    w = wire(utterance_end_ms="1000")
    assert w.render({"type": "utterance_end", "utterance_id": "u1", "end_s": 9.5}) == []
    cut = p.transcript(is_final=True, seq=1, utterance_id="u1", text="one", start_s=0.2, end_s=9.5, reason=reason)
    assert [m["type"] for m in w.render(cut)] == ["Results"]
    cut2 = p.transcript(is_final=True, seq=2, utterance_id="u2", text="two", start_s=9.5, end_s=18.9, reason=reason)
    assert [m["type"] for m in w.render(cut2)] == ["Results"]
    assert w.render({"type": "utterance_end", "utterance_id": "u2", "end_s": 18.9}) == []  # came after its final
    paused = p.transcript(is_final=True, seq=3, utterance_id="u3", text="three", start_s=18.9, end_s=21.0,
                          reason="endpoint")
    assert w.render({"type": "utterance_end", "utterance_id": "u3", "end_s": 21.0}) == []
    assert [m["type"] for m in w.render(paused)] == ["Results", "UtteranceEnd"]


def test_errors_in_deepgrams_shape() -> None:
    w = wire(utterance_end_ms="1000")
    [bad] = w.render(p.error(p.INVALID_MESSAGE, "Message is not valid JSON"))
    ListenV1Error.model_validate(bad)
    assert bad == {"type": "Error", "variant": "SchemaError", "description": "Message is not valid JSON",
                   "code": p.INVALID_MESSAGE}
    w.render({"type": "utterance_end", "utterance_id": "u1", "end_s": 2.0})
    failed = p.error(p.TRANSCRIPTION_FAILED, "No transcript for this utterance")
    failed.update(utterance_id="u1", final_index=1)
    [error, end] = w.render(failed)
    assert (error["variant"], end["type"]) == (p.TRANSCRIPTION_FAILED, "UtteranceEnd")


def test_native_only_messages_are_suppressed() -> None:
    w = wire()
    assert w.render({"type": "session_recovered", "previous_session_id": SID}) == []
