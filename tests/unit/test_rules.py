"""Pure rules, no servers: names, settings, backoff, cursors, tokens, input limits, redaction."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from taskbroker.api.limits import _shape
from taskbroker.errors import InvalidCursor
from taskbroker.event_models import InvalidEventId, parse_event_id
from taskbroker.lifecycle import Backoff
from taskbroker.logs import REDACTED, redact_text
from taskbroker.names import SCHEDULER_NAME_PATTERN, queue_name
from taskbroker.settings import Settings
from taskbroker.store import _parse_cursor
from taskbroker.token_models import Role
from taskbroker.tokens import AdminScopeRefused, Principal, _split, check_scope

STRONG = "x" * 32


@pytest.mark.parametrize("name", ["a", "default", "reports.nightly", "a-b_c", "0" * 63])
def test_scheduler_names_that_are_accepted(name: str) -> None:
    assert re.match(SCHEDULER_NAME_PATTERN, name)


@pytest.mark.parametrize("name", ["", "A", "-lead", ".lead", "sp ace", "0" * 64, "ü", "a/b"])
def test_scheduler_names_that_are_refused(name: str) -> None:
    assert not re.match(SCHEDULER_NAME_PATTERN, name)


def test_queue_names_are_namespaced_by_the_key_prefix() -> None:
    assert queue_name("prod", "reports") != queue_name("test", "reports")
    assert queue_name("prod", "reports").startswith("prod")


def test_settings_read_durations_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKBROKER_DEFAULT_TIMEOUT", "PT2H")
    monkeypatch.setenv("TASKBROKER_RETENTION", "600")

    settings = Settings()

    assert settings.default_timeout == timedelta(hours=2)
    assert settings.retention == timedelta(minutes=10)
    assert settings.heartbeat_interval == settings.lease / 3


@pytest.mark.parametrize(
    ("field", "value"),
    [("retention", timedelta(0)), ("lease", 0), ("key_prefix", "bad prefix"), ("log_format", "xml")],
)
def test_settings_refuse_nonsense(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Settings(**{field: value})  # type: ignore[arg-type]


def test_an_admin_token_shorter_than_32_characters_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(admin_token="short")


def test_the_admin_token_can_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(STRONG + "\n")

    settings = Settings(admin_token_file=secret)

    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == STRONG


def test_an_unreadable_admin_token_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot be read"):
        Settings(admin_token_file=tmp_path / "missing")


def test_backoff_grows_with_jitter_and_stays_under_its_cap() -> None:
    backoff = Backoff(first=0.1, cap=1.0)
    delays = [backoff.next_delay() for _ in range(20)]

    assert 0.05 <= delays[0] <= 0.1
    assert all(d <= 1.0 for d in delays)
    assert max(delays) >= 0.5
    backoff.reset()
    assert backoff.next_delay() <= 0.1


@pytest.mark.parametrize(
    ("cursor", "parsed"), [(None, (0, 0)), ("", (0, 0)), ("12", (12, 0)), ("12:5", (12, 5))]
)
def test_listing_cursors_parse(cursor: str | None, parsed: tuple[int, int]) -> None:
    assert _parse_cursor(cursor) == parsed


@pytest.mark.parametrize("cursor", ["x", "1:y", "-1", str(2**64), "1:-2"])
def test_listing_cursors_we_never_handed_out_are_refused(cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        _parse_cursor(cursor)


@pytest.mark.parametrize(
    ("token", "parts"),
    [
        ("tb_0123456789ab_se_cr-et", ("0123456789ab", "se_cr-et")),
        ("tb_0123456789ab_", None),
        ("tb__secret", None),
        ("0123456789ab_secret", None),
    ],
)
def test_tokens_split_into_id_and_secret(token: str, parts: tuple[str, str] | None) -> None:
    assert _split(token) == parts


def test_a_principal_uses_only_its_schedulers_and_owns_only_its_tasks() -> None:
    limited = Principal("t1", Role.CLIENT, frozenset({"a"}))
    admin = Principal("admin", Role.ADMIN, None)

    assert limited.may_use("a")
    assert not limited.may_use("b")
    assert admin.may_use("b")
    assert limited.owns("t1")
    assert not limited.owns("t2")
    assert not limited.owns(None)
    assert admin.owns("t2")


@pytest.mark.parametrize(
    ("principal", "scheduler", "owner", "sees"),
    [
        (Principal("admin", Role.ADMIN, None), "b", "t2", True),
        (Principal("w1", Role.WORKER, None), "b", "t2", True),
        (Principal("w1", Role.WORKER, frozenset({"a"})), "a", "t2", True),
        (Principal("w1", Role.WORKER, frozenset({"a"})), "b", "t2", False),
        (Principal("t1", Role.CLIENT, None), "b", "t1", True),
        (Principal("t1", Role.CLIENT, None), "b", "t2", False),
        (Principal("t1", Role.CLIENT, frozenset({"a"})), "b", "t1", False),
        (Principal("t1", Role.CLIENT, frozenset({"a"})), "a", None, False),
    ],
)
def test_a_principal_sees_the_tasks_of_its_schedulers_and_a_client_only_its_own(
    principal: Principal, scheduler: str, owner: str | None, sees: bool
) -> None:
    assert principal.sees(scheduler, owner) is sees


@pytest.mark.parametrize(("role", "schedulers"), [(Role.ADMIN, ["a"]), (Role.ADMIN, [])])
def test_an_admin_token_takes_no_scheduler_list(role: Role, schedulers: list[str]) -> None:
    with pytest.raises(AdminScopeRefused, match="admin"):
        check_scope(role, schedulers)
    check_scope(Role.WORKER, schedulers)
    check_scope(role, None)


@pytest.mark.parametrize(
    ("value", "depth"),
    [({}, 1), ({"a": 1}, 1), ({"a": [1, {"b": []}]}, 4), ([[[[]]]], 4), ("s", 0)],
)
def test_attribute_depth_counts_nested_objects_and_lists(value: object, depth: int) -> None:
    assert _shape(value) == (depth, False)


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_a_number_json_cannot_carry_is_found_at_any_depth(number: float) -> None:
    assert _shape({"a": [1, {"b": [number]}]}) == (4, True)


def test_a_very_deep_value_is_measured_without_recursion() -> None:
    value: object = []
    for _ in range(100_000):
        value = [value]

    assert _shape(value) == (100_001, False)


@pytest.mark.parametrize(
    ("text", "kept", "hidden"),
    [
        ("redis://:pw@host:6379/0", "redis://:", "pw"),
        ("amqp://guest:guest@rabbit:5672/%2F", "amqp://guest:", "guest@rabbit"),
        ("header Bearer abc.def.ghi sent", "Bearer ", "abc.def.ghi"),
        ("tb_0123456789ab_SeCrEt-_x in a message", "tb_0123456789ab_", "SeCrEt"),
    ],
)
def test_redaction_hides_the_secret_and_keeps_the_context(text: str, kept: str, hidden: str) -> None:
    redacted = redact_text(text)

    assert kept in redacted
    assert hidden not in redacted
    assert REDACTED in redacted


@pytest.mark.parametrize(
    "value", ["18446744073709551616-0", "0-18446744073709551616", "99999999999999999999-0"]
)
def test_an_event_id_part_beyond_64_bits_is_invalid(value: str) -> None:
    with pytest.raises(InvalidEventId, match="64-bit"):
        parse_event_id(value)


def test_the_highest_event_id_is_valid() -> None:
    assert parse_event_id("18446744073709551615-18446744073709551615") == (2**64 - 1, 2**64 - 1)
