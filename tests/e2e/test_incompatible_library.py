"""A server process on a library without a private part it uses refuses to start, saying which."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.processes import ManagedProcess, Processes, free_port

pytestmark = pytest.mark.e2e

WITHOUT = {
    "pika": "import pika.adapters.base_connection as m; del m.BaseConnection._adapter_emit_data",
    "uvicorn": "import uvicorn.protocols.http.httptools_impl as m; del m.HttpToolsProtocol.on_header",
    # (FastAPI's own routes read its route context variable: without it FastAPI itself fails.)
    "FastAPI": (
        "import fastapi as m; init = m.FastAPI.__init__\n"
        "def without(self, *a, **k): init(self, *a, **k); del self._native_telemetry\n"
        "m.FastAPI.__init__ = without"
    ),
    "redis-py": "import redis.asyncio.connection as m; del m.AbstractConnection.send_packed_command",
}


@pytest.mark.parametrize("library", WITHOUT)
def test_the_api_refuses_to_start_on_a_library_without_a_part_it_uses(
    processes: Processes, tmp_path: Path, library: str
) -> None:
    program = f"{WITHOUT[library]}\nfrom taskbroker.cli import app; app()"
    api = ManagedProcess(
        "api",
        ["api", "--port", str(free_port())],
        processes.env,
        tmp_path,
        command=[sys.executable, "-c", program],
    )
    try:
        assert api.wait() == 1, api.describe()
        assert f"Cannot start: {library} " in " ".join(api.stderr().split()), api.describe()
    finally:
        api.kill()
        api.close_logs()
