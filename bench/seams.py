"""What each seam of the hot path is worth: the API's single-task requests with every seam on,
and with one turned off, in alternating rounds (the machine's speed drifts between runs: compare
within a round). Each seam uses a library's internals (docs/performance.md, "What each seam is
worth"); turning one off replaces it, in the API process only, by the library's own path.

    .venv/bin/python -m bench.seams                  # 5 rounds of 3,000 requests per variant
    .venv/bin/python -m bench.seams --workers 2      # the API as 2 processes

Prints, per variant, the median over rounds of its ratio to the all-on API within the same
round: requests/s (higher: the seam costs) and API CPU per request (lower: the seam costs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

from bench.harness import progress
from bench.ours import Ours

START = "from taskbroker.cli import app; app()"
NO_LANE = "from taskbroker.api.scheduling_lane import LanedFastAPI as A; A._lane_for = lambda s, _: None"
VARIANTS: dict[str, str] = {
    "all seams on": "",
    # The scheduling lane (api/scheduling_lane.py): every request through the middleware stack.
    "lane off": NO_LANE,
    # The lane and the direct binding (api/direct_route.py): FastAPI's general solver too.
    "lane and direct binding off": (
        f"{NO_LANE}\n"
        "from taskbroker.api import direct_route as d, json_body as j\n"
        "d.DirectRoute.get_route_handler = j.JsonBodyRoute.get_route_handler"
    ),
    # Joined AMQP frames (taskbroker/queue/amqp.py): pika sends each frame alone.
    "joined AMQP frames off": (
        "from taskbroker.queue import amqp\n"
        "from pika.adapters.asyncio_connection import AsyncioConnection\n"
        "amqp._CoalescingConnection = AsyncioConnection"
    ),
    # Batched script calls (taskbroker/script_calls.py): each call through redis-py's client.
    "batched Redis script calls off": (
        "import asyncio\nfrom taskbroker.script_calls import ScriptCalls\n"
        "ScriptCalls.call = lambda self, script, args, **_: asyncio.ensure_future(script(keys=[], args=args))"
    ),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.seams", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests", type=int, default=3_000, help="single-task requests per variant per round"
    )
    parser.add_argument("--clients", type=int, default=32, help="concurrent HTTP clients")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--workers", type=int, default=1, help="API processes per variant")
    parser.add_argument("--only", action="append", help="a variant to run (repeatable; default: all)")
    parser.add_argument(
        "--batches", action="store_true", help="schedule in batches of 1,000 instead of one task per request"
    )
    args = parser.parse_args(argv)

    def measure(ours: Ours, requests: int) -> dict[str, Any]:
        if args.batches:
            return ours.batch_schedule("idle", requests * 5)
        return ours.single_requests("idle", requests, args.clients)

    names = [
        "all seams on",
        *[n for n in VARIANTS if n != "all seams on" and (not args.only or n in args.only)],
    ]
    apis: dict[str, Ours] = {}
    try:
        for name in names:
            progress(f"starting the API: {name}")
            ours = apis[name] = Ours()
            ours.start_api(workers=args.workers, command=[sys.executable, "-c", f"{VARIANTS[name]}\n{START}"])
            ours.register("idle")
            measure(ours, max(200, args.requests // 10))  # warm up
        rounds: list[dict[str, Any]] = []
        for number in range(1, args.rounds + 1):
            progress(f"round {number}/{args.rounds}")
            order = names if number % 2 else list(reversed(names))
            rounds.append({n: measure(apis[n], args.requests) for n in order})
    finally:
        for ours in apis.values():
            ours.close()
    print(json.dumps({"workers": args.workers, "rounds": rounds}, indent=1), file=sys.stderr)
    print(
        f"API as {args.workers} process(es); median over {args.rounds} rounds of the ratio to 'all seams on'"
    )
    print(f"{'variant':32} {'requests/s':>11} {'API CPU/request':>16}")
    for name in names:
        speed = statistics.median(r[name]["tasks_per_s"] / r["all seams on"]["tasks_per_s"] for r in rounds)
        cpu = statistics.median(
            r[name]["api_cpu_s_per_1000"] / r["all seams on"]["api_cpu_s_per_1000"] for r in rounds
        )
        print(f"{name:32} {speed:>11.2f} {cpu:>16.2f}")


if __name__ == "__main__":
    main()
