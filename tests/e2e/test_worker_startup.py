"""A worker that cannot serve its scheduler refuses to start, loudly, instead of idling."""

from __future__ import annotations

import httpx
import pytest

from taskbroker.runtimes.registry import installed_runtimes
from tests.support.blocking_api import BlockingApi
from tests.support.processes import Processes

pytestmark = pytest.mark.e2e


def _words(text: str) -> str:
    """The text with its line wrapping undone (the CLI wraps long messages to the console width)."""
    return " ".join(text.split())


def test_worker_for_a_scheduler_whose_runtime_is_not_installed_exits_naming_it_and_the_installed_ones(
    processes: Processes, http: httpx.Client
) -> None:
    _, url = processes.api()
    BlockingApi(http, url).register("ghostly", runtime="nonexistent")

    worker = processes.start("worker", "worker", "--scheduler", "ghostly")

    assert worker.wait() != 0
    stderr = _words(worker.stderr())
    assert "'nonexistent'" in stderr, stderr
    assert f"installed runtimes: {', '.join(installed_runtimes())}" in stderr, stderr
    assert "inline" in installed_runtimes()
    assert not worker.events("consumer.subscribed")


def test_worker_for_an_unregistered_scheduler_exits_naming_it(processes: Processes) -> None:
    worker = processes.start("worker", "worker", "--scheduler", "nowhere")

    assert worker.wait() != 0
    stderr = _words(worker.stderr())
    assert "'nowhere'" in stderr, stderr
    assert "POST /scheduler" in stderr, stderr
