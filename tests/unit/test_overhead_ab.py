"""benchmarks.overhead_ab: what it counts as the fixed part, and the changes it accepts."""

from __future__ import annotations

import pytest

from benchmarks.overhead_ab import parse_args, split


def test_split_counts_edge_nats_and_vad_as_fixed_and_every_other_process_as_asr() -> None:
    cpu = {"ingest": 1.0, "nats-server": 2.0, "vad_worker": 1.0, "asr_worker": 30.0, "asr_worker-extra2": 10.0}
    out = split(cpu, audio_s=1000.0)
    assert out["fixed"] == pytest.approx(0.004)
    assert out["asr"] == pytest.approx(0.040)
    assert out["nats-server"] == pytest.approx(0.002) and out["asr_worker-extra2"] == pytest.approx(0.010)


def test_changes_are_read_as_the_stacks_environment_spells_them() -> None:
    args = parse_args(["--set", "ASR_AUDIO_BATCH_MS=200", "--set", "ASR_PUBLISH_LINGER_MS=0", "--pairs", "3"])
    assert args.changes == ["ASR_AUDIO_BATCH_MS=200", "ASR_PUBLISH_LINGER_MS=0"] and args.pairs == 3


@pytest.mark.parametrize("argv", [["--set", "audio_batch_ms=200"], ["--set", "ASR_AUDIO_BATCH_MS"],
                                  ["--set", "ASR_X=1", "--pairs", "0"], []])
def test_a_change_not_in_the_environments_spelling_or_no_runs_is_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
