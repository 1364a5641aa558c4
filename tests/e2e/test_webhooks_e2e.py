"""Webhooks as operators run them: the timeout daemon process delivers a finished task's webhook."""

from __future__ import annotations

import json
import signal

import httpx
import pytest

from taskbroker.webhook_signature import SIGNATURE_HEADER, verify
from tests.support.processes import Processes
from tests.support.waiting import eventually_sync
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

SCHEDULER = "hooked"
SECRET = "e2e-webhook-secret-0123456789abcdef"


def test_timeout_daemon_process_posts_the_signed_final_task_once(
    processes: Processes, http: httpx.Client
) -> None:
    receiver = WebhookReceiver().start()
    processes.env.update(TASKBROKER_WEBHOOK_HOSTS=receiver.host_port, TASKBROKER_WEBHOOK_SECRET=SECRET)
    try:
        _, url = processes.api()
        assert http.post(f"{url}/scheduler", json={"name": SCHEDULER}).status_code == 201
        processes.worker("worker", SCHEDULER)
        daemon = processes.timeout_daemon()
        response = http.post(
            f"{url}/task/schedule",
            json={
                "scheduler": SCHEDULER,
                "attributes": {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"done": True}},
                "callback_url": receiver.url,
            },
        )
        assert response.status_code == 201, response.text
        task_id = response.json()["id"]

        eventually_sync(lambda: daemon.events("webhook.delivered"), what="the daemon to deliver the webhook")
        daemon.send(signal.SIGTERM)
        assert daemon.wait() == 0, daemon.describe()
    finally:
        receiver.close()

    (delivery,) = receiver.deliveries()
    assert verify(SECRET.encode(), delivery.headers[SIGNATURE_HEADER], delivery.body)
    posted = json.loads(delivery.body)
    assert (posted["id"], posted["state"], posted["result"]) == (task_id, "complete", {"done": True})
