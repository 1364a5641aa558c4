"""How a process's Redis client is built from settings (taskbroker.backends.redis_client): one
Redis by URL, or the primary through the Sentinels, with the TLS files where they apply."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection

from taskbroker.backends import BlockingSentinelPool, redis_client
from taskbroker.settings import Settings, sentinel_addresses


def test_sentinels_are_read_as_host_port_pairs() -> None:
    assert sentinel_addresses(" 10.0.0.1:26379, sentinel-b:26380,[::1]:26381 ") == [
        ("10.0.0.1", 26379),
        ("sentinel-b", 26380),
        ("::1", 26381),
    ]
    assert sentinel_addresses("") == []


@pytest.mark.parametrize("value", ["10.0.0.1", "host:", ":26379", "host:port", "host:70000"])
def test_a_sentinel_that_is_not_host_port_is_refused_naming_the_setting(value: str) -> None:
    with pytest.raises(ValidationError, match="TASKBROKER_REDIS_SENTINELS"):
        Settings(redis_sentinels=value)


@pytest.mark.parametrize("timeout", [0, 4001])
def test_the_replicas_wait_stays_below_the_socket_timeout(timeout: int) -> None:
    with pytest.raises(ValidationError):
        Settings(redis_min_replicas_timeout=timeout)


async def test_with_sentinels_the_client_is_sentinel_managed_with_the_urls_credentials() -> None:
    settings = Settings(
        redis_url="redis://user:data-secret@ignored:1/3",
        redis_sentinels="127.0.0.1:26401,127.0.0.1:26402",
        redis_master="orders",
        redis_sentinel_password="sentinel-secret",
    )
    client = redis_client(settings)
    try:
        pool = client.connection_pool
        assert isinstance(pool, BlockingSentinelPool)
        assert pool.service_name == "orders"
        assert pool.connection_class is SentinelManagedConnection
        assert pool.connection_kwargs["password"] == "data-secret"
        assert pool.connection_kwargs["username"] == "user"
        assert pool.connection_kwargs["db"] == 3
        assert isinstance(pool.connection_kwargs["retry"], Retry)  # the asyncio one
        sentinels = pool.sentinel_manager.sentinels
        assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [26401, 26402]
        assert all(s.connection_pool.connection_kwargs["password"] == "sentinel-secret" for s in sentinels)
    finally:
        await client.aclose()


async def test_rediss_gives_tls_with_the_ca_and_client_certificate_to_the_data_nodes(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / name for name in ("ca.pem", "cert.pem", "key.pem"))
    tls = Settings(redis_tls_ca_file=ca, redis_tls_cert_file=cert, redis_tls_key_file=key)
    expected = {"ssl_ca_certs": str(ca), "ssl_certfile": str(cert), "ssl_keyfile": str(key)}

    plain = redis_client(tls.model_copy(update={"redis_url": "rediss://127.0.0.1:6380/0"}))
    managed = redis_client(
        tls.model_copy(update={"redis_url": "rediss://x/0", "redis_sentinels": "127.0.0.1:26401"})
    )
    try:
        assert plain.connection_pool.connection_class is SSLConnection
        assert managed.connection_pool.connection_class is SentinelManagedSSLConnection
        for client in (plain, managed):
            assert expected.items() <= client.connection_pool.connection_kwargs.items()
    finally:
        await plain.aclose()
        await managed.aclose()


async def test_tls_to_the_sentinels_is_its_own_switch(tmp_path: Path) -> None:
    settings = Settings(
        redis_sentinels="127.0.0.1:26401",
        redis_sentinel_tls=True,
        redis_tls_ca_file=tmp_path / "ca.pem",
    )
    client = redis_client(settings)
    try:
        (sentinel,) = client.connection_pool.sentinel_manager.sentinels  # type: ignore[attr-defined]
        assert sentinel.connection_pool.connection_class is SSLConnection
        assert sentinel.connection_pool.connection_kwargs["ssl_ca_certs"] == str(tmp_path / "ca.pem")
        assert client.connection_pool.connection_class is SentinelManagedConnection  # redis://: no TLS
    finally:
        await client.aclose()
