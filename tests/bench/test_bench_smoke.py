"""The benchmark still runs end to end at tiny sizes and produces every figure. It asserts that
figures exist and that every task completed, never a speed (speed is for `python -m bench`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("celery")
pytest.importorskip("dramatiq")
pytest.importorskip("psutil")

from bench.report import targets

pytestmark = pytest.mark.e2e


def test_quick_benchmark_produces_every_figure_and_the_table(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    # A process of its own, as users run it: the benchmark configures logging and imports the
    # peers, which must not leak into the tests that follow.
    command = [sys.executable, "-m", "bench", "--quick", "--tasks", "200", "--requests", "100"]
    command += ["--live", "0,2000", "--output", str(output)]
    run = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert run.returncode == 0, run.stderr[-3000:]
    assert "taskbroker" in run.stdout
    results = json.loads(output.read_text())
    ours = results["ours"]
    assert ours["end_to_end"]["states"] == {"complete": 500}
    figures = ("end_to_end", "single_requests", "single_requests_client_token", "batches")
    for figure in (*figures, "async_client_single_calls"):
        assert ours[figure]["tasks_per_s"] > 0
    assert ours["async_client_vs_raw"]["median"] > 0
    assert ours["latency"]["p99_ms"] > 0
    assert ours["memory"]["bytes_per_task"] > 0
    for peer in ("dramatiq", "celery_acks_late", "celery_default", "celery_publish"):
        assert results["peers"][peer]["tasks_per_s"] > 0
    assert results["timeout_daemon"]["expired"] == 2000
    assert set(results["timeout_daemon"]["idle_sweep_ms"]) == {"0", "20000"}
    assert results["delayed_release"]["released"] == results["delayed_release"]["published"] == 2000
    assert set(results["delayed_release"]["idle_sweep_ms"]) == {"0", "20000"}
    assert results["delayed_release"]["rabbitmq_floor_seconds"] > 0
    assert all(value != "-" for _, value, _ in targets(results))


def test_redis_cpu_measure_runs_every_mode_to_the_end_of_each_task_life(tmp_path: Path) -> None:
    output = tmp_path / "redis-cpu.json"
    command = [sys.executable, "-m", "bench.redis_cpu", "--tasks", "200", "--idle", "0.5"]
    run = subprocess.run(
        [*command, "--output", str(output)], capture_output=True, text=True, timeout=300, check=False
    )

    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(output.read_text())
    assert [r["mode"] for r in figures["runs"]] == ["batch", "single"]
    for measured in figures["runs"]:
        assert measured["tasks"] == 200
        assert measured["expired_seconds"] >= measured["complete_seconds"]
        assert measured["total"]["redis_cpu_s"] > 0
        assert isinstance(measured["background_steady"], bool)
        assert set(measured["total"]) == {"redis_cpu_s", "background_cpu_s", "raw_us_per_task", "us_per_task"}
