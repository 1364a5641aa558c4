"""Completion webhooks: a final task with a callback_url is POSTed to a real HTTP server on
127.0.0.1, signed, retried with backoff, once however many dispatchers run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from taskbroker.backends import Backends
from taskbroker.settings import Settings
from taskbroker.timeout_daemon.webhooks import WebhookDispatcher
from taskbroker.webhook_signature import ATTEMPT_HEADER, DELIVERY_HEADER, SIGNATURE_HEADER, verify
from taskbroker.webhook_store import WebhookDeliveries
from tests.support.inprocess import Api, running_consumer
from tests.support.waiting import eventually
from tests.support.webhook_receiver import WebhookReceiver

SCHEDULER = "hooks"
SECRET = "test-webhook-secret-0123456789abcdef"
ECHO = {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"answer": 42}}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.close()


@pytest.fixture
def settings(settings: Settings, receiver: WebhookReceiver) -> Settings:
    """Webhooks may reach the receiver's port of 127.0.0.1, and nothing else."""
    return settings.model_copy(
        update={
            "webhook_hosts": f"{receiver.host_port}, localhost",
            "webhook_secret": SecretStr(SECRET),
            "webhook_retry_delay": 0.05,
            "webhook_max_attempts": 4,
        }
    )


async def _schedule(api: Api, callback_url: str, attributes: dict[str, Any] = ECHO) -> dict[str, Any]:
    response = await api.http.post(
        "/task/schedule",
        json={"scheduler": SCHEDULER, "attributes": attributes, "callback_url": callback_url},
    )
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()
    return task


async def _dispatch_until(dispatcher: WebhookDispatcher, done: Any, what: str) -> None:
    async def check() -> bool:
        await dispatcher.dispatch_due()
        return bool(done())

    await eventually(check, what=what)


async def test_final_task_is_posted_once_with_a_valid_signature(
    api: Api, settings: Settings, backends: Backends, receiver: WebhookReceiver
) -> None:
    await api.register(SCHEDULER)
    task = await _schedule(api, receiver.url)
    async with running_consumer(settings, backends, SCHEDULER):
        await api.wait_for_state(task["id"], "complete")
    dispatcher = WebhookDispatcher(settings=settings, deliveries=backends.webhooks)
    try:
        await _dispatch_until(dispatcher, lambda: receiver.deliveries(), "the webhook POST")
        await dispatcher.dispatch_due()
    finally:
        await dispatcher.close()

    (delivery,) = receiver.deliveries()
    assert verify(SECRET.encode(), delivery.headers[SIGNATURE_HEADER], delivery.body)
    assert not verify(b"another secret", delivery.headers[SIGNATURE_HEADER], delivery.body)
    assert delivery.headers[DELIVERY_HEADER] == task["id"]
    assert delivery.headers[ATTEMPT_HEADER] == "1"
    posted = json.loads(delivery.body)
    assert posted["id"] == task["id"]
    assert posted["state"] == "complete"
    assert posted["result"] == {"answer": 42}
    assert await WebhookDeliveries(backends.store).pending() == 0


async def test_receiver_failing_twice_gets_the_delivery_on_the_third_try(
    api: Api, settings: Settings, backends: Backends, receiver: WebhookReceiver
) -> None:
    receiver.answer(500, 503)
    await api.register(SCHEDULER)
    task = await _schedule(api, receiver.url)
    await api.http.post(f"/task/{task['id']}/abort")
    dispatcher = WebhookDispatcher(settings=settings, deliveries=backends.webhooks)
    try:
        await _dispatch_until(dispatcher, lambda: receiver.deliveries(200), "a successful delivery")
        await dispatcher.dispatch_due()
    finally:
        await dispatcher.close()

    received = receiver.deliveries()
    assert [r.status for r in received] == [500, 503, 200]
    assert [r.headers[ATTEMPT_HEADER] for r in received] == ["1", "2", "3"]
    assert {r.headers[DELIVERY_HEADER] for r in received} == {task["id"]}
    assert json.loads(received[-1].body)["state"] == "aborted"


async def _dispatch_until_none_pending(dispatcher: WebhookDispatcher, backends: Backends, what: str) -> None:
    deliveries = WebhookDeliveries(backends.store)

    async def nothing_pending() -> bool:
        await dispatcher.dispatch_due()
        return await deliveries.pending() == 0

    await eventually(nothing_pending, what=what)


async def test_delivery_gives_up_after_the_attempt_limit(
    api: Api, settings: Settings, backends: Backends, receiver: WebhookReceiver
) -> None:
    receiver.answer(*(500,) * 10)
    await api.register(SCHEDULER)
    task = await _schedule(api, receiver.url)
    await api.http.post(f"/task/{task['id']}/abort")
    dispatcher = WebhookDispatcher(settings=settings, deliveries=backends.webhooks)
    try:
        await _dispatch_until_none_pending(dispatcher, backends, "the dispatcher to give up")
    finally:
        await dispatcher.close()

    assert len(receiver.deliveries()) == settings.webhook_max_attempts


async def test_a_redirect_is_not_followed_but_retried_as_a_failure(
    api: Api, settings: Settings, backends: Backends, receiver: WebhookReceiver
) -> None:
    elsewhere = WebhookReceiver().start()
    try:
        receiver.answer(*(307,) * 10, headers={"Location": elsewhere.url})
        await api.register(SCHEDULER)
        task = await _schedule(api, receiver.url)
        await api.http.post(f"/task/{task['id']}/abort")
        dispatcher = WebhookDispatcher(settings=settings, deliveries=backends.webhooks)
        try:
            await _dispatch_until_none_pending(dispatcher, backends, "the dispatcher to give up")
        finally:
            await dispatcher.close()
    finally:
        elsewhere.close()

    assert [r.status for r in receiver.deliveries()] == [307] * settings.webhook_max_attempts
    assert elsewhere.deliveries() == []


async def test_a_queued_delivery_whose_port_the_allow_list_no_longer_admits_is_dropped_unsent(
    api: Api, settings: Settings, backends: Backends, receiver: WebhookReceiver
) -> None:
    await api.register(SCHEDULER)
    task = await _schedule(api, receiver.url)
    await api.http.post(f"/task/{task['id']}/abort")
    narrowed = settings.model_copy(update={"webhook_hosts": "127.0.0.1"})  # its default port only
    dispatcher = WebhookDispatcher(settings=narrowed, deliveries=backends.webhooks)
    try:
        await _dispatch_until_none_pending(dispatcher, backends, "the dispatcher to drop the delivery")
    finally:
        await dispatcher.close()

    assert receiver.deliveries() == []


async def test_two_dispatchers_deliver_each_webhook_once(
    api: Api, settings: Settings, backends: Backends, receiver: WebhookReceiver
) -> None:
    receiver.answer(pause=0.05)
    await api.register(SCHEDULER)
    tasks = [await _schedule(api, receiver.url) for _ in range(12)]
    for task in tasks:
        await api.http.post(f"/task/{task['id']}/abort")
    dispatchers = [
        WebhookDispatcher(settings=settings, deliveries=backends.webhooks, batch=4) for _ in range(2)
    ]
    deliveries = WebhookDeliveries(backends.store)
    try:

        async def all_delivered() -> bool:
            await asyncio.gather(*(d.dispatch_due() for d in dispatchers))
            return await deliveries.pending() == 0

        await eventually(all_delivered, what="every webhook delivered")
    finally:
        for dispatcher in dispatchers:
            await dispatcher.close()

    delivered = [r.headers[DELIVERY_HEADER] for r in receiver.deliveries()]
    assert sorted(delivered) == sorted(t["id"] for t in tasks)


async def test_a_task_without_callback_url_queues_no_delivery(api: Api, backends: Backends) -> None:
    await api.register(SCHEDULER)
    task = await api.schedule(SCHEDULER, ECHO)
    await api.http.post(f"/task/{task['id']}/abort")

    assert await WebhookDeliveries(backends.store).pending() == 0
    assert (await api.task(task["id"]))["callback_url"] is None


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        pytest.param("http://example.org/hook", "not in TASKBROKER_WEBHOOK_HOSTS", id="host-not-allowed"),
        pytest.param("http://127.0.0.1/hook", "'127.0.0.1:80' is not in", id="allowed-host-default-port"),
        pytest.param(
            "http://127.0.0.1:6379/hook", "'127.0.0.1:6379' is not in", id="allowed-host-other-port"
        ),
        pytest.param("http://localhost:5672/hook", "'localhost:5672' is not in", id="port-of-a-bare-host"),
        pytest.param("https://localhost:80/hook", "'localhost:80' is not in", id="http-port-over-https"),
        pytest.param("http://[::1]:8080/hook", "'[::1]:8080' is not in", id="ipv6"),
        pytest.param("ftp://127.0.0.1/hook", "http:// or https://", id="not-http"),
        pytest.param("/hook", "http:// or https://", id="relative"),
        pytest.param("http://user:pw@127.0.0.1/hook", "credentials", id="credentials"),
        pytest.param("http://127.0.0.1:99999/hook", "not a valid URL", id="bad-port"),
        pytest.param("http://127.0.0.1/" + "x" * 3000, "2048", id="too-long"),
    ],
)
async def test_callback_url_off_the_allow_list_or_malformed_is_422(
    api: Api, url: str, complaint: str
) -> None:
    await api.register(SCHEDULER)

    response = await api.http.post(
        "/task/schedule", json={"scheduler": SCHEDULER, "attributes": ECHO, "callback_url": url}
    )

    assert response.status_code == 422, response.text
    assert complaint in response.text


async def test_a_batch_with_one_callback_to_an_unlisted_port_is_refused_whole(
    api: Api, receiver: WebhookReceiver
) -> None:
    await api.register(SCHEDULER)
    listed = {"scheduler": SCHEDULER, "attributes": ECHO, "callback_url": receiver.url}
    unlisted = {**listed, "callback_url": "http://127.0.0.1:6379/hook"}

    response = await api.http.post("/task/schedule/batch", json={"tasks": [listed, unlisted]})

    assert response.status_code == 422, response.text
    assert "'127.0.0.1:6379' is not in TASKBROKER_WEBHOOK_HOSTS" in response.text
    assert (await api.http.get("/tasks")).json()["tasks"] == []


async def test_callback_url_with_an_empty_allow_list_is_422_naming_the_setting(
    settings: Settings, real: Backends
) -> None:
    from tests.support.inprocess import api_client

    closed = settings.model_copy(update={"webhook_hosts": ""})
    async with api_client(closed, real) as api:
        await api.register(SCHEDULER)
        response = await api.http.post(
            "/task/schedule",
            json={"scheduler": SCHEDULER, "attributes": ECHO, "callback_url": "http://127.0.0.1/hook"},
        )

    assert response.status_code == 422
    assert "TASKBROKER_WEBHOOK_HOSTS" in response.text
