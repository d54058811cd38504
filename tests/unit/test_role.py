"""common.role.run_worker: the event loop a role runs on is the one `event_loop` names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A role whose serve() reports the running loop's class and the view it was given, and stops.
ROLE = """
import asyncio, sys
from dataclasses import dataclass
from common.role import run_worker
from common.settings_view import SettingsView

@dataclass(frozen=True, slots=True)
class Probe(SettingsView):
    endpointing_ms: int

async def serve(settings, stop):
    loop = asyncio.get_running_loop()
    print("LOOP", type(loop).__module__, settings, flush=True)

sys.exit(run_worker("probe", Probe, serve))
"""


def run_role(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ASR_")}
    return subprocess.run([sys.executable, "-c", ROLE], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**clean, "PYTHONPATH": str(ROOT), **env})


@pytest.mark.parametrize(("env", "module"), [({}, "uvloop"), ({"ASR_EVENT_LOOP": "asyncio"}, "asyncio")])
def test_roles_run_on_the_configured_loop(tmp_path: Path, env: dict[str, str], module: str) -> None:
    done = run_role(tmp_path, **env)
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("LOOP"))
    assert line.split()[1].split(".")[0] == module, line
    assert line.split(maxsplit=2)[2] == "Probe(endpointing_ms=500)"  # the role's view, nothing more
    assert f"event loop: {module}" in done.stderr  # the startup log says which loop it is


def test_an_unknown_loop_stops_the_role_with_a_sentence(tmp_path: Path) -> None:
    done = run_role(tmp_path, ASR_EVENT_LOOP="trio")
    assert done.returncode == 2
    assert "event_loop='trio' is unknown; use uvloop or asyncio." in done.stderr
    assert "LOOP" not in done.stdout
