"""What every measurement shares: servers' addresses, subprocesses, CPU accounting, progress."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import psutil
import redis

from taskbroker.logs import configure_logging

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


@dataclass
class Fleet:
    """Subprocesses of one measurement, their CPU time, and a guarantee none outlives it."""

    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, args: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            args,
            env={**os.environ, **env},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.processes[name] = process
        return process

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU of each process and its children (Celery and Dramatiq fork workers)."""
        totals: dict[str, float] = {}
        for name, process in self.processes.items():
            try:
                root = psutil.Process(process.pid)
                tree = [root, *root.children(recursive=True)]
                totals[name] = sum(p.cpu_times().user + p.cpu_times().system for p in tree)
            except psutil.NoSuchProcess:
                totals[name] = 0.0
        return totals

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        give_up = time.monotonic() + 20
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, give_up - time.monotonic()))
            except subprocess.TimeoutExpired:
                for child in psutil.Process(process.pid).children(recursive=True):
                    child.kill()
                process.kill()
                process.wait()


def wait_until(check: Callable[[], bool], *, what: str, timeout: float = 600, interval: float = 0.02) -> None:
    give_up = time.monotonic() + timeout
    while not check():
        if time.monotonic() > give_up:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(interval)


def redis_client(url: str = REDIS_URL) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def delete_keys(pattern: str, url: str = REDIS_URL) -> None:
    client = redis_client(url)
    try:
        batch = []
        for key in client.scan_iter(match=pattern, count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


def cpu_per_thousand(before: dict[str, float], after: dict[str, float], tasks: int) -> dict[str, float]:
    return {name: round((after[name] - before.get(name, 0.0)) * 1000 / tasks, 3) for name in after}


def machine_speed() -> dict[str, float]:
    """Two quick readings of how fast this machine is, recorded with every run: the ratios hold
    across machines, the absolute targets (latency, expiry time) do not. The median of five
    timings of a pure-Python loop, and sequential Redis round trips (PING) per second."""
    loops = []
    for _ in range(5):
        started = time.perf_counter()
        total = 0
        for number in range(1_000_000):
            total += number
        loops.append(time.perf_counter() - started)
    client = redis_client()
    try:
        started = time.perf_counter()
        for _ in range(5_000):
            client.ping()
        pings = 5_000 / (time.perf_counter() - started)
    finally:
        client.close()
    return {"python_loop_1m_ms": round(sorted(loops)[2] * 1000, 1), "redis_round_trips_per_s": round(pings)}


_NOWHERE: list[TextIO] = []


def log_json_to_nowhere() -> None:
    """Log as deployed (a JSON line per event) to /dev/null: the terminal is not the cost being
    measured. Once per process, the sink left open: structlog caches each logger with the stream
    it had on first use, so a second configuration, or a closed sink, would break a logger that
    an earlier measurement already used."""
    if _NOWHERE:
        return
    _NOWHERE.append(open(os.devnull, "w"))  # noqa: SIM115 - open for the life of the process
    terminal, sys.stderr = sys.stderr, _NOWHERE[0]
    try:
        configure_logging("json", logging.INFO)
    finally:
        sys.stderr = terminal
