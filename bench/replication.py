"""What replicated acceptance costs: taskbroker on a Redis Sentinel set (primary, one replica,
three Sentinels on loopback), measured with TASKBROKER_REDIS_MIN_REPLICAS 0 and then 1, the same
way the main run measures it on one Redis (end to end in batches, single-task requests)."""

from __future__ import annotations

from typing import Any

from bench.harness import progress
from bench.ours import Ours
from tests.clusters.sentinel import SentinelSet

PORTS: dict[str, Any] = {"primary_port": 6411, "replica_port": 6412, "sentinel_ports": (26411, 26412, 26413)}
"""Apart from the cluster tests' set (6401...), so a benchmark and a test run can share the machine."""


def replication_cost(*, tasks: int, requests: int, clients: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    progress("replication: starting a Redis Sentinel set (primary + replica + 3 sentinels)")
    with SentinelSet.running(**PORTS) as cluster:
        for replicas in (0, 1):
            figures[f"min_replicas_{replicas}"] = _measure(cluster, replicas, tasks, requests, clients)
    zero, one = figures["min_replicas_0"], figures["min_replicas_1"]
    figures["single_requests_ratio"] = round(
        one["single_requests"]["tasks_per_s"] / zero["single_requests"]["tasks_per_s"], 2
    )
    figures["end_to_end_ratio"] = round(
        one["end_to_end"]["tasks_per_s"] / zero["end_to_end"]["tasks_per_s"], 2
    )
    return figures


def _measure(cluster: SentinelSet, replicas: int, tasks: int, requests: int, clients: int) -> dict[str, Any]:
    env = {
        "TASKBROKER_REDIS_SENTINELS": cluster.sentinels_setting,
        "TASKBROKER_REDIS_MASTER": cluster.master_name,
        "TASKBROKER_REDIS_MIN_REPLICAS": str(replicas),
    }
    ours = Ours(redis_url=f"redis://127.0.0.1:{cluster.primary_port}/0", env=env)
    try:
        progress(f"replication: MIN_REPLICAS={replicas}: starting the API and two workers")
        ours.start_api()
        for name in ("e2e", "idle"):
            ours.register(name)
        ours.start_workers("e2e", count=2)
        progress(f"replication: MIN_REPLICAS={replicas}: {tasks:,} tasks end to end")
        end_to_end = ours.end_to_end("e2e", tasks)
        ours.single_requests("idle", min(requests, 10 * clients), clients)  # warm-up, not counted
        progress(f"replication: MIN_REPLICAS={replicas}: {requests:,} single-task requests")
        single = ours.single_requests("idle", requests, clients)
    finally:
        ours.close()
    return {"end_to_end": end_to_end, "single_requests": single}


def render_replication(figures: dict[str, Any]) -> str:
    rows = ["| MIN_REPLICAS | end to end tasks/s | single requests tasks/s | p50 ms | API CPU s/1000 |"]
    rows.append("| --- | --- | --- | --- | --- |")
    for replicas in (0, 1):
        run = figures[f"min_replicas_{replicas}"]
        single = run["single_requests"]
        rows.append(
            f"| {replicas} | {run['end_to_end']['tasks_per_s']:,} | {single['tasks_per_s']:,} "
            f"| {single['p50_ms']} | {single['api_cpu_s_per_1000']} |"
        )
    rows.append(
        f"\nMIN_REPLICAS=1 / 0: single requests {figures['single_requests_ratio']}x, "
        f"end to end {figures['end_to_end_ratio']}x"
    )
    return "\n".join(rows)
