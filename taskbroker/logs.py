"""structlog configuration: JSON lines in production, readable colour in a terminal, and secrets
redacted from every line, ours and the libraries' (pika, uvicorn) alike."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import sys
import time
from collections.abc import MutableMapping
from typing import Any, BinaryIO
from uuid import UUID

import orjson
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


def redact_text(text: str) -> str:
    # Every pattern above needs one of these substrings; most log text has none, and three
    # substring tests cost far less than three regex substitutions on every string of every line.
    if not ("://" in text or "earer" in text or "tb_" in text):
        return text
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: REDACTED if _is_secret_key(str(k)) else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


@functools.lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    # Event keys come from code, a few dozen names: remembering the answer saves a lower() per key.
    return key.lower() in SECRET_KEYS


# Values that can hold no secret; most of an event (task id, attempt, state, durations) is these.
_PLAIN = (int, float, bool, type(None), UUID)


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: secret-named keys and secrets inside any text become [redacted]."""
    for key, value in event_dict.items():
        if _is_secret_key(key):
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            # redact_text's markers, spelled out: a generator per value costs more than the test.
            if "://" in value or "earer" in value or "tb_" in value:
                event_dict[key] = redact_text(value)
        elif not isinstance(value, _PLAIN):
            event_dict[key] = _redact(value)
    return event_dict


class _UtcIsoTimestamp:
    """A structlog processor: ``timestamp`` in ISO 8601 UTC, as ``TimeStamper(fmt="iso",
    utc=True)`` writes it (``2026-11-25T06:37:40.123456Z``), for a third of its cost: the part up
    to the seconds is formatted once per second, not once per line."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        micro = int((now - second) * 1_000_000)
        # datetime.isoformat leaves the fraction out when it is zero; so do we.
        event_dict["timestamp"] = f"{self._prefix}.{micro:06d}Z" if micro else f"{self._prefix}Z"
        return event_dict


def _orjson_bytes(obj: Any, **_ignored: Any) -> bytes:
    try:
        return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # what orjson refuses (an int past 64 bits, say) still makes a line
        return json.dumps(obj, default=str).encode()


def _orjson_text(obj: Any, **_ignored: Any) -> str:
    return _orjson_bytes(obj).decode()


class TurnFlushedBytesLogger:
    """Writes each line to a binary stream at once and flushes it at the end of the event-loop
    turn, so the lines of one turn leave in one write syscall instead of one each (a worker logs
    two lines per task). Outside a running loop (start-up, threads, the CLI) every line is
    flushed at once, as before. Lines are never reordered; a crash loses at most the current
    turn's lines, which the process was about to write anyway."""

    __slots__ = ("_file", "_flush_scheduled")

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._flush_scheduled = False

    def msg(self, message: bytes) -> None:
        self._file.write(message + b"\n")
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._file.flush()
            return
        self._flush_scheduled = True
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._file.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _SharedLogger:
    """A structlog logger factory handing every logger the same writer: one flush per turn."""

    def __init__(self, logger: TurnFlushedBytesLogger) -> None:
        self._logger = logger

    def __call__(self, *_args: Any) -> TurnFlushedBytesLogger:
        return self._logger


def configure_logging(log_format: str = "auto", level: int = logging.INFO) -> None:
    """``log_format`` is ``json``, ``console`` or ``auto`` (console when stderr is a terminal).

    JSON lines are rendered by orjson straight to bytes and written to stderr's binary buffer,
    flushed once per event-loop turn (``TurnFlushedBytesLogger``): below the level, a call is a
    no-op method of the filtering logger, and above it no stdlib ``logging`` record is built;
    the processor chain runs once per event.
    """
    console = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())
    stderr_bytes = getattr(sys.stderr, "buffer", None)
    renderer: structlog.typing.Processor
    text_renderer: structlog.typing.Processor
    logger_factory: Any
    if console:
        renderer = text_renderer = structlog.dev.ConsoleRenderer()
        logger_factory = structlog.PrintLoggerFactory(file=sys.stderr)
    elif stderr_bytes is not None:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_bytes)
        text_renderer = structlog.processors.JSONRenderer(serializer=_orjson_text)
        logger_factory = _SharedLogger(TurnFlushedBytesLogger(stderr_bytes))
    else:  # stderr replaced by a text-only stream (tests, embedding applications)
        renderer = text_renderer = structlog.processors.JSONRenderer(serializer=_orjson_text)
        logger_factory = structlog.PrintLoggerFactory(file=sys.stderr)
    shared: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        _UtcIsoTimestamp(),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=logger_factory,
        cache_logger_on_first_use=True,
    )
    # Libraries log through the standard library: send them through the same redaction.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, text_renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    # pika logs every failed connection attempt at ERROR, several lines each; our own retry
    # warnings say the same once, with what to do.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
