"""Property-based fuzzing of the whole HTTP API from its own OpenAPI schema (schemathesis), against
the hardening deployment (real processes on the real servers): every check schemathesis has (but
response time, which is the benchmark's business), with a client token, an admin token and none,
then the stateful phase (chains of calls through the links schemathesis infers: schedule a task,
read it, abort it...) with each token. Any 5xx, any answer the schema does not declare, any
accepted invalid input or refused valid one fails the test.

Examples per operation: TASKBROKER_FUZZ_EXAMPLES (default 100 in CI; raise it for a longer run).
"""

from __future__ import annotations

import os
from typing import Any

import hypothesis
import pytest
import schemathesis
import schemathesis.checks
from hypothesis import HealthCheck
from schemathesis import Case
from schemathesis.checks import CheckFunction

from api.app import create_app
from taskbroker.backends import embedded_backends
from taskbroker.settings import Settings
from tests.hardening.conftest import Deployment

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("TASKBROKER_FUZZ_EXAMPLES", "100"))
STATEFUL_SCENARIOS = int(os.environ.get("TASKBROKER_FUZZ_SCENARIOS", "40"))


def _all_checks() -> list[CheckFunction]:
    """Every check schemathesis registers, but max_response_time (a timing threshold)."""
    schemathesis.checks.load_all_checks()
    names = [n for n in schemathesis.checks.CHECKS.get_all_names() if n != "max_response_time"]
    checks: list[CheckFunction] = [getattr(schemathesis.checks, name) for name in names]
    return checks


CHECKS = _all_checks()

# The schema the app serves, built without any server: the fuzzer reads it at collection time.
# Event streams never end by themselves (heartbeats keep them open), which a request/response
# fuzzer cannot read; tests/integration/test_events.py covers their inputs and errors.
schema = schemathesis.openapi.from_dict(
    create_app(Settings(), embedded_backends(Settings())).openapi()
).exclude(path_regex=r"/events$")

FUZZ = hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


def _call(case: Case[Any], deployment: Deployment, headers: dict[str, str]) -> None:
    case.call_and_validate(base_url=deployment.url, headers=headers, checks=CHECKS, timeout=30)


@schema.parametrize()
@FUZZ
def test_api_with_a_client_token(case: Case[Any], deployment: Deployment) -> None:
    _call(case, deployment, deployment.client_headers)


@schema.parametrize()
@FUZZ
def test_api_with_no_token(case: Case[Any], deployment: Deployment) -> None:
    _call(case, deployment, {})


@schema.parametrize()
@FUZZ
def test_api_with_an_admin_token(case: Case[Any], deployment: Deployment) -> None:
    _call(case, deployment, deployment.admin_headers)


@pytest.mark.parametrize("token", ["admin", "client"])
def test_stateful_call_chains(token: str, deployment: Deployment) -> None:
    headers = deployment.admin_headers if token == "admin" else deployment.client_headers

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Case[Any]) -> dict[str, Any]:
            return {"base_url": deployment.url, "headers": headers, "timeout": 30}

        def validate_response(self, response: Any, case: Case[Any], **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)

    Workflow.run(
        settings=hypothesis.settings(
            max_examples=STATEFUL_SCENARIOS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            stateful_step_count=6,
        )
    )
