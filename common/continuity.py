"""Session continuity: the one durable record that lets any VAD worker carry a session on.

A session's VAD state (segmenter counters, time base, open utterance) lives in the memory of the
VAD worker that owns the session's audio shard. This module owns what survives that memory:
one ``VadCheckpoint`` per session in the KV bucket ``BUCKET`` (key = session id), kept as long as
the session's audio is (``audio_retention_seconds``), so that a new owner (after a crash, a restart,
a lease move, a shard loop restarted after an error, or an idle eviction) continues numbering and
time exactly where the old one stopped and re-reads the open utterance's audio from the AUDIO
stream.

Who may write it: ONLY the VAD worker that holds the session's shard lease (vad_worker.shards),
and only with compare-and-set on the revision it read or last wrote (``kv.create`` for a session it
has never seen, ``kv.update(last=revision)`` afterwards). A worker whose write is refused has been
fenced out: someone else carries the session on, and it must stop processing that shard. Nobody
else writes or deletes these keys; the bucket's TTL removes them after the retention.

When: after a batch's jobs and events are published, and before its audio is acknowledged. So a
crash loses at most work that the next owner redoes from the stream (re-emitted finals keep their
``Nats-Msg-Id`` ``<session>.f<index>`` and JetStream's dedupe drops them).

Why a NATS KV bucket (not Redis, not the RESULTS stream): the record must be written by the same
process, on the same bus, in the same order as the jobs it accounts for; Redis is optional in
this system, and RESULTS holds what the ASR side produced, not the VAD's position.

The bus timings this continuity depends on live in ``common.streams`` (VAD ack wait, dedupe
window) and ``vad_worker.shards`` (lease TTL and refresh).
"""

from __future__ import annotations

import logging

import msgspec
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from common.kv import ensure_bucket

log = logging.getLogger(__name__)

BUCKET = "vad_sessions"


class VadCheckpoint(msgspec.Struct, frozen=True, tag="vad_checkpoint", forbid_unknown_fields=False):
    """Where a session's VAD processing stands. Positions are samples of 16 kHz session audio."""

    finals: int = 0
    """Finals emitted so far: the next final is ``finals + 1``."""
    utterances: int = 0
    """utterance_index of the open utterance, or of the next one in silence."""
    last_seq: int = 0
    """Session seq (``Asr-Seq``) of the last audio/control message fully processed."""
    last_stream_seq: int = 0
    """AUDIO stream sequence of that message (where to read on from the stream)."""
    samples: int = 0
    """Samples processed: the session's time base."""
    resume_position: int = 0
    """Sample from which a new segmenter must be fed to rebuild the state: the first kept byte of
    the open utterance (pre-roll included), or in silence the oldest pre-roll candidate."""
    resume_stream_seq: int = 0
    """AUDIO stream sequence of the message holding ``resume_position``; 0: nothing to re-read."""
    in_speech: bool = False
    """An utterance was open (its audio is re-read from the stream on takeover)."""
    ended: bool = False
    """The session's ``end`` was processed: later (redelivered) audio is ignored."""
    read_from_stream_seq: int = 0
    """Messages past ``last_seq`` were held back behind a hole (stored out of seq order after a bus
    outage): the lowest AUDIO stream sequence a new owner must read from to find them all; 0: the
    session was in order (read on after ``last_stream_seq``)."""
    options: dict[str, int] = msgspec.field(default_factory=dict)
    """Per-session segmenter overrides (``Asr-Options`` header), e.g. ``{"endpointing_ms": 800}``."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(VadCheckpoint)


def encode(checkpoint: VadCheckpoint) -> bytes:
    return _encoder.encode(checkpoint)


def decode(data: bytes) -> VadCheckpoint:
    return _decoder.decode(data)


async def bucket(js: JetStreamContext, retention_s: float, replicas: int | None = None) -> KeyValue:
    """The checkpoint bucket; its TTL is the audio retention (a checkpoint is useless without the
    audio it points into); ``replicas``: settings.stream_replicas."""
    return await ensure_bucket(js, BUCKET, retention_s, replicas)
