"""`taskbroker schedules load FILE.yaml`: schedules declared in a file, applied idempotently.

Schedules are matched by name. A declared schedule that does not exist is created; one whose
declared fields differ is changed (only those fields: a field the file leaves out, such as
`enabled`, keeps whatever an operator set); one that matches is left alone; schedules the file
does not name are left alone. Running the same file twice changes nothing the second time.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from taskbroker.schedule_models import TRIGGER_FIELDS, Schedule, ScheduleSpec


class ScheduleFileError(Exception):
    """The file cannot be read or an entry is invalid; the message says which and why."""


class Action(enum.StrEnum):
    CREATE = "created"
    UPDATE = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Change:
    action: Action
    name: str
    spec: ScheduleSpec
    schedule_id: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    """For an update: the PATCH body (JSON-ready)."""


def read_schedule_file(path: Path) -> list[ScheduleSpec]:
    """The schedules a YAML file declares: ``schedules: [...]`` (or a bare list)."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ScheduleFileError(f"cannot read {path}: {exc}") from exc
    entries = loaded.get("schedules") if isinstance(loaded, dict) else loaded
    if not isinstance(entries, list):
        raise ScheduleFileError(f"{path}: expected a list under the key 'schedules'")
    specs: list[ScheduleSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        try:
            spec = ScheduleSpec.model_validate(entry)
        except ValidationError as exc:
            label = entry.get("name", f"#{index + 1}") if isinstance(entry, dict) else f"#{index + 1}"
            raise ScheduleFileError(f"{path}: schedule {label}: {exc}") from exc
        if spec.name in seen:
            raise ScheduleFileError(f"{path}: the name {spec.name!r} is declared twice")
        seen.add(spec.name)
        specs.append(spec)
    return specs


def plan(declared: Sequence[ScheduleSpec], existing: Sequence[Schedule]) -> list[Change]:
    """What applying ``declared`` over ``existing`` does, schedule by schedule."""
    by_name = {s.name: s for s in existing}
    changes = []
    for spec in declared:
        current = by_name.get(spec.name)
        if current is None:
            changes.append(Change(Action.CREATE, spec.name, spec))
            continue
        compared = set(spec.model_fields_set) | {"name"}
        if compared & TRIGGER_FIELDS:
            compared |= TRIGGER_FIELDS  # a trigger is declared whole: its defaults count too
        wanted = spec.model_dump(include=compared)
        have = current.model_dump(include=compared)
        differing = {k for k in compared if wanted[k] != have[k]}
        if differing & TRIGGER_FIELDS:
            differing |= TRIGGER_FIELDS
        if not differing:
            changes.append(Change(Action.UNCHANGED, spec.name, spec, str(current.id)))
            continue
        body = spec.model_dump(mode="json", include=differing)
        changes.append(Change(Action.UPDATE, spec.name, spec, str(current.id), body))
    return changes
