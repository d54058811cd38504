"""The README's configuration table and commands match the code."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from common.settings import Settings

ROOT = Path(__file__).parents[2]


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def test_readme_documents_every_setting_with_its_default() -> None:
    readme = (ROOT / "README.md").read_text()
    defaults = Settings()
    for f in fields(Settings):
        row = f"| `{f.name}` | `ASR_{f.name.upper()}` | `{_toml(getattr(defaults, f.name))}` |"
        assert row in readme, f"README configuration table lacks or misstates {f.name}"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in readme and "bash scripts/test.sh" in ci
    assert ".venv/bin/asr dev" in readme
