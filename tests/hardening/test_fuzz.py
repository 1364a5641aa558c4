"""Property-based fuzzing of the whole HTTP API from its own OpenAPI schema, against the hardening
deployment (real processes on the real servers), with schemathesis as an outsider runs it: its
command line, every check it has, every phase (examples, coverage, fuzzing, and the stateful
phase, which chains calls through the links it infers: schedule a task, follow its Location,
abort it...), once with an admin token, once with a client token and once with none. Any 5xx,
any answer the schema does not declare, any invalid input accepted or valid input refused fails
the test; tests/hardening/schemathesis.toml says the few rules JSON Schema cannot express.

Examples per operation: TASKBROKER_FUZZ_EXAMPLES (default 50 in CI); TASKBROKER_FUZZ_SEED picks
other values than CI's; TASKBROKER_FUZZ_PATHS (a regular expression) fuzzes only the paths it
matches, for a quick run over the endpoints one has changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.hardening.conftest import Deployment

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("TASKBROKER_FUZZ_EXAMPLES", "50"))
SEED = os.environ.get("TASKBROKER_FUZZ_SEED", "20261201")
PATHS = os.environ.get("TASKBROKER_FUZZ_PATHS", "")
CONFIG = Path(__file__).with_name("schemathesis.toml")
RUN_DEADLINE = 900.0


def _schemathesis() -> list[str]:
    script = Path(sys.executable).parent / "schemathesis"
    return [str(script)] if script.exists() else [sys.executable, "-m", "schemathesis.cli"]


@pytest.fixture(scope="module")
def schema_file(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The schema the deployment serves (it needs a token), for runs with any token or none."""
    with httpx.Client(base_url=deployment.url, headers=deployment.admin_headers, timeout=30) as http:
        response = http.get("/openapi.json")
    assert response.status_code == 200, response.text
    path = tmp_path_factory.mktemp("schema") / "openapi.json"
    path.write_text(json.dumps(response.json()))
    return path


# The admin run last: its stateful phase may revoke tokens and delete schedulers it finds.
@pytest.mark.parametrize("token", ["none", "client", "admin"])
def test_every_check_and_phase_pass(
    token: str, deployment: Deployment, schema_file: Path, tmp_path: Path
) -> None:
    headers = {"admin": deployment.admin_headers, "client": deployment.client_headers, "none": {}}[token]
    command = [
        *_schemathesis(),
        "--config-file",
        str(CONFIG),
        "run",
        str(schema_file),
        "--url",
        deployment.url,
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        SEED,
        # Event streams never end by themselves (heartbeats keep them open), which a
        # request/response fuzzer cannot read; tests/integration/test_events.py covers them.
        "--exclude-path-regex",
        "/events$",
        "--no-color",
    ]
    if PATHS:
        command += ["--include-path-regex", PATHS]
    for name, value in headers.items():
        command += ["--header", f"{name}: {value}"]

    # In a directory of its own: schemathesis keeps a cache of what it found where it runs.
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=RUN_DEADLINE, check=False, cwd=tmp_path
    )

    report = finished.stdout + finished.stderr
    print(report[-4000:])
    assert finished.returncode == 0, report[-20000:]
    assert "Tested:" in report, "schemathesis tested nothing"
