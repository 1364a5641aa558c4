"""structlog configuration: JSON lines in production, readable colour in a terminal, and secrets
redacted from every line, ours and the libraries' (pika, uvicorn) alike."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

REDACTED = "[redacted]"
SECRET_KEYS = frozenset(
    {"token", "authorization", "password", "secret", "admin_token", "api_key", "cookie", "credentials"}
)
_SECRET_PATTERNS = (
    # user:password@ in any URL (redis://, amqp://, https://)
    (re.compile(r"(?P<keep>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]+@"), rf"\g<keep>{REDACTED}@"),
    (re.compile(r"(?P<keep>[Bb]earer\s+)[^\s'\",]+"), rf"\g<keep>{REDACTED}"),
    # our token format keeps its id (useful in logs), never its secret
    (re.compile(r"(?P<keep>tb_[0-9a-f]{12}_)[A-Za-z0-9_-]+"), rf"\g<keep>{REDACTED}"),
)


# Every pattern above needs one of these substrings; most log text has none, and three substring
# tests cost far less than three regex substitutions on every string of every line.
_SECRET_MARKERS = ("://", "earer", "tb_")


def redact_text(text: str) -> str:
    if not any(marker in text for marker in _SECRET_MARKERS):
        return text
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: REDACTED if str(k).lower() in SECRET_KEYS else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: secret-named keys and secrets inside any text become [redacted]."""
    for key, value in list(event_dict.items()):
        event_dict[key] = REDACTED if key.lower() in SECRET_KEYS else _redact(value)
    return event_dict


def configure_logging(log_format: str = "auto", level: int = logging.INFO) -> None:
    """``log_format`` is ``json``, ``console`` or ``auto`` (console when stderr is a terminal)."""
    console = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries log through the standard library: send them through the same redaction.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    # pika logs every failed connection attempt at ERROR, several lines each; our own retry
    # warnings say the same once, with what to do.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
