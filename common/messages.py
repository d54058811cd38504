"""Bus messages: frozen msgspec Structs, one tagged union per subject family.

Audio itself never travels inside a Struct: ``audio.<shard>.<session>`` messages carry raw PCM
s16le 16 kHz mono as the payload and their metadata in NATS headers (see ``common.subjects``).
Control messages on the same subject (finalize, drain, end) have an empty payload, so the VAD
worker sees audio and control of one session in the order the edge received them.

Jobs and results are msgpack-encoded Structs. Times are session-relative seconds of audio
(``*_s``) or wall-clock UNIX seconds (``*_at``).
"""

from __future__ import annotations

from typing import Literal

import msgspec

DECODE_WINDOW_S = 29.5
"""A final job's context and utterance together stay inside Whisper's 30 s window (the context's
head goes), which also keeps the job under the bus's 1 MB message limit."""


class _Msg(msgspec.Struct, frozen=True, tag_field="type", forbid_unknown_fields=False):
    """Base: every bus message names its type in the ``type`` field."""


# --- jobs: vad_worker -> asr_worker ---------------------------------------------------------


class AsrJob(_Msg, frozen=True, tag="asr_job"):
    """A self-contained recognition job: the utterance audio so far and where it sits."""

    session_id: str
    utterance_id: str
    is_final: bool
    audio: bytes  # PCM s16le 16 kHz mono
    start_s: float  # utterance start, seconds of session audio
    end_s: float  # utterance end (or audio so far, for partials)
    final_index: int = 0  # 1-based index of this final among the session's finals; 0 for partials
    reason: str = ""  # why a final was cut: endpoint | soft_length | max_length | finalize | end
    created_at: float = 0.0  # wall clock when the VAD worker emitted the job
    speech_end_at: float = 0.0  # wall clock when the VAD worker saw the end of speech (finals)
    # Finals: the previous final's audio (its tail), heard as context; its words are not repeated.
    context_audio: bytes = b""
    # A partial job that is the next final decoded ahead of its endpoint (asr_worker.speculation):
    # final_index and context_audio are the final's; the worker decodes it like the final.
    speculative: bool = False
    # Finals, when `revise_finals` is on: the previous final's whole audio (its index is
    # final_index - 1). After publishing this final the worker decodes the two in one window and
    # publishes a `Revision` of the previous final if the words heard in it changed.
    previous_audio: bytes = b""


# --- results: asr_worker / vad_worker -> ingest ---------------------------------------------


class Word(msgspec.Struct, frozen=True):
    """One recognised word of a final (only when the `word_timestamps` setting is on)."""

    word: str
    start_s: float  # seconds of session audio
    end_s: float  # seconds of session audio
    probability: float  # the decoder's confidence in the word, 0..1


class Transcript(_Msg, frozen=True, tag="transcript"):
    """A partial or final transcript of one utterance.

    Finals are published for every final job, also when recognition produced nothing
    (``text == ""``): the edge orders finals by ``final_index`` and needs to see every index.
    """

    session_id: str
    utterance_id: str
    is_final: bool
    text: str
    start_s: float
    end_s: float
    final_index: int = 0
    context: str = ""  # recent session text after this final, the next final's prompt
    worker_id: str = ""
    inference_s: float = 0.0
    speech_end_at: float = 0.0
    published_at: float = 0.0  # wall clock when the ASR worker published it (stage latency)
    words: tuple[Word, ...] = ()  # finals with word_timestamps on: each word's times and confidence
    revising: bool = False  # finals: a `Revision` of final_index - 1 follows (changed or not)
    avg_logprob: float = 0.0  # finals: Recognition.avg_logprob, how sure the decoder was (gates revisions)
    # Finals: seconds of the previous final's audio decoded in front of this one's, because that final
    # had no words alone (asr_worker.revisions.carries_previous): ``text`` holds the words of both and
    # ``start_s`` is the previous final's start. Such a final is not revised (it would lose them).
    carried_s: float = 0.0
    # Finals: why the VAD cut the utterance (AsrJob.reason): endpoint | soft_length | max_length |
    # finalize | end; "" from a worker that predates the field.
    reason: str = ""


class Revision(_Msg, frozen=True, tag="revision"):
    """A final's text decoded again, once, with the audio of the final after it in the same
    window (a streaming final never hears what follows it; whole-file decoding does). Stored in
    RESULTS (``results.<session>.revision``, at most one per final), so finals read back from the
    stream carry it (`common.revised_finals`); live, the edge sends it like a partial (droppable).
    Published for every final announced with ``Transcript.revising``, with ``text`` "" when
    nothing changed (or the decode failed): an edge ending the session waits for it."""

    session_id: str
    utterance_id: str  # the revised final's
    final_index: int  # the revised final's
    text: str  # the new text, different in its words; "" when the final stays as it is
    start_s: float
    end_s: float
    published_at: float = 0.0
    words: tuple[Word, ...] = ()  # with word_timestamps on, as in the final


class SpeechStarted(_Msg, frozen=True, tag="speech_started"):
    session_id: str
    utterance_id: str
    start_s: float


class UtteranceEnd(_Msg, frozen=True, tag="utterance_end"):
    session_id: str
    utterance_id: str
    end_s: float


class SessionFlushed(_Msg, frozen=True, tag="session_flushed"):
    """The VAD worker has processed the session's ``end`` (``ended``) or a ``drain`` request
    (the open utterance was cut, the session goes on): ``finals_total`` finals exist so far."""

    session_id: str
    finals_total: int
    audio_s: float
    ended: bool = True


class TranscriptionFailed(_Msg, frozen=True, tag="transcription_failed"):
    """The terminal result of a final that could not be transcribed: its job failed every
    delivery (written by the ASR worker on the last try) or no transcript appeared within
    ``final_gap_timeout_seconds`` (written by the edge). Stored in RESULTS under the same
    de-duplication id as the transcript it replaces (``<session>.r<final_index>``), so for each
    final index exactly one of the two is kept and every edge releases the same thing."""

    session_id: str
    final_index: int
    code: str  # TRANSCRIPTION_FAILED
    message: str  # a sentence for the client
    utterance_id: str = ""  # empty when the edge declared it (it never saw the job)
    start_s: float = 0.0
    end_s: float = 0.0


class SessionError(_Msg, frozen=True, tag="session_error"):
    """A worker could not process the session's audio (sent to the client as ``error``)."""

    session_id: str
    code: str
    message: str


Result = Transcript | Revision | TranscriptionFailed | SpeechStarted | UtteranceEnd | SessionFlushed | SessionError
Final = Transcript | TranscriptionFailed
"""What RESULTS holds under ``results.<session>.final``: one of these per final index."""
StoredFinal = Final | Revision
"""What a session's finals read back from RESULTS are made of: the finals, and their revisions
(``results.<session>.revision``; `common.revised_finals` applies them)."""

# --- worker presence ------------------------------------------------------------------------


class WorkerHeartbeat(_Msg, frozen=True, tag="heartbeat"):
    role: str
    worker_id: str
    started_at: float
    sent_at: float


_encoder = msgspec.msgpack.Encoder()
job_decoder = msgspec.msgpack.Decoder(AsrJob)
result_decoder = msgspec.msgpack.Decoder(Result)
heartbeat_decoder = msgspec.msgpack.Decoder(WorkerHeartbeat)


def encode(msg: _Msg) -> bytes:
    return _encoder.encode(msg)


AudioKind = Literal["audio", "finalize", "drain", "end"]
