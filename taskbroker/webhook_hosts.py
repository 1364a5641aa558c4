"""Where webhooks may go: ``TASKBROKER_WEBHOOK_HOSTS`` as a set of (host, port) entries.

A host alone admits that host on its URL scheme's default port only (80 for http, 443 for
https); ``host:port`` admits that one port, whatever the scheme. So allowing a receiver never
also allows the Redis, RabbitMQ or admin ports of the same machine. IPv6 literals are written
``[::1]`` or ``[::1]:8080`` (a bare ``::1`` is the address alone). Names are compared
lowercased and IP addresses in their canonical form, so ``[0:0::1]`` is ``[::1]``; a name is
never resolved here, so ``localhost`` does not admit ``127.0.0.1``, nor the reverse.

The API checks a ``callback_url`` when a task is scheduled (api.callbacks) and the webhook
dispatcher again before each POST (timeout_daemon.webhooks), so narrowing the list also stops
deliveries already queued.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?$")
_BRACKETED = re.compile(r"^\[([^\]]+)\](?::([^:]*))?$")


class InvalidWebhookHost(ValueError):
    """An entry of TASKBROKER_WEBHOOK_HOSTS that is not ``host``, ``host:port`` or ``[ipv6]:port``."""


def canonical_host(host: str) -> str:
    """``host`` as entries and URLs are compared: an IP address canonical, a name lowercased."""
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host.lower()


@dataclass(frozen=True, slots=True)
class WebhookHost:
    host: str
    """Canonical (see ``canonical_host``)."""
    port: int | None
    """None: the URL scheme's default port only."""

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise InvalidWebhookHost(f"{entry!r}: the port must be a number from 1 to 65535")
    return int(text)


def parse_entry(entry: str) -> WebhookHost:
    """One entry: ``host``, ``host:port``, ``[ipv6]``, ``[ipv6]:port`` or a bare IPv6 address."""
    if any(c in entry for c in "/@*?# "):
        raise InvalidWebhookHost(
            f"{entry!r} is not host or host:port: list it without a scheme, path, credentials or wildcard"
        )
    if (bracketed := _BRACKETED.match(entry)) is not None:
        address, port = bracketed.groups()
        try:
            host = ipaddress.IPv6Address(address).compressed
        except ValueError:
            raise InvalidWebhookHost(f"{entry!r}: only an IPv6 address goes in brackets") from None
        return WebhookHost(host, None if port is None else _port(port, entry))
    if entry.count(":") > 1:
        try:
            return WebhookHost(ipaddress.IPv6Address(entry).compressed, None)
        except ValueError:
            raise InvalidWebhookHost(
                f"{entry!r} is not an IPv6 address: write [address]:port for an address with a port"
            ) from None
    name, colon, port = entry.partition(":")
    if not _NAME.match(name.lower()):
        raise InvalidWebhookHost(f"{entry!r} is not a host name or IP address")
    return WebhookHost(canonical_host(name), _port(port, entry) if colon else None)


@dataclass(frozen=True, slots=True)
class WebhookAllowList:
    entries: frozenset[WebhookHost]

    @classmethod
    def parse(cls, text: str) -> WebhookAllowList:
        """The comma-separated entries of ``text`` (blank ones skipped); InvalidWebhookHost
        names the first malformed one."""
        return cls(frozenset(parse_entry(part.strip()) for part in text.split(",") if part.strip()))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def admits(self, scheme: str, host: str, port: int | None) -> bool:
        """True if a URL of ``scheme`` to ``host`` (as urlsplit gives it) on ``port`` (None:
        the scheme's default) may be POSTed to."""
        default = DEFAULT_PORTS.get(scheme)
        if default is None:
            return False
        host = canonical_host(host)
        effective = default if port is None else port
        return WebhookHost(host, effective) in self.entries or (
            effective == default and WebhookHost(host, None) in self.entries
        )

    def admits_url(self, url: str) -> bool:
        """``admits`` for a whole URL; False for one that does not parse."""
        try:
            parts = urlsplit(url)
            return self.admits(parts.scheme, parts.hostname or "", parts.port)
        except ValueError:
            return False


def destination(scheme: str, host: str, port: int | None) -> str:
    """How an error names where a URL goes: ``host:port``, the port always spelled out."""
    shown = WebhookHost(canonical_host(host), port if port is not None else DEFAULT_PORTS.get(scheme))
    return str(shown)
