"""common.settings: coercion, validation sentences, secret masking, loading, and the exit code."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from common.settings import Settings, SettingsError, from_mapping, load, replace

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_asr_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Hides the developer's ASR_* variables; removes those a loaded .env put into os.environ."""
    for key in [k for k in os.environ if k.startswith("ASR_")]:
        monkeypatch.delenv(key)
    yield
    # dynaconf's load_dotenv writes .env values into os.environ, which monkeypatch does not track.
    for key in [k for k in os.environ if k.startswith("ASR_")]:
        del os.environ[key]


def _problems(values: dict[str, Any]) -> list[str]:
    with pytest.raises(SettingsError) as info:
        from_mapping(values)
    return info.value.problems


def _one_problem(values: dict[str, Any]) -> str:
    problems = _problems(values)
    assert len(problems) == 1, problems
    return problems[0]


# --- defaults and coercion --------------------------------------------------------------------


def test_defaults_validate() -> None:
    assert from_mapping({}) == Settings()


def test_replace_validates_the_copy() -> None:
    assert replace(Settings(), port=9000).port == 9000
    with pytest.raises(SettingsError):
        replace(Settings(), endpointing_ms=50)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"port": 9000}, {"port": 9000}),
        ({"port": 9000.0}, {"port": 9000}),  # a whole float is a whole number
        ({"idle_timeout_seconds": 10}, {"idle_timeout_seconds": 10.0}),
        ({"worker_id": 123}, {"worker_id": "123"}),  # ASR_WORKER_ID=123 arrives as an int
        ({"require_workers_ready": False}, {"require_workers_ready": False}),
        ({"require_workers_ready": "false"}, {"require_workers_ready": False}),
        ({"require_workers_ready": "TRUE"}, {"require_workers_ready": True}),
        ({"ENDPOINTING_MS": 300}, {"endpointing_ms": 300}),  # keys are case-insensitive
    ],
)
def test_from_mapping_coerces(values: dict[str, Any], expected: dict[str, Any]) -> None:
    settings = from_mapping(values)
    for name, value in expected.items():
        got = getattr(settings, name)
        assert got == value
        assert type(got) is type(value)


@pytest.mark.parametrize(
    ("name", "value", "kind"),
    [
        ("port", "5", "a whole number"),  # env values arrive TOML-parsed: a string here is a mistake
        ("port", 5.5, "a whole number"),
        ("port", True, "a whole number"),
        ("idle_timeout_seconds", "30", "a number"),
        ("idle_timeout_seconds", True, "a number"),
        ("require_workers_ready", "maybe", "true or false"),
        ("require_workers_ready", 1, "true or false"),
        ("model", True, "a string"),
        ("model", ["tiny.en"], "a string"),
    ],
)
def test_from_mapping_rejects_wrong_types(name: str, value: Any, kind: str) -> None:
    assert _one_problem({name: value}) == f"{name}={value!r} must be {kind}."


def test_unknown_key_names_the_close_settings() -> None:
    message = _one_problem({"endpointing": 300})
    assert "endpointing is not a setting" in message
    assert "did you mean endpointing_ms?" in message
    assert "settings.toml" in message


def test_unknown_key_without_a_close_setting_has_no_hint() -> None:
    message = _one_problem({"colour": "blue"})
    assert "colour is not a setting" in message
    assert "did you mean" not in message


# --- validation sentences ---------------------------------------------------------------------


def test_endpointing_too_short_explains_and_recommends() -> None:
    message = _one_problem({"endpointing_ms": 50})
    assert "endpointing_ms=50" in message
    assert "many tiny utterances" in message
    assert "at least 200" in message


def test_endpointing_too_long_explains_the_wait() -> None:
    message = _one_problem({"endpointing_ms": 6000})
    assert "endpointing_ms=6000" in message
    assert "wait more than 5 s" in message
    assert "at most 5000" in message


@pytest.mark.parametrize(
    ("name", "value", "fragments"),
    [
        ("vad_frame_ms", 25, ["vad_frame_ms=25", "10, 20 or 30"]),
        ("vad_aggressiveness", 4, ["vad_aggressiveness=4", "0, 1, 2 or 3"]),
        ("device", "tpu", ["device='tpu'", "cpu, cuda or auto"]),
        ("compute_type", "int4", ["compute_type='int4'", "int8", "float16"]),
        ("nats_url", "http://x", ["nats_url='http://x'", "nats://HOST:4222"]),
        ("nats_url", "nats://a:4222,http://b", ["is not a NATS URL"]),
        ("nats_url", "", ["is not a NATS URL"]),
        ("redis_url", "mysql://db:3306/x", ["redis_url='mysql://db:3306/x'", "redis://", "leave it empty"]),
        ("worker_id", "edge 1", ["worker_id='edge 1'", "letters, digits"]),
        ("worker_id", "x" * 65, ["at most 64"]),
        ("log_level", "VERBOSE", ["log_level='VERBOSE'", "DEBUG, INFO, WARNING or ERROR"]),
        ("log_format", "xml", ["log_format='xml'", "text or json"]),
        ("event_loop", "tokio", ["event_loop='tokio'", "uvloop or asyncio"]),
        ("model", "", ["model is empty", "tiny.en"]),
        ("partial_interval_ms", 50, ["partial_interval_ms=50", "at least 200"]),
        ("max_utterance_seconds", 45.0, ["max_utterance_seconds=45.0 is outside 1..30"]),
        ("port", 70000, ["port=70000 is outside 0..65535"]),
        ("audio_shards", 0, ["audio_shards=0 is outside"]),
    ],
)
def test_bad_value_gets_a_sentence(name: str, value: Any, fragments: list[str]) -> None:
    message = _one_problem({name: value})
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    "values",
    [
        {"nats_url": "nats://a:4222, tls://b:4222"},
        {"redis_url": "rediss://:pw@host:6380/1"},
        {"redis_url": "unix:///run/redis.sock"},
        {"worker_id": "edge-1_a"},
        {"log_level": "debug"},
        {"vad_http_port": 0, "asr_http_port": 0},
        {"partial_interval_ms": 0},
        {"device": "auto", "compute_type": "int8_float16"},
    ],
)
def test_good_values_pass(values: dict[str, Any]) -> None:
    from_mapping(values)


def test_max_frame_below_max_chunk_is_reported() -> None:
    message = _one_problem({"max_chunk_bytes": 65536, "max_frame_bytes": 60000})
    assert "max_frame_bytes=60000 is below max_chunk_bytes=65536" in message
    assert f"use at least {65536 * 4 // 3 + 64}" in message


def test_max_frame_must_hold_the_base64_form_of_the_largest_chunk() -> None:
    # The sentence above says the frame cap must hold a chunk's base64 form (4/3 of it): a frame
    # cap equal to the chunk limit would close JSON audio clients with 1009 for legal chunks.
    message = _one_problem({"max_chunk_bytes": 65536, "max_frame_bytes": 65536})
    assert "max_frame_bytes=65536" in message


def test_every_problem_is_reported_at_once() -> None:
    problems = _problems(
        {
            "endpointing_ms": 50,
            "vad_frame_ms": 25,
            "device": "tpu",
            "compute_type": "int4",
            "nats_url": "http://x",
            "redis_url": "mysql://db/x",
            "max_chunk_bytes": 65536,
            "max_frame_bytes": 1000,
            "worker_id": "has spaces",
            "log_level": "LOUD",
            "port": "80",
            "nonsense": 1,
        }
    )
    text = "\n".join(problems)
    for name in (
        "endpointing_ms", "vad_frame_ms", "device", "compute_type", "nats_url", "redis_url",
        "max_frame_bytes", "worker_id", "log_level", "port", "nonsense",
    ):
        assert name in text, name
    assert len(problems) == 11


def test_error_message_lists_every_problem() -> None:
    with pytest.raises(SettingsError) as info:
        from_mapping({"endpointing_ms": 50, "device": "tpu"})
    assert str(info.value).startswith("Invalid configuration:\n")
    assert all(f"  - {p}" in str(info.value) for p in info.value.problems)
    assert isinstance(info.value, ValueError)


# --- masking ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:s3cret@host:6379/0", "redis://:****@host:6379/0"),
        ("redis://alice:s3cret@host:6379/0", "redis://alice:****@host:6379/0"),
        ("rediss://alice:s3cret@host:6380", "rediss://alice:****@host:6380"),
    ],
)
def test_masked_hides_url_passwords(url: str, masked: str) -> None:
    shown = Settings(redis_url=url).masked()["redis_url"]
    assert shown == masked
    assert "s3cret" not in shown


@pytest.mark.parametrize("url", ["redis://host:6379/0", "redis://alice@host:6379/0", ""])
def test_masked_keeps_urls_without_password(url: str) -> None:
    assert Settings(redis_url=url).masked()["redis_url"] == url


def test_masked_hides_nats_passwords_and_keeps_everything_else() -> None:
    settings = Settings(nats_url="nats://bob:hunter2@a:4222,nats://b:4222")
    shown = settings.masked()
    assert shown["nats_url"] == "nats://bob:****@a:4222,nats://b:4222"
    assert set(shown) == {f.name for f in fields(Settings)}
    assert shown["port"] == settings.port


def test_bad_redis_url_error_does_not_show_the_password() -> None:
    with pytest.raises(SettingsError) as info:
        from_mapping({"redis_url": "mysql://root:s3cret@db:3306/x"})
    assert "s3cret" not in str(info.value)
    assert "root:****@db" in str(info.value)


def test_bad_nats_url_error_does_not_show_the_password() -> None:
    with pytest.raises(SettingsError) as info:
        from_mapping({"nats_url": "http://alice:s3cret@nats:4222"})
    assert "nats_url" in str(info.value)
    assert "s3cret" not in str(info.value)


# --- load() -----------------------------------------------------------------------------------


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory: no settings.toml, no .env."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_load_with_nothing_gives_defaults(in_tmp: Path) -> None:
    assert load() == Settings()


def test_load_parses_environment_values_as_toml(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASR_ENDPOINTING_MS", "300")
    monkeypatch.setenv("ASR_REQUIRE_WORKERS_READY", "false")
    monkeypatch.setenv("ASR_REDIS_URL", "redis://localhost:6379/0")
    monkeypatch.setenv("ASR_IDLE_TIMEOUT_SECONDS", "12.5")
    settings = load()
    assert settings.endpointing_ms == 300
    assert type(settings.endpointing_ms) is int
    assert settings.require_workers_ready is False
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.idle_timeout_seconds == 12.5


def test_load_reports_invalid_environment_values(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASR_PORT", "eighty")
    monkeypatch.setenv("ASR_ENDPOINTING_MS", "50")
    with pytest.raises(SettingsError) as info:
        load()
    assert "port='eighty' must be a whole number." in info.value.problems
    assert any("at least 200" in p for p in info.value.problems)


def test_load_reports_unknown_environment_variables(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASR_ENDPOINTING", "300")
    with pytest.raises(SettingsError) as info:
        load()
    assert "did you mean endpointing_ms?" in str(info.value)


def test_load_reads_the_settings_file_named_by_the_environment(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = in_tmp / "conf" / "edge.toml"
    path.parent.mkdir()
    path.write_text('endpointing_ms = 800\nport = 9100\nlog_format = "json"\n')
    monkeypatch.setenv("ASR_SETTINGS_FILE", str(path))
    settings = load()
    assert (settings.endpointing_ms, settings.port, settings.log_format) == (800, 9100, "json")
    assert settings.beam_size == Settings().beam_size


def test_load_reads_settings_toml_in_the_working_directory(in_tmp: Path) -> None:
    # The documented lookup is ./settings.toml. Handing dynaconf the relative name lets it search
    # the launcher script's folders first (here .venv/bin/pytest -> the repo's settings.toml).
    (in_tmp / "settings.toml").write_text("max_sessions_per_worker = 7\n")
    assert load().max_sessions_per_worker == 7


def test_load_explicit_file_and_overrides_win(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = in_tmp / "other.toml"
    path.write_text("port = 9100\nbeam_size = 5\n")
    monkeypatch.setenv("ASR_PORT", "9200")
    settings = load(path, beam_size=3)
    assert (settings.port, settings.beam_size) == (9200, 3)


def test_load_missing_settings_file_is_an_error(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = in_tmp / "nope.toml"
    monkeypatch.setenv("ASR_SETTINGS_FILE", str(missing))
    with pytest.raises(SettingsError) as info:
        load()
    assert str(missing) in str(info.value)
    assert "does not exist" in str(info.value)


def test_load_reads_dotenv_in_the_working_directory(in_tmp: Path) -> None:
    (in_tmp / ".env").write_text("ASR_PORT=9001\n")
    assert load().port == 9001


def test_environment_overrides_file(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = in_tmp / "edge.toml"
    path.write_text("endpointing_ms = 800\nport = 9100\n")
    monkeypatch.setenv("ASR_SETTINGS_FILE", str(path))
    monkeypatch.setenv("ASR_ENDPOINTING_MS", "300")
    settings = load()
    assert (settings.endpointing_ms, settings.port) == (300, 9100)


def test_dotenv_overrides_file_and_environment_overrides_dotenv(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = in_tmp / "edge.toml"
    path.write_text("port = 9100\nbeam_size = 2\nendpointing_ms = 800\n")
    monkeypatch.setenv("ASR_SETTINGS_FILE", str(path))
    (in_tmp / ".env").write_text("ASR_PORT=9001\nASR_BEAM_SIZE=4\n")
    monkeypatch.setenv("ASR_BEAM_SIZE", "5")
    settings = load()
    assert (settings.port, settings.beam_size, settings.endpointing_ms) == (9001, 5, 800)


# --- settings.toml documents the code ---------------------------------------------------------


def test_settings_toml_lists_every_field_with_its_default() -> None:
    with (REPO / "settings.toml").open("rb") as f:
        documented = tomllib.load(f)
    defaults = {f.name: getattr(Settings(), f.name) for f in fields(Settings)}
    assert sorted(documented) == sorted(defaults)
    for name, default in defaults.items():
        assert documented[name] == default, name
        assert type(documented[name]) is type(default), name


# --- processes exit 2 with the sentence -------------------------------------------------------


@pytest.mark.parametrize("module", ["ingest", "vad_worker", "asr_worker"])
def test_process_exits_2_on_invalid_settings(module: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASR_")}
    env["ASR_ENDPOINTING_MS"] = "50"
    proc = subprocess.run(
        [sys.executable, "-m", module], env=env, cwd=REPO, capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "endpointing_ms" in proc.stderr
    assert "200" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_settings_file_with_bad_syntax_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text("port = \n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASR_SETTINGS_FILE", str(bad))
    with pytest.raises(SettingsError) as info:
        load()
    assert "broken.toml could not be read" in str(info.value) and "line 1" in str(info.value)
