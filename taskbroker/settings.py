"""One settings object for every process, read from ``TASKBROKER_*`` environment variables."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from taskbroker.models import QueueType
from taskbroker.names import KEY_PREFIX_PATTERN
from taskbroker.webhook_hosts import InvalidWebhookHost, WebhookAllowList

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
MAX_DURATION = timedelta(days=36500)

ApiDocsAccess = Literal["token", "public", "off"]
"""Who may read the API's schema and docs pages: token holders (any role), anyone, no one."""


class Settings(BaseSettings):
    """Configuration shared by the API, the consumers and the timeout daemon.

    docs/configuration.md documents each field; keep the two in step (tests/unit/test_docs.py checks).
    """

    model_config = SettingsConfigDict(env_prefix="TASKBROKER_", extra="ignore")

    redis_url: str = DEFAULT_REDIS_URL
    amqp_url: str = Field(
        default=DEFAULT_AMQP_URL,
        description="One RabbitMQ URL, or the nodes of a cluster as comma-separated URLs.",
    )

    # Redis with Sentinel, TLS and replicated writes (docs/operations.md, "Redis with Sentinel")
    redis_sentinels: str = Field(
        default="",
        description="Comma-separated host:port of Redis Sentinels; set, every process finds the "
        "primary through them and follows a failover (the URL's host and port are then unused).",
    )
    redis_master: str = Field(default="taskbroker", min_length=1, description="The Sentinels' master name.")
    redis_sentinel_password: SecretStr | None = Field(
        default=None, description="The Sentinels' own password (requirepass of sentinel.conf)."
    )
    redis_sentinel_tls: bool = Field(default=False, description="Speak TLS to the Sentinels.")
    redis_tls_ca_file: Path | None = Field(
        default=None, description="CA certificates that verify the Redis servers' (and Sentinels') TLS."
    )
    redis_tls_cert_file: Path | None = Field(default=None, description="Client certificate for TLS.")
    redis_tls_key_file: Path | None = Field(default=None, description="The client certificate's key.")
    redis_min_replicas: int = Field(
        default=0,
        ge=0,
        description="Replicas that must have an accepted write (WAIT) before the API answers 2xx; "
        "fewer within the timeout: 503.",
    )
    redis_min_replicas_timeout: int = Field(
        default=1000,
        ge=1,
        le=4000,
        description="Milliseconds the API waits for those replicas (below the 5 s Redis socket timeout).",
    )
    queue_type: QueueType = Field(
        default=QueueType.CLASSIC, description="The queue type of a scheduler registered without one."
    )
    quorum_delivery_limit: int = Field(
        default=20,
        ge=0,
        description="Deliveries of one message a quorum queue allows before it drops it (0: no "
        "limit); the task is then republished by the timeout daemon's reconciliation.",
    )
    key_prefix: str = Field(default="taskbroker", pattern=KEY_PREFIX_PATTERN)
    default_timeout: timedelta = timedelta(hours=6)
    retention: timedelta = timedelta(hours=1)
    failed_retention: timedelta = Field(
        default=timedelta(days=7),
        description="How long failed and timed-out tasks are kept (completed and aborted ones: "
        "retention), so that an operator can find and re-run them.",
    )
    lease: float = Field(
        default=30.0, gt=0, description="Seconds a consumer's claim on a task lasts without a heartbeat."
    )
    max_attempts: int = Field(default=3, ge=1)
    hold_limit: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a delivery may wait for a free slot before it is handed back to the queue.",
    )
    sweep_interval: float = Field(default=1.0, gt=0)
    republish_after: float = Field(
        default=120.0,
        gt=0,
        description=(
            "Seconds a pending task may go unclaimed after its message was published (or after it "
            "was stored, if that publish was never confirmed) before the timeout daemon publishes it "
            "again; each later republish of the same task waits twice as long."
        ),
    )
    shutdown_grace: float = Field(default=30.0, ge=0)
    max_batch: int = Field(default=1000, ge=1)
    log_format: str = Field(default="auto", pattern="^(auto|json|console)$")

    # Security (docs/security.md)
    admin_token: SecretStr | None = Field(
        default=None, description="A bootstrap admin token; at least 32 characters."
    )
    admin_token_file: Path | None = Field(
        default=None, description="A file holding the admin token (Docker/Kubernetes secrets)."
    )
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_attributes_bytes: int = Field(default=64 * 1024, ge=64)
    max_attributes_depth: int = Field(default=32, ge=1)
    max_timeout: timedelta = timedelta(days=7)
    api_docs: ApiDocsAccess = Field(
        default="token",
        description="Who may read /openapi.json, /docs and /redoc: any token holder, anyone, or no one.",
    )
    http_max_header_bytes: int = Field(
        default=32 * 1024, ge=1024, description="Largest request line and headers (431 above)."
    )
    http_header_timeout: float = Field(
        default=10.0, gt=0, description="Seconds from a request's first byte to the end of its headers."
    )
    http_body_timeout: float = Field(
        default=30.0, gt=0, description="Seconds from the end of a request's headers to the end of its body."
    )
    http_keep_alive_timeout: float = Field(
        default=5.0, gt=0, description="Seconds a connection may stay open without a request in flight."
    )
    schedule_rate_limit: int = Field(
        default=0, ge=0, description="Tasks one token may schedule per minute; 0 turns the limit off."
    )

    # Recurring schedules (docs/schedules.md)
    schedule_grace: timedelta = Field(
        default=timedelta(minutes=5),
        description="How late a missed fire time may still be run (once, coalesced) when a firer returns.",
    )
    schedule_poll: float = Field(default=1.0, gt=0, description="Seconds between a schedule firer's checks.")
    schedule_history: int = Field(default=100, ge=1, le=10000, description="Runs kept per schedule.")

    # Webhooks (docs/api.md, "Webhooks")
    webhook_hosts: str = Field(
        default="",
        description="Comma-separated host or host:port entries a task's callback_url may reach; "
        "a host alone means its scheme's default port only; empty: none (taskbroker.webhook_hosts).",
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="The HMAC-SHA256 key signing webhook deliveries; required for webhooks."
    )
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_retry_delay: float = Field(
        default=1.0, gt=0, description="Seconds before the first retry; each retry waits twice as long."
    )
    webhook_timeout: float = Field(default=10.0, gt=0, description="Seconds one webhook POST may take.")

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels_parse(cls, value: str) -> str:
        sentinel_addresses(value)
        return value

    @field_validator("webhook_hosts")
    @classmethod
    def _webhook_hosts_parse(cls, value: str) -> str:
        try:
            WebhookAllowList.parse(value)
        except InvalidWebhookHost as exc:
            raise ValueError(f"TASKBROKER_WEBHOOK_HOSTS: {exc}") from exc
        return value

    @property
    def webhook_allow_list(self) -> WebhookAllowList:
        """Parsed on each use (a few entries): a settings copy with other hosts is never stale."""
        return WebhookAllowList.parse(self.webhook_hosts)

    # Task events (docs/events.md)
    events_max_length: int = Field(
        default=100_000, ge=100, description="Most entries the event stream keeps (trimmed approximately)."
    )
    events_retention: float = Field(
        default=3600.0, gt=0, description="Seconds events stay readable for a listener that resumes."
    )
    streams_per_token: int = Field(
        default=20,
        ge=1,
        description="Event streams one token may hold open on one API process (429 beyond): one "
        "client cannot take the process's memory and loop time from the others.",
    )
    streams_per_process: int = Field(
        default=1000, ge=1, description="Event streams one API process holds open at most (429 beyond)."
    )
    stream_token_check: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Seconds between re-checks of the tokens of open event streams: a revoked or "
        "expired token's streams end within this long (one Redis call per process per check).",
    )

    @model_validator(mode="after")
    def _read_admin_token_file(self) -> Settings:
        if self.admin_token is None and self.admin_token_file is not None:
            try:
                text = self.admin_token_file.read_text().strip()
            except OSError as exc:
                raise ValueError(f"TASKBROKER_ADMIN_TOKEN_FILE cannot be read: {exc}") from exc
            self.admin_token = SecretStr(text)
        if self.admin_token is not None and len(self.admin_token.get_secret_value()) < 32:
            raise ValueError(
                "TASKBROKER_ADMIN_TOKEN must be at least 32 characters "
                "(generate one with: openssl rand -hex 32)"
            )
        return self

    @field_validator(
        "default_timeout", "retention", "failed_retention", "max_timeout", "schedule_grace", mode="before"
    )
    @classmethod
    def _seconds(cls, value: object) -> object:
        """Environment variables are text: "600" means seconds, as an ISO-8601 "PT10M" would."""
        if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
            return float(value)
        return value

    @field_validator("default_timeout", "retention", "failed_retention", "max_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be positive")
        return value

    @field_validator("default_timeout", "retention", "failed_retention", "max_timeout", "schedule_grace")
    @classmethod
    def _at_most_a_century(cls, value: timedelta) -> timedelta:
        """Added to request date-times, which the API bounds so that a century cannot overflow
        (taskbroker.models.LATEST)."""
        if value > MAX_DURATION:
            raise ValueError("must be at most 100 years (P36500D)")
        return value

    @field_validator("amqp_url")
    @classmethod
    def _amqp_urls_parse(cls, value: str) -> str:
        amqp_urls(value)
        return value

    @property
    def amqp_urls(self) -> list[str]:
        """The RabbitMQ nodes ``amqp_url`` lists, in its order."""
        return amqp_urls(self.amqp_url)

    @property
    def heartbeat_interval(self) -> float:
        """Renew leases three times per lease, so one lost heartbeat never lapses a live claim."""
        return self.lease / 3


def sentinel_addresses(value: str) -> list[tuple[str, int]]:
    """The (host, port) pairs of a TASKBROKER_REDIS_SENTINELS value ("" for none)."""
    addresses = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"TASKBROKER_REDIS_SENTINELS: {entry!r} is not host:port")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def amqp_urls(text: str) -> list[str]:
    """The URLs of a comma-separated ``TASKBROKER_AMQP_URL``; ValueError, naming the entry, for
    one that is not an amqp:// or amqps:// URL (a comma never occurs in such a URL unescaped)."""
    urls = [u.strip() for u in text.split(",")]
    for number, url in enumerate(urls, start=1):
        if not url.startswith(("amqp://", "amqps://")):  # not quoted: it may hold a password
            raise ValueError(
                f"TASKBROKER_AMQP_URL: entry {number} of {len(urls)} is not an amqp:// or "
                "amqps:// URL (list a cluster's nodes as comma-separated URLs)"
            )
    return urls
