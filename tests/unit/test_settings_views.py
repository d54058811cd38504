"""Per-role views of the settings (common/settings_view.py): each matches Settings, is filled from
it, and is what the roles' code is typed against."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from asr_worker.asr_settings import AsrSettings
from common.bus_settings import BusSettings
from common.redis_client import RedisSettings
from common.settings import Settings, SettingsError, replace
from common.settings_view import SettingsView, problems
from ingest.edge_settings import EdgeSettings
from vad_worker.vad_settings import VadSettings

VIEWS: list[type[SettingsView]] = [BusSettings, RedisSettings, EdgeSettings, VadSettings, AsrSettings]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.__name__)
def test_every_view_names_settings_with_their_types(view: type[SettingsView]) -> None:
    assert problems(view, Settings) == []


@dataclasses.dataclass(frozen=True, slots=True)
class _Wrong(SettingsView):
    endpointing_ms: float  # an int setting
    no_such_setting: int
    effective_worker_id: int  # a str property


def test_a_view_that_does_not_match_the_settings_is_named() -> None:
    assert problems(_Wrong, Settings) == [
        "_Wrong.endpointing_ms is <class 'float'>, but the setting is <class 'int'>.",
        "_Wrong.no_such_setting is not a setting.",
        "_Wrong.effective_worker_id is <class 'int'>, but the setting is <class 'str'>.",
    ]


def test_a_view_takes_the_values_of_the_settings_and_builds_the_views_inside_it() -> None:
    settings = replace(Settings(), worker_id="edge-7", max_send_queue_size=7, audio_shards=4,
                       redis_url="redis://r:6379/2", nats_url="nats://a:4222,nats://b:4222")
    edge = EdgeSettings.from_settings(settings)
    assert (edge.max_send_queue_size, edge.effective_worker_id) == (7, "edge-7")
    assert edge.bus == BusSettings.from_settings(settings)
    assert (edge.bus.audio_shards, edge.bus.nats_url) == (4, "nats://a:4222,nats://b:4222")
    assert edge.redis.redis_url == "redis://r:6379/2"
    for view in VIEWS:
        made = view.from_settings(settings)
        flat = {f.name: getattr(made, f.name) for f in dataclasses.fields(view)
                if not isinstance(getattr(made, f.name), SettingsView)}
        assert flat == {name: getattr(settings, name) for name in flat}


def test_changes_are_validated_like_the_settings_themselves() -> None:
    vad = VadSettings.from_settings(Settings(), worker_id="vad-2", endpointing_ms=300)
    assert (vad.effective_worker_id, vad.endpointing_ms) == ("vad-2", 300)
    with pytest.raises(SettingsError, match="endpointing_ms"):
        VadSettings.from_settings(Settings(), endpointing_ms=-1)


def test_views_are_frozen() -> None:
    asr = AsrSettings.from_settings(Settings())
    with pytest.raises(dataclasses.FrozenInstanceError):
        asr.beam_size = 1  # type: ignore[misc]


def _annotations_naming_settings(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            annotation = getattr(node, "annotation", None) or getattr(node, "returns", None)
            if annotation is not None and "Settings" in {
                n.id for n in ast.walk(annotation) if isinstance(n, ast.Name)
            }:
                found.append(f"{path.relative_to(ROOT)}:{annotation.lineno}")
    return found


@pytest.mark.parametrize("package", ["ingest", "vad_worker", "asr_worker"])
def test_no_role_takes_the_whole_settings(package: str) -> None:
    # Each role's code is typed against its view; the whole Settings stops at common.role.
    assert _annotations_naming_settings(package) == []
