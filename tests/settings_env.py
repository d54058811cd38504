"""Settings exactly as a role process loads them from its environment (dynaconf parses ASR_*
values as TOML), for checking the environments that compose.yaml, deploy/ and examples/ give."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from common import settings

ROOT = Path(__file__).resolve().parents[1]


def load_env(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> settings.Settings:
    """common.settings.load() with only ``env``'s ASR_* variables set, from the repository's
    settings.toml (what the image ships), without any .env of the working directory."""
    with monkeypatch.context() as m:
        for key in list(os.environ):
            if key.startswith("ASR_"):
                m.delenv(key)
        for key, value in env.items():
            if key.startswith("ASR_"):
                m.setenv(key, value)
        m.chdir(ROOT / "deploy")  # no settings.toml or .env here: only the file named below
        return settings.load(ROOT / "settings.toml")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (comments and blank lines skipped)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path}: not KEY=VALUE: {line!r}"
            out[key.strip()] = value.strip()
    return out
