"""Per-role views of the settings: each part of the system is handed only the fields it reads.

``common.settings.Settings`` is loaded and validated once per process, as a whole, because many
checks relate fields of different roles (endpointing against the longest utterance, the edge's
waits against the workers' leases). Code past the loader takes a *view*: a frozen dataclass that
declares, by name and type, the settings one part reads, and is filled from a ``Settings`` by
``from_settings``. Reading a setting the view does not declare is a mypy error, so a role's
dependence on configuration is visible in one place and checked, as in nats.py's typed configs.

A view declares no defaults and no documentation of its own: both stay with ``Settings`` (and
settings.toml), the one source. A field named like a ``Settings`` field or property takes its
value; a field whose type is itself a view (``bus: BusSettings``) takes that view, built from the
same settings. ``problems`` says what in a view does not match ``Settings`` (the unit tests check
every view with it). This module imports nothing of ``common.settings``: the views depend on the
settings, never the other way round.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, Self, get_type_hints


class Source(Protocol):
    """What a view is read from: ``common.settings.Settings`` (this module does not import it, so
    that the settings and the views of them do not import each other)."""

    def with_changes(self, **changes: Any) -> Source: ...


@dataclasses.dataclass(frozen=True, slots=True)
class SettingsView:
    """Base of the views: subclasses are ``@dataclass(frozen=True, slots=True)`` and add fields."""

    @classmethod
    def from_settings(cls, settings: Source, **changes: Any) -> Self:
        """The view of ``settings``; ``changes`` are applied first and validated, as by
        ``common.settings.replace`` (``VadSettings.from_settings(settings, worker_id="vad-2")``)."""
        if changes:
            settings = settings.with_changes(**changes)
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            kind = hints[field.name]
            if isinstance(kind, type) and issubclass(kind, SettingsView):
                values[field.name] = kind.from_settings(settings)
            else:
                values[field.name] = getattr(settings, field.name)
        return cls(**values)


def problems(view: type[SettingsView], settings: type) -> list[str]:
    """Every field of ``view`` that ``settings`` (the ``Settings`` class) lacks or types
    differently, one sentence each."""
    known = get_type_hints(settings)
    out: list[str] = []
    for name, kind in get_type_hints(view).items():
        if isinstance(kind, type) and issubclass(kind, SettingsView):
            out += problems(kind, settings)
            continue
        member = getattr(settings, name, None)
        if name in known:
            have = known[name]
        elif isinstance(member, property) and member.fget is not None:
            have = get_type_hints(member.fget).get("return")
        else:
            out.append(f"{view.__name__}.{name} is not a setting.")
            continue
        if have != kind:
            out.append(f"{view.__name__}.{name} is {kind}, but the setting is {have}.")
    return out


__all__ = ["SettingsView", "problems"]
