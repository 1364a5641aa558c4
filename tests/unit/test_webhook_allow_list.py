"""TASKBROKER_WEBHOOK_HOSTS: which callback URLs (scheme, host and port) webhooks may reach."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from taskbroker.settings import Settings
from taskbroker.webhook_hosts import WebhookAllowList

ALLOWED = WebhookAllowList.parse(
    "example.org, Hooks.Example.org:8443, 127.0.0.1:9000, [::1]:8080, [2001:db8::1], 10.0.0.5, fe80::2"
)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.org/hook",
        "http://example.org/hook",
        "https://EXAMPLE.org:443/x",
        "http://example.org:80/x",
        "https://hooks.example.org:8443/h",
        "http://hooks.example.org:8443/h",
        "http://127.0.0.1:9000/",
        "http://[::1]:8080/",
        "http://[0:0::1]:8080/",
        "https://[2001:db8::1]/",
        "https://[2001:0db8:0:0:0:0:0:1]:443/",
        "http://10.0.0.5/",
        "http://[fe80::2]/",
    ],
)
def test_a_listed_host_on_its_listed_or_default_port_is_admitted(url: str) -> None:
    assert ALLOWED.admits_url(url)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://example.org:8080/", id="unlisted-port"),
        pytest.param("http://example.org:443/", id="https-port-over-http"),
        pytest.param("https://example.org:80/", id="http-port-over-https"),
        pytest.param("https://hooks.example.org/", id="listed-only-with-a-port"),
        pytest.param("http://127.0.0.1/", id="ip-listed-only-with-a-port"),
        pytest.param("http://127.0.0.1:9001/", id="ip-other-port"),
        pytest.param("http://[::1]/", id="ipv6-listed-only-with-a-port"),
        pytest.param("http://[::1]:8081/", id="ipv6-other-port"),
        pytest.param("http://[2001:db8::1]:22/", id="ipv6-default-only"),
        pytest.param("http://10.0.0.5:6379/", id="redis-port-of-a-listed-ip"),
        pytest.param("http://localhost:9000/", id="another-name-for-a-listed-ip"),
        pytest.param("http://sub.example.org/", id="subdomain"),
        pytest.param("http://example.org.evil.test/", id="suffix"),
        pytest.param("ftp://example.org/", id="not-http"),
        pytest.param("http://example.org:99999/", id="port-out-of-range"),
        pytest.param("//example.org/", id="no-scheme"),
    ],
)
def test_anything_else_is_refused(url: str) -> None:
    assert not ALLOWED.admits_url(url)


@pytest.mark.parametrize(
    "entry",
    [
        "https://example.org",
        "example.org/hook",
        "user@example.org",
        "*.example.org",
        "example.org:0",
        "example.org:65536",
        "example.org:http",
        "example.org:",
        "[::1",
        "[::1]x",
        "[example.org]:80",
        "[127.0.0.1]:80",
        "::zz",
        "exa mple.org",
    ],
)
def test_a_malformed_entry_stops_the_process_naming_it(entry: str) -> None:
    with pytest.raises(ValidationError, match="TASKBROKER_WEBHOOK_HOSTS"):
        Settings(webhook_hosts=f"example.net, {entry}")


def test_an_empty_list_admits_nothing() -> None:
    empty = WebhookAllowList.parse(" , ")

    assert not empty
    assert not empty.admits_url("http://127.0.0.1/")
