"""Which callback URLs a task may carry: http(s) only, to a host and port on the operator's
allow-list (taskbroker.webhook_hosts), so the API cannot be made to POST into a network, or to
a port of an allowed machine, its operators did not choose (SSRF)."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi.exceptions import RequestValidationError

from taskbroker.settings import Settings
from taskbroker.webhook_hosts import destination


def _invalid(message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", "callback_url"), "msg": message, "type": "value_error"}])


def check_callback_url(url: str, settings: Settings) -> None:
    """422 unless ``url`` is an http(s) URL without credentials to an allow-listed host and port, and
    the deployment can sign deliveries."""
    allowed = settings.webhook_allow_list
    if not allowed:
        raise _invalid(
            "webhooks are off: the operator must list the hosts callbacks may reach in "
            "TASKBROKER_WEBHOOK_HOSTS (comma-separated host or host:port entries)"
        )
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise _invalid(f"callback_url is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not host:
        raise _invalid("callback_url must be an absolute http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise _invalid("callback_url must not carry credentials: verify the signature instead")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise _invalid("callback_url must not contain whitespace or control characters")
    if not allowed.admits(parts.scheme, host, port):
        raise _invalid(
            f"callback_url destination {destination(parts.scheme, host, port)!r} is not in "
            "TASKBROKER_WEBHOOK_HOSTS: a host listed without a port admits only its scheme's "
            "default port (80 for http, 443 for https); other ports must be listed as host:port"
        )
    if settings.webhook_secret is None:
        raise _invalid("webhooks need TASKBROKER_WEBHOOK_SECRET set, to sign deliveries")
