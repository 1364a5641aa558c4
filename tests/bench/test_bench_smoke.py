"""The benchmark still runs end to end at tiny sizes and produces every figure. It asserts that
figures exist and that every task completed, never a speed (speed is for `python -m bench`)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("celery")
pytest.importorskip("dramatiq")
pytest.importorskip("psutil")

from bench.__main__ import main
from bench.report import targets

pytestmark = pytest.mark.e2e


def test_quick_benchmark_produces_every_figure_and_the_table(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    results = main(
        ["--quick", "--tasks", "200", "--requests", "100", "--live", "0,2000", "--output", str(output)]
    )

    assert output.exists()
    ours = results["ours"]
    assert ours["end_to_end"]["states"] == {"complete": 500}
    for figure in ("end_to_end", "single_requests", "batches"):
        assert ours[figure]["tasks_per_s"] > 0
    assert ours["latency"]["p99_ms"] > 0
    assert ours["memory"]["bytes_per_task"] > 0
    for peer in ("dramatiq", "celery_acks_late", "celery_default", "celery_publish"):
        assert results["peers"][peer]["tasks_per_s"] > 0
    assert results["timeout_daemon"]["expired"] == 2000
    assert set(results["timeout_daemon"]["idle_sweep_ms"]) == {"0", "20000"}
    assert all(value != "-" for _, value, _ in targets(results))
