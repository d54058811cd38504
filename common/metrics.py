"""Every Prometheus metric of every role, declared in one place.

Each role is its own process, so each exports only the metrics it moves; names say the stage.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0)
E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
PAUSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)

# --- every role ---------------------------------------------------------------------------
GC_PAUSE = Histogram("asr_gc_pause_seconds", "Python garbage collections: how long each stopped the process",
                     ["generation"], buckets=PAUSE_BUCKETS)

# --- edge ---------------------------------------------------------------------------------
SESSIONS_TOTAL = Counter("asr_sessions_total", "Sessions admitted by this edge")
SESSIONS_REJECTED = Counter("asr_sessions_rejected_total", "Sessions refused", ["reason"])
SESSIONS_RESUMED = Counter("asr_sessions_resumed_total", "Reconnect attempts", ["outcome"])
ORPHANS_RELEASED = Counter("asr_orphan_sessions_released_total", "Sessions of dead edges released")
ACTIVE_SESSIONS = Gauge("asr_active_sessions", "Sessions open on this edge")
MAX_SESSIONS = Gauge("asr_max_sessions", "Sessions the cluster admits (max_global_sessions; one edge: its cap)")
MAX_SESSIONS_PER_EDGE = Gauge("asr_max_sessions_per_edge", "Sessions this edge admits (max_sessions_per_worker)")
CHUNKS_RECEIVED = Counter("asr_chunks_received_total", "Audio chunks accepted from clients")
BYTES_RECEIVED = Counter("asr_bytes_received_total", "Audio bytes accepted from clients (as sent)")
AUDIO_MESSAGES_PUBLISHED = Counter(
    "asr_audio_messages_published_total",
    "Audio messages the edge published to JetStream (client chunks shorter than audio_batch_ms joined)",
)
CLIENT_ERRORS = Counter("asr_client_errors_total", "Error messages sent to clients", ["code"])
MESSAGES_SENT = Counter("asr_messages_sent_total", "Messages sent to clients", ["type"])
MESSAGES_DROPPED = Counter("asr_messages_dropped_total", "Messages dropped for a full send queue", ["type"])
RATE_LIMITED = Counter("asr_rate_limited_total", "Clients told RATE_LIMITED for flooding audio")
THROTTLED_SECONDS = Counter("asr_throttled_seconds_total", "Time clients' sockets were not read (backpressure)")
SLOW_CLIENT_CLOSES = Counter("asr_slow_client_closes_total", "Clients closed with 1008 (too slow)")
REQUEST_LATENCY = Histogram(
    "asr_request_latency_seconds", "Edge handling time of one client message", buckets=LATENCY_BUCKETS
)
BUS_OUTAGES = Counter(
    "asr_bus_outages_total", "Times a session's audio was not acknowledged in time and was published again"
)
FINALS_FAILED = Counter(
    "asr_finals_failed_total", "Finals that reached the client as TRANSCRIPTION_FAILED, by who declared them",
    ["source"],
)
CAPTION_VIEWERS = Gauge("asr_caption_viewers", "Read-only caption viewers connected to this edge")
EDGE_DRAINING = Gauge("asr_edge_draining", "1 while this edge drains (SIGTERM): no new sessions")
STAGE_ASR_TO_EDGE = Histogram(
    "asr_stage_asr_to_edge_seconds", "ASR worker publishing a transcript to the edge receiving it",
    buckets=LATENCY_BUCKETS,
)
FINAL_LATENCY = Histogram(
    "asr_final_latency_seconds",
    "End of speech (seen by the VAD worker) to the final leaving the edge",
    buckets=E2E_BUCKETS,
)

# --- VAD worker -----------------------------------------------------------------------------
VAD_FRAMES = Counter("asr_vad_frames_total", "Frames classified by webrtcvad")
VAD_SECONDS = Histogram("asr_vad_batch_seconds", "Thread time of one VAD batch", buckets=LATENCY_BUCKETS)
VAD_SESSIONS = Gauge("asr_vad_sessions", "Sessions with VAD state in this worker")
VAD_SHARDS = Gauge("asr_vad_shards_owned", "Audio shards this VAD worker owns")
VAD_JOBS = Counter("asr_vad_jobs_total", "ASR jobs published", ["kind"])
VAD_BATCH_SIZE = Histogram(
    "asr_vad_batch_size", "Audio messages fetched per VAD batch", buckets=(1, 2, 5, 10, 20, 50, 100, 200, 512)
)
VAD_AUDIO_SECONDS = Counter("asr_vad_audio_seconds_total", "Seconds of audio run through VAD")
VAD_OVERFLOW_BYTES = Counter(
    "asr_vad_overflow_bytes_total", "Oldest utterance audio dropped at vad_max_buffer_bytes"
)
PENDING_EVERY_S = 10.0
"""How often the workers read the queue gauges below from nats-server (each read is a request per
consumer): often enough for dashboards, alerts and autoscaling, which look every 15 s or more."""
VAD_PENDING = Gauge("asr_vad_consumer_pending", "Audio messages waiting or unacknowledged on owned shards")
VAD_STAGE_LATENCY = Histogram(
    "asr_stage_edge_to_vad_seconds", "Edge publish to VAD processing", buckets=LATENCY_BUCKETS
)

# --- ASR worker -----------------------------------------------------------------------------
ASR_JOBS = Counter("asr_jobs_total", "ASR jobs handled", ["kind", "outcome"])
ASR_INFERENCE = Histogram(
    "asr_inference_seconds", "Model time of one job", ["kind"], buckets=E2E_BUCKETS
)
ASR_RTF = Histogram(
    "asr_real_time_factor", "Inference seconds per second of audio", ["kind"],
    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
)
ASR_QUEUE_WAIT = Histogram(
    "asr_stage_vad_to_asr_seconds", "Job creation to the start of inference", ["kind"],
    buckets=E2E_BUCKETS,
)
ASR_SPECULATION = Counter(
    "asr_speculative_finals_total",
    "Finals by what their speculative decode gave: used, waited (used after waiting), timeout, none",
    ["outcome"],
)
ASR_BUSY = Gauge("asr_worker_busy_slots", "Jobs running in this ASR worker")
ASR_REVISIONS_QUEUED = Gauge("asr_worker_revisions_queued",
                             "Revisions waiting in this ASR worker for a slot that no final wants")
ASR_BATCH_SIZE = Histogram(
    "asr_batch_size", "Jobs per model call (CPU workers run one job per call)", buckets=(1, 2, 4, 8, 16, 32)
)
ASR_AUDIO_SECONDS = Counter(
    "asr_audio_seconds_total", "Seconds of audio transcribed (finals: also those taken from a speculative decode)",
    ["kind"],
)
ASR_PENDING = Gauge("asr_jobs_pending", "Jobs waiting in the queue (consumer pending)", ["kind"])

# --- JetStream storage (sampled by the ASR workers) -------------------------------------------
STREAM_BYTES = Gauge("asr_stream_bytes", "Bytes a JetStream stream holds (AUDIO, RESULTS)", ["stream"])
STREAM_MAX_BYTES = Gauge(
    "asr_stream_max_bytes", "Size cap of the stream (audio_max_bytes, results_max_bytes); 0: no cap", ["stream"]
)
