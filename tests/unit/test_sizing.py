"""common.sizing: the ASR pool never runs more OpenMP threads than cores and uses every core it may."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.sizing import AsrPool, asr_pool, usable_cores


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 8, 16, 64])
@pytest.mark.parametrize("layout", ["processes", "threads"])
def test_threads_never_exceed_cores(cores: int, layout: str) -> None:
    pool = asr_pool(cores, layout=layout)
    assert 1 <= pool.threads <= cores
    assert pool.cpu_threads == 1


def test_two_cores_use_both() -> None:
    assert asr_pool(2) == AsrPool(processes=2, concurrency=1, cpu_threads=1)
    assert asr_pool(2, layout="threads") == AsrPool(processes=1, concurrency=2, cpu_threads=1)


def test_large_machines_keep_cores_for_edge_and_vad() -> None:
    assert asr_pool(16).processes == 14
    assert asr_pool(8).processes == 7


def test_cuda_is_one_process_with_streams() -> None:
    pool = asr_pool(2, device="cuda", gpu_streams=4)
    assert pool == AsrPool(processes=1, concurrency=2, cpu_threads=1)
    assert asr_pool(16, device="cuda", gpu_streams=4).concurrency == 4


def test_env_names_the_settings() -> None:
    assert AsrPool(2, 3, 1).env() == {"ASR_ASR_CONCURRENCY": "3", "ASR_CPU_THREADS": "1"}


@pytest.mark.parametrize(("kwargs", "word"), [
    ({"cores": 0}, "cores"), ({"cores": 2, "layout": "fibres"}, "layout"), ({"cores": 2, "device": "tpu"}, "device"),
])
def test_bad_input_says_what_to_use(kwargs: dict[str, object], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        asr_pool(**kwargs)  # type: ignore[arg-type]


def test_cgroup_quota_caps_cores(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # docker --cpus 0.5
    assert usable_cores(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # --cpus 1.5 rounds up to 2 when allowed
    assert usable_cores(tmp_path) == min(2, usable_cores(tmp_path / "absent"))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cores(tmp_path) == usable_cores(tmp_path / "absent")
