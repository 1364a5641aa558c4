"""Settings for a command, read from the TASKBROKER_* environment: a bad value ends the command
with exit 2 and what is wrong, before anything connects."""

from __future__ import annotations

import structlog
import typer
from pydantic import ValidationError

from taskbroker.cli.output import err
from taskbroker.logs import configure_logging
from taskbroker.settings import Settings


def load_settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        err.print(f"[red]Invalid TASKBROKER_* configuration:[/red]\n{exc}")
        raise typer.Exit(2) from exc
    configure_logging(settings.log_format)
    return settings


def server_settings(process: str) -> Settings:
    """Settings for a server process, logged at start so operators see what it connects to
    (passwords in the URLs are redacted by the log pipeline)."""
    settings = load_settings()
    structlog.get_logger("taskbroker").info(
        "process.starting",
        process=process,
        redis_url=settings.redis_url,
        redis_sentinels=settings.redis_sentinels or None,
        redis_master=settings.redis_master if settings.redis_sentinels else None,
        redis_min_replicas=settings.redis_min_replicas,
        amqp_url=settings.amqp_url,
        key_prefix=settings.key_prefix,
        admin_token_set=settings.admin_token is not None,
    )
    return settings
