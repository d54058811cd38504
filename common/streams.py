"""Idempotent JetStream setup: every role calls ``ensure_streams`` at startup.

Creating a stream or consumer that exists with the same config is a no-op; one that exists with
another config (an operator changed a retention setting) is updated in place. A cluster that is
still forming (or has a node down) answers "no suitable peers", "JetStream not available" or not
at all for a while: that is waited out, up to ``bus_outage_timeout_seconds``, instead of failing
the role on its first call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import (
    APIError,
    BadRequestError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)

from common import presence, subjects
from common.bus_settings import BusSettings
from common.bus_timing import TIMING
from common.kv import ensure_bucket

log = logging.getLogger(__name__)
T = TypeVar("T")

# Ack waits, tries and the dedupe window: common.bus_timing (TIMING), with why each is what it is.


def stream_configs(settings: BusSettings) -> list[StreamConfig]:
    configs = [
        StreamConfig(
            name=subjects.AUDIO_STREAM,
            subjects=["audio.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=float(settings.audio_retention_seconds),
            discard=DiscardPolicy.OLD,
            max_bytes=settings.audio_max_bytes or -1,  # full: the oldest audio goes, new audio is kept
            duplicate_window=min(TIMING.dedupe_window_s, float(settings.audio_retention_seconds)),  # <= max age
            num_replicas=settings.stream_replicas,
        ),
        StreamConfig(
            name=subjects.JOBS_FINAL_STREAM,
            subjects=[subjects.FINAL_JOBS],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            max_age=3600.0,
            duplicate_window=TIMING.dedupe_window_s,
            num_replicas=settings.stream_replicas,
        ),
        # Latest only: a newer partial of a session replaces the one still waiting.
        _best_effort_jobs(subjects.JOBS_PARTIAL_STREAM, "jobs.partial.*", settings),
        # A final decoded ahead of its endpoint (asr_worker.speculation): best effort like a
        # partial, but taken before partials.
        _best_effort_jobs(subjects.JOBS_SPECULATIVE_STREAM, "jobs.speculative.*", settings),
        StreamConfig(
            name=subjects.RESULTS_STREAM,
            subjects=["results.*.final", "results.*.flushed", "results.*.revision"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=float(settings.results_retention_seconds),
            max_bytes=settings.results_max_bytes or -1,
            discard=DiscardPolicy.OLD,
            allow_direct=True,
            duplicate_window=min(TIMING.dedupe_window_s, float(settings.results_retention_seconds)),
            num_replicas=settings.stream_replicas,
        ),
    ]
    return [_recording_policy(settings, config) for config in configs]


def _best_effort_jobs(name: str, subject: str, settings: BusSettings) -> StreamConfig:
    """A work queue in memory that keeps one job per subject (session): the newest."""
    return StreamConfig(
        name=name,
        subjects=[subject],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.MEMORY,
        max_msgs_per_subject=1,
        discard=DiscardPolicy.OLD,
        max_age=60.0,
        num_replicas=settings.stream_replicas,
    )


def _best_effort_consumer(durable: str) -> ConsumerConfig:
    """Delivered once: a job lost with its worker is not worth redoing (a newer one follows)."""
    return ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=TIMING.partial_ack_wait_s,
        max_deliver=1,
        max_ack_pending=10000,
    )


RECORD_AUDIO_KEY = "asr_record_audio"  # AUDIO stream metadata: "false" when record_audio is off


def _recording_policy(settings: BusSettings, config: StreamConfig) -> StreamConfig:
    """AUDIO says whether it is a recording; with record_audio off it keeps audio only as long as
    crash recovery and resume need it (the dedupe window may not exceed the age limit)."""
    if config.name != subjects.AUDIO_STREAM:
        return config
    metadata = {RECORD_AUDIO_KEY: "true" if settings.record_audio else "false"}
    if settings.record_audio:
        return config.evolve(metadata=metadata)
    age = float(settings.audio_recovery_seconds)
    return config.evolve(metadata=metadata, max_age=age, duplicate_window=min(config.duplicate_window or age, age))


def consumer_configs(settings: BusSettings) -> dict[str, list[ConsumerConfig]]:
    vad = [
        ConsumerConfig(
            durable_name=subjects.vad_consumer(shard),
            filter_subject=subjects.audio_shard_filter(shard),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=TIMING.vad_ack_wait_s,
            max_ack_pending=20000,
        )
        for shard in range(settings.audio_shards)
    ]
    return {
        subjects.AUDIO_STREAM: vad,
        subjects.JOBS_FINAL_STREAM: [
            ConsumerConfig(
                durable_name=subjects.FINAL_CONSUMER,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=TIMING.final_ack_wait_s,
                max_deliver=TIMING.final_max_deliver,
                max_ack_pending=10000,
            )
        ],
        subjects.JOBS_PARTIAL_STREAM: [_best_effort_consumer(subjects.PARTIAL_CONSUMER)],
        subjects.JOBS_SPECULATIVE_STREAM: [_best_effort_consumer(subjects.SPECULATIVE_CONSUMER)],
    }


# JetStream's error codes that mean "the cluster cannot place or answer this yet", not "wrong".
NO_SUITABLE_PEERS = 10005  # a replica's node is offline, or the cluster has not formed yet
CLUSTER_NOT_AVAILABLE = 10008
STREAM_NAME_IN_USE = 10058  # exists with another configuration: update it
RETRY_FIRST_S, RETRY_MAX_S = 0.25, 2.0


def is_transient(exc: Exception) -> bool:
    """True for an answer a forming or degraded cluster gives that a later try can change."""
    if isinstance(exc, (ServiceUnavailableError, NoRespondersError, NoStreamResponseError, NatsTimeoutError,
                        TimeoutError)):
        return True
    if isinstance(exc, NotFoundError):
        return True  # a stream another role is creating that is not placed yet
    return isinstance(exc, APIError) and exc.err_code in (NO_SUITABLE_PEERS, CLUSTER_NOT_AVAILABLE)


async def when_ready(op: Callable[[], Awaitable[T]], settings: BusSettings) -> T:
    """Runs ``op`` (a JetStream call at start-up); waits out a cluster that is not ready (forming,
    electing a leader, slow to answer) for up to ``bus_outage_timeout_seconds``, then raises what
    it last saw."""
    deadline = time.monotonic() + settings.bus_outage_timeout_seconds
    wait = RETRY_FIRST_S
    while True:
        try:
            return await op()
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() + wait > deadline:
                raise
            log.warning("JetStream not ready (%s): trying again in %.2fs", exc or type(exc).__name__, wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2, RETRY_MAX_S)


async def ensure_streams(js: JetStreamContext, settings: BusSettings) -> None:
    """Creates or updates every stream, consumer and bucket (``when_ready``)."""
    await when_ready(lambda: _ensure_once(js, settings), settings)


async def _ensure_once(js: JetStreamContext, settings: BusSettings) -> None:
    for config in stream_configs(settings):
        try:
            await js.add_stream(config)
        except BadRequestError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
            log.info("stream %s exists with another config: updating", config.name)
            await js.update_stream(config)
    for stream, consumers in consumer_configs(settings).items():
        for consumer in consumers:
            await js.add_consumer(stream, consumer)
    # The presence bucket every role reads, with the same replicas as the streams (the edge and
    # workers then bind to it as it is).
    await presence.bucket(js, settings.stream_replicas)
    await ensure_bucket(js, subjects.SPECULATION_BUCKET, TIMING.speculation_ttl_s, settings.stream_replicas,
                        memory=True)
