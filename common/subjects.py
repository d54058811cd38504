"""Subject names, in one place: the data flow of the whole system reads top to bottom.

    ingest     -> audio.<shard>.<session>          stream AUDIO (limits, kept for replay)
    vad_worker -> jobs.final                       stream JOBS_FINAL (work queue)
    vad_worker -> jobs.partial.<session>           stream JOBS_PARTIAL (work queue, latest only)
    vad_worker -> jobs.speculative.<session>       stream JOBS_SPECULATIVE (work queue, latest only)
    vad_worker -> jobs.doorbell                    core NATS: jobs were stored (wakes idle ASR workers)
    asr_worker -> results.<session>.final          stream RESULTS (kept for resume and replay)
    asr_worker -> speculation.<session>.f<index>   core NATS: a speculative decode is stored (wakes its final)
    vad_worker -> results.<session>.flushed        stream RESULTS
    asr_worker -> results.<session>.partial        core NATS only (best effort)
    asr_worker -> results.<session>.revision       stream RESULTS (a final decoded again; common.revised_finals)
    vad_worker -> results.<session>.event          core NATS only (speech_started, utterance_end)
    ingest     -> sessions.<session>.takeover      core NATS: "<epoch> <connection>" resumed it
    workers    -> KV bucket asr_workers            heartbeats (key <role>.<worker_id>, TTL)
    vad_worker -> KV bucket vad_shards             shard leases (vad_worker.shards)
    vad_worker -> KV bucket vad_sessions           session checkpoints (common.continuity)
    asr_worker -> KV bucket asr_speculative        speculative decodes of finals (asr_worker.speculation)
"""

from __future__ import annotations

import re
import zlib

AUDIO_STREAM = "AUDIO"
JOBS_FINAL_STREAM = "JOBS_FINAL"
JOBS_PARTIAL_STREAM = "JOBS_PARTIAL"
JOBS_SPECULATIVE_STREAM = "JOBS_SPECULATIVE"
RESULTS_STREAM = "RESULTS"
WORKERS_BUCKET = "asr_workers"
SPECULATION_BUCKET = "asr_speculative"  # speculative decodes of finals (asr_worker.speculation)

FINAL_JOBS = "jobs.final"
JOBS_DOORBELL = "jobs.doorbell"  # no stream captures it (core NATS, empty payload)
FINAL_CONSUMER = "asr-final"
PARTIAL_CONSUMER = "asr-partial"
SPECULATIVE_CONSUMER = "asr-speculative"

# Headers of audio.* messages (payload = raw PCM s16le 16 kHz mono, or empty for control).
H_KIND = "Asr-Kind"  # audio | finalize | drain | end
H_SEQ = "Asr-Seq"  # per-session message sequence, from 1
H_SENT_AT = "Asr-Sent-At"  # wall clock (UNIX seconds) when the edge published it
H_OFFSET = "Asr-Offset"  # bytes of session audio (16 kHz PCM) before this chunk
H_OPTIONS = "Asr-Options"  # optional JSON object of per-session VAD overrides, e.g. {"endpointing_ms": 800}
H_MSG_ID = "Nats-Msg-Id"  # JetStream de-duplication id: <session>.<seq>
H_REPLAY = "Asr-Replay"  # on audio fed back by `asr replay`: the recorded session (or file:<name>) it replays

_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")


def valid_session_id(session_id: str) -> bool:
    """Session ids become subject tokens: letters, digits, '-' and '_' only."""
    return bool(_SESSION_ID.fullmatch(session_id))


def shard_of(session_id: str, shards: int) -> int:
    return zlib.crc32(session_id.encode()) % shards


def audio(session_id: str, shards: int) -> str:
    return f"audio.{shard_of(session_id, shards)}.{session_id}"


def audio_shard_filter(shard: int) -> str:
    return f"audio.{shard}.*"


def vad_consumer(shard: int) -> str:
    return f"vad-shard-{shard}"


def partial_job(session_id: str) -> str:
    return f"jobs.partial.{session_id}"


def speculative_job(session_id: str) -> str:
    return f"jobs.speculative.{session_id}"


def results(session_id: str) -> str:
    """Everything for one session: subscribe here to follow it live."""
    return f"results.{session_id}.*"


def result_final(session_id: str) -> str:
    return f"results.{session_id}.final"


def final_result_id(session_id: str, final_index: int) -> str:
    """De-duplication id of the one result stored for a final index (transcript or failure)."""
    return f"{session_id}.r{final_index}"


def revision_result_id(session_id: str, final_index: int) -> str:
    """De-duplication id of the one revision stored for a final index."""
    return f"{session_id}.v{final_index}"


def result_flushed(session_id: str) -> str:
    return f"results.{session_id}.flushed"


def result_partial(session_id: str) -> str:
    return f"results.{session_id}.partial"


def result_revision(session_id: str) -> str:
    """A final's ``Revision``, stored in RESULTS (``revision_result_id``)."""
    return f"results.{session_id}.revision"


def result_event(session_id: str) -> str:
    return f"results.{session_id}.event"


def speculation_stored(key: str) -> str:
    """Core NATS, empty payload: the speculation ``key`` (``<session>.f<index>``) is decided."""
    return f"speculation.{key}"


def takeover(session_id: str) -> str:
    """Core NATS: a connection that resumed the session announces itself; older ones close."""
    return f"sessions.{session_id}.takeover"


def session_of_result(subject: str) -> str:
    return subject.split(".")[1]
