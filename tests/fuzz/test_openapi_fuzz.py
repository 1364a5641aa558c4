"""Property-based fuzzing of the whole HTTP API from its own OpenAPI schema (schemathesis), against
a real `taskbroker api` process on the real servers: with a valid client token, with an admin
token, and with none. Every response must be a non-5xx, of a status the schema declares, and
match the schema.

Examples per operation: TASKBROKER_FUZZ_EXAMPLES (default 150 in CI; raise it for a longer run).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from taskbroker.backends import embedded_backends
from taskbroker.settings import Settings
from tests.conftest import ADMIN_HEADERS, AMQP_URL, REDIS_URL, cleanup
from tests.support.processes import Processes, process_env

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("TASKBROKER_FUZZ_EXAMPLES", "150"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
FUZZ_SCHEDULER = "fuzz"

# The schema the app serves, built without any server: the fuzzer reads it at collection time.
# Event streams never end by themselves (heartbeats keep them open), which a request/response
# fuzzer cannot read; tests/integration/test_events.py covers their inputs and errors.
schema = schemathesis.openapi.from_dict(
    create_app(Settings(), embedded_backends(Settings())).openapi()
).exclude(path_regex=r"/events$")


class Target:
    def __init__(self, url: str, client_token: str) -> None:
        self.url = url
        self.client_headers = {"Authorization": f"Bearer {client_token}"}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    settings = Settings(redis_url=REDIS_URL, amqp_url=AMQP_URL, key_prefix="tbfuzz-" + os.urandom(6).hex())
    env = process_env(key_prefix=settings.key_prefix, redis_url=REDIS_URL, amqp_url=AMQP_URL)
    processes = Processes(Path(tmp_path_factory.mktemp("fuzz")), env)
    try:
        _, url = processes.api()
        with httpx.Client(base_url=url, headers=ADMIN_HEADERS, timeout=30) as http:
            assert http.post("/scheduler", json={"name": FUZZ_SCHEDULER}).status_code == 201
            created = http.post("/token", json={"role": "client", "schedulers": [FUZZ_SCHEDULER]})
            assert created.status_code == 201, created.text
        yield Target(url, created.json()["token"])
    finally:
        processes.kill_all()
        asyncio.run(cleanup(settings))


def _call(case: Case[Any], target: Target, headers: dict[str, str]) -> None:
    case.call_and_validate(base_url=target.url, headers=headers, checks=CHECKS, timeout=30)


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


@schema.parametrize()
@FUZZ
def test_api_with_a_client_token(case: Case[Any], target: Target) -> None:
    _call(case, target, target.client_headers)


@schema.parametrize()
@FUZZ
def test_api_with_no_token(case: Case[Any], target: Target) -> None:
    _call(case, target, {})


@schema.parametrize()
@FUZZ
def test_api_with_an_admin_token(case: Case[Any], target: Target) -> None:
    _call(case, target, dict(ADMIN_HEADERS))
