"""Quorum against classic queues, end to end, in one run on a 3-node RabbitMQ cluster
(tests/clusters/rabbitmq.py starts it on loopback, beside the machine's RabbitMQ).

    .venv/bin/python -m bench.queue_types                    # 3 alternating rounds of 5,000 tasks
    .venv/bin/python -m bench.queue_types --tasks 200 --rounds 1   # proves it runs

One API and two workers per scheduler, all given the three nodes; two schedulers, one classic,
one quorum (3 members). Rounds alternate classic and quorum (the machine's speed drifts: compare
within a round). Per round and type: tasks/s end to end and CPU per 1,000 tasks of each process,
with the three RabbitMQ nodes' CPU summed. Prints the medians and the quorum/classic ratios;
writes the JSON to bench/results/queue-types-<UTC timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.harness import progress
from bench.ours import Ours
from tests.clusters.rabbitmq import RabbitCluster, cluster_available, running_cluster

RESULTS = Path(__file__).parent / "results"
TYPES = ("classic", "quorum")


def rabbit_cpu_seconds(cluster: RabbitCluster) -> float:
    total = 0.0
    for node in cluster.nodes:
        pid = node.pid()
        if pid is not None:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def measure(cluster: RabbitCluster, tasks: int, rounds: int) -> dict[str, Any]:
    ours = Ours(amqp_url=cluster.amqp_url)
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in TYPES}
    try:
        ours.start_api()
        for queue_type in TYPES:
            ours.register(queue_type, queue_type)
            ours.start_workers(queue_type, count=2)
        for number in range(rounds):
            for queue_type in TYPES:
                progress(f"round {number + 1}/{rounds}: {tasks:,} tasks on the {queue_type} scheduler")
                rabbit_before = rabbit_cpu_seconds(cluster)
                run = ours.end_to_end(queue_type, tasks)
                rabbit = (rabbit_cpu_seconds(cluster) - rabbit_before) * 1000 / tasks
                per_process = run["cpu_s_per_1000"]
                # The other scheduler's workers sit idle: every worker counts, as one figure.
                workers = sum(v for k, v in per_process.items() if k.startswith("worker"))
                run["cpu_s_per_1000"] = {
                    "api": per_process["api"],
                    "workers (2)": round(workers, 3),
                    "rabbitmq (3 nodes)": round(rabbit, 3),
                }
                runs[queue_type].append(run)
    finally:
        progress("stopping and cleaning up")
        ours.close()
    return {"runs": runs, "summary": summarise(runs)}


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    def median(queue_type: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[queue_type]))

    def median_cpu(queue_type: str, process: str) -> float:
        return float(statistics.median(r["cpu_s_per_1000"].get(process, 0.0) for r in runs[queue_type]))

    processes = sorted({p for r in runs["classic"] for p in r["cpu_s_per_1000"]})
    summary: dict[str, Any] = {
        t: {
            "tasks_per_s": median(t, "tasks_per_s"),
            "cpu_s_per_1000": {p: median_cpu(t, p) for p in processes},
        }
        for t in TYPES
    }
    # Within each round, so the drift of the machine cancels out.
    ratios = [
        q["tasks_per_s"] / c["tasks_per_s"] for c, q in zip(runs["classic"], runs["quorum"], strict=True)
    ]
    summary["quorum_over_classic_tasks_per_s"] = round(statistics.median(ratios), 3)
    return summary


def render(summary: dict[str, Any]) -> str:
    lines = ["| | classic | quorum |", "|---|---|---|"]
    classic_rate, quorum_rate = (summary[t]["tasks_per_s"] for t in TYPES)
    lines.append(f"| tasks/s end to end | {classic_rate:,.0f} | {quorum_rate:,.0f} |")
    for process, classic in summary["classic"]["cpu_s_per_1000"].items():
        quorum = summary["quorum"]["cpu_s_per_1000"].get(process, 0.0)
        lines.append(f"| CPU s per 1,000 tasks: {process} | {classic:.3f} | {quorum:.3f} |")
    ratio = summary["quorum_over_classic_tasks_per_s"]
    lines.append(f"\nquorum/classic tasks/s (median of the rounds' ratios): {ratio}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.queue_types", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5_000, help="no-op tasks per round and queue type")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of classic and quorum")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default bench/results/...)")
    args = parser.parse_args(argv)
    if not cluster_available():
        raise SystemExit("RabbitMQ's server is not installed here: no cluster can be started")
    started = datetime.now(UTC)
    progress("starting a 3-node RabbitMQ cluster (or using TASKBROKER_TEST_RABBIT_CLUSTER's)")
    with running_cluster() as cluster:
        options = {"tasks": args.tasks, "rounds": args.rounds}
        results: dict[str, Any] = {"started_at": started.isoformat(), "options": options}
        results.update(measure(cluster, args.tasks, args.rounds))
    output = args.output or RESULTS / f"queue-types-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(render(results["summary"]))
    progress(f"wrote {output}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
