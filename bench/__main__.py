"""Run the whole benchmark: ours, the peers, the timeout daemon; print the table, write the JSON.

    .venv/bin/python -m bench                 # the full run (~10-15 minutes on 2 cores)
    .venv/bin/python -m bench --quick         # a smoke run at tiny sizes (about a minute)
    .venv/bin/python -m bench --tasks 20000 --skip-peers
    .venv/bin/python -m bench --sentinel      # only: ours on a Sentinel set, MIN_REPLICAS 0 vs 1

Progress goes to stderr, the table to stdout, the figures to bench/results/<UTC timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.daemon import timeout_daemon_costs
from bench.delayed import delayed_release_costs
from bench.harness import REPO, machine_speed, progress, redis_client
from bench.ours import Ours
from bench.peers import celery_end_to_end, celery_publish_rate, dramatiq_end_to_end
from bench.report import render

RESULTS = Path(__file__).parent / "results"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves the benchmark runs")
    parser.add_argument("--tasks", type=int, default=10_000, help="no-op tasks end to end, per system")
    parser.add_argument("--requests", type=int, default=5_000, help="single-task requests (and apply_async)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent HTTP clients for single requests")
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating rounds of single requests and apply_async"
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="offered requests/s for the latency run")
    parser.add_argument("--rate-seconds", type=float, default=10.0, help="length of the latency run")
    parser.add_argument("--memory-tasks", type=int, default=10_000, help="live tasks for Redis memory")
    parser.add_argument("--expire", type=int, default=100_000, help="due tasks the daemon expires")
    parser.add_argument(
        "--live", default="0,1000000", help="live task counts for the idle sweep cost, comma separated"
    )
    parser.add_argument("--release", type=int, default=100_000, help="due delayed tasks the daemon releases")
    parser.add_argument(
        "--delayed-waiting",
        default="0,1000000",
        help="delayed task counts for the idle sweep, comma separated",
    )
    parser.add_argument("--skip-peers", action="store_true", help="measure taskbroker only")
    parser.add_argument("--skip-daemon", action="store_true", help="leave out the timeout daemon")
    parser.add_argument(
        "--api-workers", type=int, default=1, help="API processes (`taskbroker api --workers N`)"
    )
    parser.add_argument(
        "--sentinel",
        action="store_true",
        help="measure only the cost of TASKBROKER_REDIS_MIN_REPLICAS=1: ours on a Redis Sentinel set "
        "(started on loopback ports 6411/6412/26411-26413), with MIN_REPLICAS 0 then 1",
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default bench/results/...)")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.requests, args.rate, args.rate_seconds, args.rounds = 500, 300, 200.0, 1.0, 1
        args.memory_tasks, args.expire, args.live = 1000, 2000, "0,20000"
        args.release, args.delayed_waiting = 2000, "0,20000"
    return args


def environment() -> dict[str, Any]:
    client = redis_client()
    try:
        redis_version = client.info("server")["redis_version"]
    finally:
        client.close()
    rabbitmq = subprocess.run(
        ["rabbitmqctl", "version"], capture_output=True, text=True, check=False, timeout=30
    ).stdout.strip()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False, cwd=REPO
    ).stdout.strip()
    packages = ("taskbroker", "celery", "kombu", "dramatiq", "pika", "redis", "uvicorn", "fastapi")
    return {
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "redis": redis_version,
        "rabbitmq": rabbitmq or "unknown",
        "commit": commit,
        "versions": {name: _version(name) for name in packages},
        "speed": machine_speed(),
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def measure_ours(args: argparse.Namespace) -> dict[str, Any]:
    ours = Ours()
    figures: dict[str, Any] = {}
    try:
        progress("taskbroker: starting the API")
        ours.start_api(workers=args.api_workers)
        for name in ("e2e", "idle"):
            ours.register(name)
        ours.start_workers("e2e", count=2)
        progress(f"taskbroker: {args.tasks:,} tasks end to end (batches of 1,000)")
        figures["end_to_end"] = ours.end_to_end("e2e", args.tasks)
        figures.update(scheduling_rounds(ours, args))
        progress(f"taskbroker: {args.tasks:,} tasks scheduled in batches")
        figures["batches"] = ours.batch_schedule("idle", args.tasks)
        progress(f"taskbroker: latency at {args.rate:,.0f} requests/s for {args.rate_seconds:g} s")
        figures["latency"] = ours.latency_at_rate("idle", args.rate, args.rate_seconds)
        ours.register("memory")
        progress(f"taskbroker: Redis memory of {args.memory_tasks:,} live tasks")
        figures["memory"] = ours.memory_per_task("memory", args.memory_tasks)
    finally:
        progress("taskbroker: stopping and cleaning up")
        ours.close()
    return figures


def scheduling_rounds(ours: Ours, args: argparse.Namespace) -> dict[str, Any]:
    """Single-task scheduling, ours (admin token, then a client token) and Celery's apply_async,
    in alternating rounds: this machine's speed drifts by up to 2x within minutes (other tenants),
    so each ratio pairs measurements taken seconds apart, and the median round is reported.
    Ours schedules onto a scheduler nobody consumes, as apply_async runs without a worker."""
    token = ours.client_token("idle")
    # Each path's first uses (connections, caches filled on first call) stay outside the rounds,
    # as Celery's first apply_async (connect, declare) stays outside its timing.
    warm_up = min(args.requests, 10 * args.clients)
    ours.single_requests("idle", warm_up, args.clients)
    ours.single_requests("idle", warm_up, args.clients, token=token)
    # Our AsyncClient costs several times the raw loop's CPU per call: fewer calls keep a round short.
    client_calls = max(args.clients, args.requests // 5)
    rounds: list[dict[str, Any]] = []
    for number in range(1, args.rounds + 1):
        progress(f"scheduling round {number}/{args.rounds}: {args.requests:,} single-task requests each")
        round_: dict[str, Any] = {
            "ours": ours.single_requests("idle", args.requests, args.clients),
            "ours_client_token": ours.single_requests("idle", args.requests, args.clients, token=token),
            "async_client": ours.async_client_calls("idle", client_calls, args.clients, token=token),
        }
        if not args.skip_peers:
            round_["celery"] = celery_publish_rate(args.requests)
        rounds.append(round_)

    def median_round(name: str) -> dict[str, Any]:
        ordered = sorted((r[name] for r in rounds), key=lambda f: float(f["tasks_per_s"]))
        return dict(ordered[len(ordered) // 2])

    figures: dict[str, Any] = {
        "single_requests": median_round("ours"),
        "single_requests_client_token": median_round("ours_client_token"),
        "async_client_single_calls": median_round("async_client"),
        "scheduling_rounds": rounds,
    }
    # Our Python client against raw HTTP on the same token, paired within each round.
    client_ratios = sorted(
        round(r["async_client"]["tasks_per_s"] / r["ours_client_token"]["tasks_per_s"], 2) for r in rounds
    )
    figures["async_client_vs_raw"] = {
        "per_round": client_ratios,
        "median": client_ratios[len(client_ratios) // 2],
    }
    if not args.skip_peers:
        figures["celery_publish"] = median_round("celery")
        pairs = (("ours", "single_vs_apply_async"), ("ours_client_token", "client_token_vs_apply_async"))
        for name, key in pairs:
            ratios = sorted(round(r[name]["tasks_per_s"] / r["celery"]["tasks_per_s"], 2) for r in rounds)
            figures[key] = {"per_round": ratios, "median": ratios[len(ratios) // 2]}
    return figures


def measure_peers(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    progress(f"Dramatiq: {args.tasks:,} tasks end to end")
    figures["dramatiq"] = dramatiq_end_to_end(args.tasks)
    progress(f"Celery (acks late, Redis results): {args.tasks:,} tasks end to end")
    figures["celery_acks_late"] = celery_end_to_end(args.tasks, acks_late=True)
    progress(f"Celery (defaults): {args.tasks:,} tasks end to end")
    figures["celery_default"] = celery_end_to_end(args.tasks, acks_late=False)
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "started_at": started.isoformat(),
        "environment": environment(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    clock = time.perf_counter()
    if args.sentinel:
        return _replication_run(args, results, started, clock)
    results["ours"] = measure_ours(args)
    celery_publish = results["ours"].pop("celery_publish", None)
    if not args.skip_peers:
        results["peers"] = measure_peers(args)
        results["peers"]["celery_publish"] = celery_publish
    if not args.skip_daemon:
        live = [int(n) for n in args.live.split(",") if n.strip()]
        progress(f"timeout daemon: expire {args.expire:,}; idle sweeps with {live} live tasks")
        results["timeout_daemon"] = timeout_daemon_costs(args.expire, live)
        waiting = [int(n) for n in args.delayed_waiting.split(",") if n.strip()]
        progress(
            f"timeout daemon: release {args.release:,} due delayed tasks; idle sweeps with {waiting} waiting"
        )
        results["delayed_release"] = delayed_release_costs(args.release, waiting)
    results["run_seconds"] = round(time.perf_counter() - clock, 1)
    output = args.output or RESULTS / f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(render(results))
    progress(f"wrote {output}")
    return results


def _replication_run(
    args: argparse.Namespace, results: dict[str, Any], started: datetime, clock: float
) -> dict[str, Any]:
    from bench.replication import render_replication, replication_cost

    results["replication"] = replication_cost(tasks=args.tasks, requests=args.requests, clients=args.clients)
    results["run_seconds"] = round(time.perf_counter() - clock, 1)
    output = args.output or RESULTS / f"bench-sentinel-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(render_replication(results["replication"]))
    progress(f"wrote {output}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
