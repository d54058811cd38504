"""Every timing and count the roles agree on through the bus, in one typed, checked object.

These are not operator settings: they are what makes JetStream's redelivery, the VAD shards'
leases and the workers' presence fit together, and each is tied to others (an in-progress signal
must come well inside its consumer's ack wait, a lease must be refreshed well inside its TTL).
`BusTiming` states each value once with why it is what it is, and refuses a combination that
breaks one of those ties, so a change is checked where it is made. The roles read `TIMING`;
a test that needs shorter waits builds its own `BusTiming(...)` and gets the same checks.

Where each value is used: the streams' and consumers' configurations (`common.streams`), the VAD
worker's shards (`vad_worker.worker`, `vad_worker.shards`), the workers' presence
(`common.presence`) and the ASR worker's final jobs and speculation cache (`asr_worker.worker`,
`asr_worker.speculation`). docs/architecture.md tells the failure story they add up to.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class BusTiming:
    # --- JetStream consumers -------------------------------------------------------------------
    vad_ack_wait_s: float = 5.0
    """AUDIO, the VAD shards' consumers: a batch takes milliseconds, so audio delivered to a VAD
    worker that died comes back this soon (its successor does not wait: it reads what it lacks
    from the stream)."""
    final_ack_wait_s: float = 10.0
    """JOBS_FINAL: a dead ASR worker's final goes to another worker this soon; a live worker
    decoding a long final says so every `final_in_progress_every_s`."""
    final_in_progress_every_s: float = 3.0
    """How often an ASR worker tells JetStream it is still decoding a final (well inside
    `final_ack_wait_s`, or a slow decode would be handed to a second worker)."""
    final_max_deliver: int = 5
    """Tries of one final job; the last failing one stores a `TranscriptionFailed` in its place."""
    partial_ack_wait_s: float = 10.0
    """JOBS_PARTIAL and JOBS_SPECULATIVE: delivered once (best effort), acknowledged within this."""
    dedupe_window_s: float = 120.0
    """JetStream's duplicate window on AUDIO, JOBS_FINAL and RESULTS (cut to a stream's max age
    where that is shorter): a re-published chunk, job or final with the same ``Nats-Msg-Id``
    within it is dropped, which is what makes redoing work after a crash safe."""
    vad_pull_batch: int = 512
    """The most audio messages one pass of a VAD shard's loop takes, and its standing pull's size."""
    vad_pull_expires_s: float = 30.0
    """A VAD shard's standing pull request (`common.pull`) is asked again at least this often."""
    vad_pull_heartbeat_s: float = 5.0
    """nats-server's idle heartbeat on a standing pull; a pull silent past two of them is lost."""

    # --- key-value buckets ------------------------------------------------------------------------
    lease_ttl_s: float = 8.0
    """``vad_shards``: a dead VAD worker's shards are free this long after its last refresh."""
    lease_refresh_s: float = 2.0
    """How often a VAD worker refreshes its shard leases (compare-and-set)."""
    lease_margin_s: float = 2.0
    """A VAD worker stops consuming a shard this long before its lease can expire (clock drift, a
    slow loop), so two owners never process the same audio."""
    worker_heartbeat_s: float = 2.0
    """How often every worker writes its presence (``asr_workers``)."""
    worker_ttl_s: float = 6.0
    """``asr_workers``: a worker that stopped writing is gone from the live set after this."""
    speculation_ttl_s: float = 60.0
    """``asr_speculative``: a speculative decode kept for the final that may use it (a cache)."""

    def __post_init__(self) -> None:
        problems = [f"{f.name} must be positive, got {getattr(self, f.name)}" for f in fields(self)
                    if not getattr(self, f.name) > 0]
        ties = (
            (self.final_in_progress_every_s * 2 <= self.final_ack_wait_s,
             "final_in_progress_every_s must be at most half of final_ack_wait_s (a slow decode would "
             "be handed to a second worker)"),
            (self.lease_refresh_s + self.lease_margin_s < self.lease_ttl_s,
             "lease_refresh_s + lease_margin_s must be under lease_ttl_s (a live owner would stop "
             "consuming between two refreshes)"),
            (self.worker_heartbeat_s * 2 <= self.worker_ttl_s,
             "worker_heartbeat_s must be at most half of worker_ttl_s (one late write would drop a "
             "live worker)"),
            (self.vad_pull_heartbeat_s * 2 < self.vad_pull_expires_s,
             "vad_pull_heartbeat_s must be under half of vad_pull_expires_s (a pull is taken as lost "
             "after two silent heartbeats)"),
        )
        problems += [why for ok, why in ties if not ok]
        if problems:
            raise ValueError("BusTiming: " + "; ".join(problems))


TIMING = BusTiming()
"""What every role uses."""
