"""The webhook dispatcher: POSTs each final task with a ``callback_url`` to that URL, signed.

Runs beside the sweeps in every timeout daemon (and in `taskbroker dev`). Any number may run:
a delivery is claimed atomically under a short lease before its POST, so two dispatchers never
POST one at the same time. Delivery is at least once: a dispatcher that dies after the receiver
answered but before recording it leaves the delivery due again once its claim runs out, so a
receiver dedupes on the delivery id header (the task id, the same on every attempt). Failures are
retried with exponential backoff up to TASKBROKER_WEBHOOK_MAX_ATTEMPTS, then dropped with a log
event.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import structlog

from taskbroker.lifecycle import repeat_until_stopped
from taskbroker.settings import Settings
from taskbroker.webhook_signature import ATTEMPT_HEADER, DELIVERY_HEADER, SIGNATURE_HEADER, sign
from taskbroker.webhook_store import DueWebhook, WebhookDeliveries

log = structlog.get_logger("taskbroker.webhooks")

MAX_RETRY_DELAY = 300.0
USER_AGENT = "taskbroker-webhooks/0.1"


@dataclass(frozen=True)
class DispatchReport:
    delivered: int
    failed: int
    dropped: int


class WebhookDispatcher:
    def __init__(
        self,
        *,
        settings: Settings,
        deliveries: WebhookDeliveries,
        batch: int = 50,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if settings.webhook_secret is None:
            raise ValueError("the webhook dispatcher needs TASKBROKER_WEBHOOK_SECRET to sign deliveries")
        self._settings = settings
        self._allowed = settings.webhook_allow_list
        self._secret = settings.webhook_secret.get_secret_value().encode()
        self._deliveries = deliveries
        self._batch = batch
        # A claim outlasts the slowest POST, so it never lapses while its dispatcher still waits.
        self._lease = settings.webhook_timeout * 2 + 5
        self._client = httpx.AsyncClient(
            timeout=settings.webhook_timeout,
            follow_redirects=False,  # a redirect could lead off the allow-list
            transport=transport,
            headers={"User-Agent": USER_AGENT},
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def dispatch_due(self) -> DispatchReport:
        """One pass: claim what is due (in batches) and POST it all concurrently."""
        delivered = failed = dropped = 0
        while True:
            claimed = await self._deliveries.claim(lease=self._lease, limit=self._batch)
            for task_id in claimed.expired:
                log.warning("webhook.gave_up", task_id=task_id, reason="the task expired before delivery")
            dropped += len(claimed.expired)
            outcomes = await asyncio.gather(*(self._deliver(d) for d in claimed.due))
            delivered += outcomes.count("delivered")
            failed += outcomes.count("failed")
            dropped += outcomes.count("dropped")
            if len(claimed.due) + len(claimed.expired) < self._batch:
                return DispatchReport(delivered=delivered, failed=failed, dropped=dropped)

    async def _deliver(self, due: DueWebhook) -> str:
        task = due.task
        task_id = str(task.id)
        url = task.callback_url or ""
        bound = log.bind(
            task_id=task_id, scheduler=task.scheduler, attempt=due.attempt, host=urlsplit(url).hostname
        )
        # Checked again at delivery (the API checked at scheduling): a list narrowed since then
        # stops what is already queued. Redirects are never followed, so this is the only URL.
        if not self._allowed.admits_url(url):
            await self._deliveries.done(task_id)
            bound.warning(
                "webhook.gave_up", reason="its host and port are no longer in TASKBROKER_WEBHOOK_HOSTS"
            )
            return "dropped"
        body = task.model_dump_json().encode()
        headers = {
            "Content-Type": "application/json",
            DELIVERY_HEADER: task_id,
            ATTEMPT_HEADER: str(due.attempt),
            SIGNATURE_HEADER: sign(self._secret, body),
        }
        try:
            response = await self._client.post(url, content=body, headers=headers)
            problem = None if response.is_success else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            await self._deliveries.done(task_id)
            bound.info("webhook.delivered", state=task.state)
            return "delivered"
        if due.attempt >= self._settings.webhook_max_attempts:
            await self._deliveries.done(task_id)
            bound.warning("webhook.gave_up", error=problem, reason="every attempt failed")
            return "dropped"
        delay = min(MAX_RETRY_DELAY, self._settings.webhook_retry_delay * 2 ** (due.attempt - 1))
        await self._deliveries.retry_at(task_id, time.time() + delay)
        bound.info("webhook.failed", error=problem, retry_in=round(delay, 2))
        return "failed"

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch every ``sweep_interval`` until ``stop``; a pass in progress completes."""
        log.info("webhook_dispatcher.started", interval=self._settings.sweep_interval)
        try:
            await repeat_until_stopped(
                self.dispatch_due,
                interval=self._settings.sweep_interval,
                stop=stop,
                failed_event="webhook_dispatcher.pass_failed",
            )
        finally:
            await self.close()
            log.info("webhook_dispatcher.stopped")


async def run_dispatcher_if_configured(
    settings: Settings, deliveries: WebhookDeliveries, stop: asyncio.Event
) -> None:
    """Run the dispatcher when deliveries can be signed; without a secret there is nothing to do
    (the API refuses callback URLs then)."""
    if settings.webhook_secret is None:
        log.info("webhook_dispatcher.disabled", reason="TASKBROKER_WEBHOOK_SECRET is not set")
        return
    await WebhookDispatcher(settings=settings, deliveries=deliveries).run(stop)
