"""compose.yaml cannot run here (no Docker engine), so check what can drift: its services, and
that every command it runs is one the CLI accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.exceptions import TyperException

from tests.deploy.cli_args import check_accepted as _parses

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def test_compose_has_the_services_of_a_deployment(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"redis", "rabbitmq", "api", "timeout-daemon", "worker-default"} <= set(services)
    assert services["worker-default"]["deploy"]["replicas"] == 2


def test_redis_keeps_an_append_only_file(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"


def test_servers_and_api_have_healthchecks(compose: dict[str, Any]) -> None:
    for name in ("redis", "rabbitmq", "api"):
        assert "healthcheck" in compose["services"][name], name


@pytest.mark.parametrize("service", ["api", "timeout-daemon", "worker-default", "schedule-firer"])
def test_every_taskbroker_command_in_compose_is_accepted_by_the_cli(
    compose: dict[str, Any], service: str
) -> None:
    _parses(compose["services"][service]["command"])


def test_taskbroker_services_build_from_the_dockerfile_and_point_at_the_servers(
    compose: dict[str, Any],
) -> None:
    for service in ("api", "timeout-daemon", "worker-default"):
        definition = compose["services"][service]
        assert definition["build"] == "."
        assert definition["environment"]["TASKBROKER_REDIS_URL"].startswith("redis://redis:")
        assert "@rabbitmq:" in definition["environment"]["TASKBROKER_AMQP_URL"]
    assert (ROOT / "Dockerfile").is_file()


def test_the_default_dockerfile_command_is_accepted_by_the_cli() -> None:
    cmd_line = next(
        line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")
    )
    _parses(yaml.safe_load(cmd_line.removeprefix("CMD ")))


def test_a_command_the_cli_does_not_know_is_rejected() -> None:
    with pytest.raises(TyperException):
        _parses(["worker", "--no-such-option"])
