"""The test machine's RabbitMQ seen from the server side (rabbitmqctl): what an operator does to
it, such as closing one client's connection, which no client library can do to itself."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def _rabbitmqctl(*args: str) -> str:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not on this machine: a server-side close cannot be tested")
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def close_connection(connection_name: str) -> None:
    """Close, from the server, every connection whose client named itself ``connection_name``
    (the client sees Connection.Close 320 CONNECTION_FORCED)."""
    listing = _rabbitmqctl("list_connections", "-q", "--no-table-headers", "pid", "client_properties")
    marker = f'{{"connection_name","{connection_name}"}}'
    pids = [line.split("\t", 1)[0] for line in listing.splitlines() if marker in line]
    assert pids, f"no RabbitMQ connection named {connection_name!r}"
    for pid in pids:
        _rabbitmqctl("close_connection", pid, "closed by a taskbroker test")
