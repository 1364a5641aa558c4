"""taskbroker measured as deployed: `taskbroker api` (one uvicorn process) and two `taskbroker
worker` processes on the real Redis and RabbitMQ, driven over HTTP."""

from __future__ import annotations

import asyncio
import secrets
import statistics
import tempfile
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import httpx
import orjson
import pika

from bench.harness import (
    AMQP_URL,
    BIN,
    REDIS_URL,
    REPO,
    Fleet,
    cpu_per_thousand,
    delete_keys,
    free_port,
    redis_client,
    wait_until,
)
from bench.loadgen import Connection, build_post, expect_created
from taskbroker.client import AsyncClient

NOOP = {"function": "taskbroker.runtimes.builtin:noop"}
ATTRIBUTES_200_BYTES = {"function": "taskbroker.runtimes.builtin:noop", "kwargs": {"payload": "x" * 140}}


class Ours:
    def __init__(
        self,
        *,
        worker_concurrency: int = 16,
        redis_url: str = REDIS_URL,
        env: dict[str, str] | None = None,
        amqp_url: str = AMQP_URL,
    ) -> None:
        """``redis_url``: where the benchmark itself reads task state (the primary of a Sentinel
        set, when ``env`` points the processes at its Sentinels)."""
        self.redis_url = redis_url
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.token = secrets.token_hex(24)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.fleet = Fleet(Path(tempfile.mkdtemp(prefix="bench-ours-")))
        self.worker_concurrency = worker_concurrency
        self.env = {
            "TASKBROKER_KEY_PREFIX": self.prefix,
            "TASKBROKER_REDIS_URL": REDIS_URL,
            "TASKBROKER_AMQP_URL": amqp_url,
            "TASKBROKER_ADMIN_TOKEN": self.token,
            "TASKBROKER_LOG_FORMAT": "json",
            # The checkout the benchmark runs from, not whichever one the venv has installed.
            "PYTHONPATH": str(REPO),
            **(env or {}),
        }
        self.headers = {"Authorization": f"Bearer {self.token}"}
        self.schedulers: list[str] = []
        self.amqp_urls = amqp_url.split(",")

    # Lifecycle

    def start_api(self, *, workers: int = 1, command: list[str] | None = None) -> None:
        """`taskbroker api` with ``workers`` processes; ``command`` in place of the console script
        (bench.seams starts it with a seam turned off)."""
        args = [*(command or [str(BIN / "taskbroker")]), "api", "--port", str(self.port)]
        self.fleet.start("api", [*args, "--workers", str(workers)], self.env)
        wait_until(self._healthy, what="the API", timeout=60, interval=0.1)

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def register(self, name: str, queue_type: str | None = None) -> None:
        body = {"name": name, **({"queue_type": queue_type} if queue_type else {})}
        response = httpx.post(f"{self.url}/scheduler", json=body, headers=self.headers, timeout=30)
        response.raise_for_status()
        self.schedulers.append(name)

    def start_workers(self, scheduler: str, count: int = 2) -> None:
        for number in range(count):
            args = [str(BIN / "taskbroker"), "worker", "--scheduler", scheduler]
            args += ["--concurrency", str(self.worker_concurrency)]
            name = (
                f"worker-{number}"
                if f"worker-{number}" not in self.fleet.processes
                else f"worker-{scheduler}-{number}"
            )
            self.fleet.start(name, args, self.env)
        wait_until(lambda: self._consumers(scheduler) == count, what="the workers to subscribe", timeout=60)

    def _consumers(self, scheduler: str) -> int:
        response = httpx.get(f"{self.url}/scheduler/{scheduler}", headers=self.headers, timeout=30)
        consumers: int = response.json().get("consumers") or 0
        return consumers

    def close(self) -> None:
        self.fleet.stop()
        connection = pika.BlockingConnection([pika.URLParameters(u) for u in self.amqp_urls])
        try:
            channel = connection.channel()
            for name in self.schedulers:
                channel.queue_delete(f"{self.prefix}.{name}")
        finally:
            connection.close()
        delete_keys(f"{self.prefix}:*", self.redis_url)

    def live_tasks(self, scheduler: str) -> int:
        client = redis_client(self.redis_url)
        try:
            return int(client.scard(f"{self.prefix}:live:{scheduler}"))
        finally:
            client.close()

    # Measurements

    def end_to_end(
        self, scheduler: str, tasks: int, *, batch: int = 1000, parallel: int = 2
    ) -> dict[str, Any]:
        """Schedule ``tasks`` no-op tasks in batches over HTTP; seconds until every one is complete."""
        before = self.fleet.cpu_seconds()
        started = time.perf_counter()
        ids = asyncio.run(self._schedule_batches(scheduler, tasks, batch, parallel))
        scheduled = time.perf_counter()
        wait_until(lambda: self.live_tasks(scheduler) == 0, what="every task to finish")
        finished = time.perf_counter()
        after = self.fleet.cpu_seconds()
        states = self._states(ids)
        return {
            "tasks": tasks,
            "tasks_per_s": round(tasks / (finished - started), 1),
            "schedule_seconds": round(scheduled - started, 3),
            "total_seconds": round(finished - started, 3),
            "states": states,
            "cpu_s_per_1000": cpu_per_thousand(before, after, tasks),
        }

    async def _schedule_batches(self, scheduler: str, tasks: int, batch: int, parallel: int) -> list[str]:
        bodies = [
            {"tasks": [{"scheduler": scheduler, "attributes": NOOP}] * min(batch, tasks - start)}
            for start in range(0, tasks, batch)
        ]
        ids: list[str] = []
        limit = asyncio.Semaphore(parallel)
        async with httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=120) as http:

            async def send(body: dict[str, Any]) -> None:
                async with limit:
                    response = await http.post("/task/schedule/batch", json=body)
                    response.raise_for_status()
                    ids.extend(t["id"] for t in response.json()["tasks"])

            await asyncio.gather(*(send(b) for b in bodies))
        return ids

    def _states(self, ids: list[str]) -> dict[str, int]:
        client = redis_client(self.redis_url)
        try:
            pipe = client.pipeline(transaction=False)
            for task_id in ids:
                pipe.hget(f"{self.prefix}:task:{task_id}", "state")
            counts: dict[str, int] = {}
            for state in pipe.execute():
                counts[str(state)] = counts.get(str(state), 0) + 1
            return counts
        finally:
            client.close()

    def client_token(self, scheduler: str) -> str:
        """A client token for ``scheduler``, as a real client schedules with: unlike the admin
        token, checked in memory, it is looked up in Redis on every request."""
        response = httpx.post(
            f"{self.url}/token",
            json={"role": "client", "name": "bench", "schedulers": [scheduler]},
            headers=self.headers,
            timeout=30,
        )
        response.raise_for_status()
        return str(response.json()["token"])

    def single_requests(
        self, scheduler: str, requests: int, clients: int = 32, *, token: str | None = None
    ) -> dict[str, Any]:
        """One task per request, ``clients`` concurrent HTTP clients: accepted tasks per second.
        With the admin token unless ``token`` is given."""
        before = self.fleet.cpu_seconds()
        latencies = asyncio.run(self._closed_loop(scheduler, requests, clients, token or self.token))
        after = self.fleet.cpu_seconds()
        return {
            "requests": requests,
            "clients": clients,
            "tasks_per_s": round(requests / latencies.pop(), 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 2),
            "api_cpu_s_per_1000": cpu_per_thousand(before, after, requests)["api"],
        }

    def async_client_calls(self, scheduler: str, calls: int, clients: int, *, token: str) -> dict[str, Any]:
        """One task per ``AsyncClient.schedule`` call, ``clients`` calls at once on one client: what
        a service scheduling with our Python client gets, beside ``single_requests`` (raw HTTP)."""
        before = self.fleet.cpu_seconds()
        elapsed = asyncio.run(self._client_loop(scheduler, calls, clients, token))
        after = self.fleet.cpu_seconds()
        return {
            "requests": calls,
            "clients": clients,
            "tasks_per_s": round(calls / elapsed, 1),
            "api_cpu_s_per_1000": cpu_per_thousand(before, after, calls)["api"],
        }

    async def _client_loop(self, scheduler: str, calls: int, clients: int, token: str) -> float:
        remaining = calls
        async with AsyncClient(self.url, token) as client:

            async def caller() -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    await client.schedule(scheduler, NOOP)

            started = time.perf_counter()
            await asyncio.gather(*(caller() for _ in range(clients)))
            return time.perf_counter() - started

    def batch_schedule(
        self, scheduler: str, tasks: int, *, batch: int = 1000, parallel: int = 2
    ) -> dict[str, Any]:
        """Tasks accepted per second when scheduled ``batch`` per request, nobody consuming."""
        before = self.fleet.cpu_seconds()
        started = time.perf_counter()
        asyncio.run(self._schedule_batches(scheduler, tasks, batch, parallel))
        elapsed = time.perf_counter() - started
        after = self.fleet.cpu_seconds()
        return {
            "tasks": tasks,
            "batch": batch,
            "tasks_per_s": round(tasks / elapsed, 1),
            "api_cpu_s_per_1000": cpu_per_thousand(before, after, tasks)["api"],
        }

    async def _closed_loop(self, scheduler: str, requests: int, clients: int, token: str) -> list[float]:
        request = build_post(self.url, "/task/schedule", {"scheduler": scheduler, "attributes": NOOP}, token)
        latencies: list[float] = []
        remaining = requests
        connections = [await Connection.open(self.url) for _ in range(clients)]

        async def client_loop(connection: Connection) -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                sent = time.perf_counter()
                await expect_created(connection, request)
                latencies.append(time.perf_counter() - sent)

        try:
            started = time.perf_counter()
            await asyncio.gather(*(client_loop(c) for c in connections))
            latencies.append(time.perf_counter() - started)
        finally:
            for connection in connections:
                await connection.close()
        return latencies

    def latency_at_rate(self, scheduler: str, rate: float, seconds: float) -> dict[str, Any]:
        """Open loop: requests start on a fixed schedule whatever the answers do; latency counts from
        the planned start, so a stall is not hidden (no coordinated omission)."""
        latencies, late = asyncio.run(self._open_loop(scheduler, rate, seconds))
        ordered = sorted(latencies)
        return {
            "offered_per_s": rate,
            "requests": len(ordered),
            "p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
            "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 2),
            "client_fell_behind_ms": round(late * 1000, 2),
        }

    async def _open_loop(self, scheduler: str, rate: float, seconds: float) -> tuple[list[float], float]:
        request = build_post(
            self.url, "/task/schedule", {"scheduler": scheduler, "attributes": NOOP}, self.token
        )
        latencies: list[float] = []
        worst_late = 0.0
        # First in, first out: every connection is used often, so none idles into uvicorn's
        # keep-alive timeout (5 s) and gets closed under a request.
        idle: deque[Connection] = deque([await Connection.open(self.url) for _ in range(64)])

        async def one(planned: float) -> None:
            # A request never waits for a connection: one is opened when all are busy.
            connection = idle.popleft() if idle else await Connection.open(self.url)
            await expect_created(connection, request)
            latencies.append(time.perf_counter() - planned)
            idle.append(connection)

        started = time.perf_counter()
        pending = []
        for number in range(int(rate * seconds)):
            planned = started + number / rate
            delay = planned - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                worst_late = max(worst_late, -delay)
            pending.append(asyncio.create_task(one(planned)))
        await asyncio.gather(*pending)
        for connection in idle:
            await connection.close()
        return latencies, worst_late

    def memory_per_task(self, scheduler: str, tasks: int) -> dict[str, Any]:
        """Redis memory per live task with ~200 bytes of attributes. Two ways: the server's
        used_memory before and after (noisy on a shared server), and the sum of MEMORY USAGE of
        everything a task adds (its hash and attributes key, plus its share of the deadline index
        and live set)."""
        client = redis_client(self.redis_url)
        deadlines, live = f"{self.prefix}:deadlines", f"{self.prefix}:live:{scheduler}"
        try:
            indexes_before = self._usage(client, deadlines) + self._usage(client, live)
            before = int(client.info("memory")["used_memory"])
            body = {"tasks": [{"scheduler": scheduler, "attributes": ATTRIBUTES_200_BYTES}] * 1000}
            ids: list[str] = []
            for _ in range(max(1, tasks // 1000)):
                response = httpx.post(
                    f"{self.url}/task/schedule/batch", json=body, headers=self.headers, timeout=60
                )
                response.raise_for_status()
                ids += [t["id"] for t in response.json()["tasks"]]
            after = int(client.info("memory")["used_memory"])
            indexes = self._usage(client, deadlines) + self._usage(client, live) - indexes_before
            sample = ids[:: max(1, len(ids) // 100)]
            hashes = [self._usage(client, f"{self.prefix}:task:{i}") for i in sample]
            attributes = [self._usage(client, f"{self.prefix}:attributes:{i}") for i in sample]
        finally:
            client.close()
        task_hash, task_attributes = statistics.mean(hashes), statistics.mean(attributes)
        return {
            "tasks": len(ids),
            "attributes_bytes": len(orjson.dumps(ATTRIBUTES_200_BYTES)),
            "bytes_per_task": round(task_hash + task_attributes + indexes / len(ids), 1),
            "task_hash_bytes": round(task_hash, 1),
            "attributes_key_bytes": round(task_attributes, 1),
            "index_bytes_per_task": round(indexes / len(ids), 1),
            "used_memory_delta_per_task": round((after - before) / len(ids), 1),
        }

    @staticmethod
    def _usage(client: Any, key: str) -> int:
        return int(client.memory_usage(key, samples=0) or 0)
