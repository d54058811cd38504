"""The settings an ASR worker reads (``python -m asr_worker`` hands it this view of the validated
``Settings``; defaults and meanings are in ``Settings`` and settings.toml; see ``common.settings_view``)."""

from __future__ import annotations

from dataclasses import dataclass

from common.bus_settings import BusSettings
from common.settings_view import SettingsView


@dataclass(frozen=True, slots=True)
class AsrSettings(SettingsView):
    bus: BusSettings
    effective_worker_id: str
    host: str
    asr_http_port: int
    log_transcripts: bool
    # the model and how it decodes (asr_worker.transcriber)
    model: str
    device: str
    compute_type: str
    beam_size: int
    cpu_threads: int
    encoder_window_seconds: float
    language: str
    word_timestamps: bool
    context_chars: int
    # jobs: how many at once, which to skip
    asr_concurrency: int
    partial_max_age_ms: int
    speculative_finals: bool
    speculation_wait_ms: int
    # finals decoded again (asr_worker.revisions)
    revise_finals: bool
    carry_empty_finals: bool
    revision_max_logprob: float
    revision_max_lag_ms: int
    revision_max_pending: int
    revision_nice: int


__all__ = ["AsrSettings"]
