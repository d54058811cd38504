"""Every ASR_* variable that compose.yaml, the Dockerfile, deploy/ and examples/ name is a real
setting, and every environment they give a role passes the settings validation, loaded the way
the role loads it (common.settings.load)."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from common.settings import Settings, SettingsError
from tests.integration.test_deploy_files import compose
from tests.settings_env import ROOT, load_env, read_env_file

VARIABLE = re.compile(r"(?<![A-Za-z0-9_])ASR_[A-Z0-9_]+")
# Read by common.settings.load itself, not a field.
NOT_FIELDS = {"ASR_SETTINGS_FILE"}
EXAMPLES = ROOT / "examples"


def deploy_files() -> list[Path]:
    files = [ROOT / "compose.yaml", ROOT / "Dockerfile", *sorted(EXAMPLES.glob("*.env"))]
    files += sorted(p for p in (ROOT / "deploy").rglob("*") if p.is_file())
    return files


def unknown_variables(text: str) -> set[str]:
    known = {f"ASR_{f.name.upper()}" for f in fields(Settings)} | NOT_FIELDS
    return set(VARIABLE.findall(text)) - known


def test_every_asr_variable_in_the_deploy_files_is_a_setting() -> None:
    seen: set[str] = set()
    unknown: dict[str, set[str]] = {}
    for path in deploy_files():
        text = path.read_text(errors="replace")
        seen |= set(VARIABLE.findall(text))
        if bad := unknown_variables(text):
            unknown[str(path.relative_to(ROOT))] = bad
    assert not unknown, f"not settings (see common/settings.py): {unknown}"
    assert {"ASR_NATS_URL", "ASR_STREAM_REPLICAS", "ASR_REDIS_SENTINELS", "ASR_API_KEYS"} <= seen


def test_an_unknown_variable_is_caught() -> None:
    assert unknown_variables("environment:\n  ASR_ENDPOINTING: 200\n  ASR_ENDPOINTING_MS: 200\n") == {
        "ASR_ENDPOINTING"
    }
    assert unknown_variables("image: realtime-asr:${IMAGE_TAG:-latest}  # XASR_NOT_OURS") == set()


# scenario -> the values its users asked for (docs: the scenarios of the issue tracker).
SCENARIOS = {
    "webinar-captions": {"endpointing_ms": 200, "max_sessions_per_worker": 1000, "max_global_sessions": 5000,
                         "idle_timeout_seconds": 7200.0},
    "medical-dictation": {"endpointing_ms": 800, "max_sessions_per_worker": 100, "max_global_sessions": 200,
                          "idle_timeout_seconds": 600.0, "acoustic_context_seconds": 20.0,
                          "acoustic_context_max_snr_db": 100.0},
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_file_is_valid_and_has_the_scenario_values(scenario: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = read_env_file(EXAMPLES / f"{scenario}.env")
    assert all(key.startswith("ASR_") for key in env), env
    loaded = load_env(env, monkeypatch)
    for name, value in SCENARIOS[scenario].items():
        assert getattr(loaded, name) == value, name
    assert not loaded.api_keys, "API keys belong in the environment or a secret, not in a shared example"


def test_validation_rejects_a_broken_scenario(monkeypatch: pytest.MonkeyPatch) -> None:
    env = read_env_file(EXAMPLES / "webinar-captions.env") | {"ASR_ENDPOINTING_MS": "50"}
    with pytest.raises(SettingsError, match="endpointing_ms=50 is too short"):
        load_env(env, monkeypatch)


def app_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in config["services"].items() if (s.get("command") or [""])[0] == "python"}


@pytest.mark.parametrize("scenario", [None, *SCENARIOS])
def test_every_role_environment_of_compose_is_valid(scenario: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if scenario:
        monkeypatch.setenv("SCENARIO", scenario)
    else:
        monkeypatch.delenv("SCENARIO", raising=False)
    result = compose("--profile", "gpu", "--profile", "monitoring", "config", "--format", "json", api_keys=None)
    assert result.returncode == 0, result.stderr
    services = app_services(json.loads(result.stdout))
    assert {"ingest-1", "ingest-2", "vad_worker", "asr_worker", "asr_worker_gpu"} <= set(services)
    for name, service in services.items():
        loaded = load_env(service["environment"], monkeypatch)
        assert loaded.nats_url == "nats://nats:4222" and loaded.redis_url == "redis://redis:6379/0", name
        for field, value in SCENARIOS.get(scenario or "", {}).items():
            assert getattr(loaded, field) == value, (name, field)
