"""Secrets never reach logs or error bodies: tokens, Authorization headers, and passwords in the
Redis and RabbitMQ URLs, even when the process logs the failures those URLs cause."""

from __future__ import annotations

import httpx
import pytest

from taskbroker.logs import REDACTED, redact_secrets
from tests.conftest import ADMIN_TOKEN
from tests.support.processes import Processes, free_port

pytestmark = pytest.mark.e2e

AMQP_PASSWORD = "amqp-pass-6f1c0d"
REDIS_PASSWORD = "redis-pass-93be7a"
FORGED_SECRET = "forged-secret-5d2e8a1b9c7f"


def test_redaction_processor_hides_secret_keys_urls_bearer_headers_and_token_secrets() -> None:
    event = {
        "event": "x",
        "token": "anything",
        "headers": {"Authorization": "Bearer abc.def"},
        "url": f"amqp://guest:{AMQP_PASSWORD}@host:5672/%2F",
        "note": f"failed with tb_0123456789ab_{FORGED_SECRET} and 'Bearer zzz'",
        "nested": [{"password": "p"}],
    }

    cleaned = redact_secrets(None, "info", dict(event))

    text = str(cleaned)
    for secret in ("anything", "abc.def", AMQP_PASSWORD, FORGED_SECRET, "zzz", "'p'"):
        assert secret not in text
    assert cleaned["token"] == REDACTED
    assert cleaned["url"] == f"amqp://guest:{REDACTED}@host:5672/%2F"
    assert "tb_0123456789ab_" in cleaned["note"]  # the token id stays, for tracing


def test_api_logs_and_error_bodies_carry_no_secret(processes: Processes) -> None:
    unreachable = free_port()
    api, url = processes.api(
        env={
            "TASKBROKER_AMQP_URL": f"amqp://guest:{AMQP_PASSWORD}@127.0.0.1:{unreachable}/%2F",
            "TASKBROKER_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{unreachable}/0",
        }
    )
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    forged = {"Authorization": f"Bearer tb_0123456789ab_{FORGED_SECRET}"}
    bodies = []
    with httpx.Client(base_url=url, timeout=30) as http:
        responses = [
            http.get("/ready", headers=admin),
            http.post("/task/schedule", headers=admin, json={"scheduler": "x", "attributes": {}}),
            http.get("/schedulers", headers=forged),
            http.get("/tasks", headers={"Authorization": "Bearer not-a-real-token"}),
        ]
        bodies = [r.text for r in responses]
    assert [r.status_code for r in responses] == [503, 503, 503, 401]
    api.wait_for_event("api.unavailable")
    started = api.wait_for_event("process.starting")
    assert started["amqp_url"] == f"amqp://guest:{REDACTED}@127.0.0.1:{unreachable}/%2F"

    everything = "\n".join([api.stdout(), api.stderr(), *bodies])
    for secret in (ADMIN_TOKEN, AMQP_PASSWORD, REDIS_PASSWORD, FORGED_SECRET, "not-a-real-token"):
        assert secret not in everything, f"{secret!r} leaked:\n{everything}"
