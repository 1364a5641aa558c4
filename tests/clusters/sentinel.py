"""A Redis Sentinel set on loopback for tests and CI: a primary, one replica and three sentinels.

Each set has its own ports and its own data folder, and stops exactly the processes it started
(by PID, checked against /proc so a reused PID is never signalled). Ready means: the primary
answers, the replica's link is up, and every sentinel sees the primary, the replica and the two
other sentinels (a failover needs a majority of sentinels that know one another).

From Python: ``with SentinelSet.running() as cluster: ...`` (tests/clusters/conftest.py wraps it
in the ``sentinel_set`` fixture). From a shell (.ci/run, a chaos test started by hand)::

    python -m tests.clusters.sentinel start --state /tmp/tb-sentinel.json
    python -m tests.clusters.sentinel stop --state /tmp/tb-sentinel.json

``start`` prints the settings that point taskbroker at the set (``TASKBROKER_REDIS_SENTINELS``,
``TASKBROKER_REDIS_MASTER``) and writes the ports and PIDs to the state file that ``stop`` reads.
Chaos steps on that set: ``kill primary`` (SIGKILL), ``pause replica`` / ``resume replica``
(SIGSTOP / SIGCONT), ``rejoin primary`` (a killed data node back as a replica of the current
primary), ``master`` (the address the Sentinels name).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

MASTER_NAME = "tbtest-master"
DOWN_AFTER_MS = 1000
"""How long the sentinels wait before they call the primary down (the clusters note measured a
promotion 1.4-1.5 s after a SIGKILL with this)."""
READY_DEADLINE = 30.0
"""Bounds a hung start only; a set is normally ready in ~2.5 s."""


@dataclass
class SentinelSet:
    """One Sentinel set's layout (ports, folder) and the PIDs of its running processes."""

    folder: Path
    primary_port: int = 6401
    replica_port: int = 6402
    sentinel_ports: tuple[int, ...] = (26401, 26402, 26403)
    master_name: str = MASTER_NAME
    pids: dict[str, int] = field(default_factory=dict)
    """Process name ("primary", "replica", "sentinel-26401", ...) -> PID."""
    _children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    @classmethod
    @contextmanager
    def running(cls, **layout: object) -> Iterator[SentinelSet]:
        """A started, ready set in a temporary folder, stopped and removed on exit."""
        folder = Path(tempfile.mkdtemp(prefix="tb-sentinel-"))
        cluster = cls(folder=folder, **layout)  # type: ignore[arg-type]
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
            shutil.rmtree(folder, ignore_errors=True)

    # What clients need

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", port) for port in self.sentinel_ports]

    @property
    def sentinels_setting(self) -> str:
        """The value of TASKBROKER_REDIS_SENTINELS for this set."""
        return ",".join(f"{host}:{port}" for host, port in self.sentinels)

    def master_address(self) -> tuple[str, int] | None:
        """The primary the first answering sentinel names (None while none answers)."""
        for host, port in self.sentinels:
            try:
                with redis.Redis(host=host, port=port, socket_timeout=1, decode_responses=True) as s:
                    address = s.execute_command("SENTINEL", "get-master-addr-by-name", self.master_name)
            except redis.RedisError:
                continue
            if address:
                return str(address[0]), int(address[1])
        return None

    def port_of(self, name: str) -> int:
        return {"primary": self.primary_port, "replica": self.replica_port}[name]

    def _port_of_process(self, name: str) -> int:
        return int(name.removeprefix("sentinel-")) if name.startswith("sentinel-") else self.port_of(name)

    # Processes

    def start(self) -> None:
        """Start all five processes and wait until the set is ready. Refuses ports already
        taken (a set left running would otherwise answer for this one)."""
        taken = [p for p in (self.primary_port, self.replica_port, *self.sentinel_ports) if _listening(p)]
        if taken:
            raise RuntimeError(
                f"ports {taken} are in use on 127.0.0.1: a Sentinel set left running? "
                "(python -m tests.clusters.sentinel stop --state FILE stops one started from the shell)"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        self.start_redis("primary")
        self.start_redis("replica", replica_of=self.primary_port)
        for port in self.sentinel_ports:
            self._start_sentinel(port)
        self.wait_ready()

    def start_redis(self, name: str, *, replica_of: int | None = None) -> None:
        """(Re)start the data node ``name`` ("primary" or "replica") on its own port."""
        port = self.port_of(name)
        data = self.folder / name
        data.mkdir(exist_ok=True)
        args = [
            "redis-server",
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(data),
            "--save", "",
            "--appendonly", "no",
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
            "--logfile", str(self.folder / f"{name}.log"),
        ]  # fmt: skip
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        self._spawn(name, args)

    def _start_sentinel(self, port: int) -> None:
        conf = self.folder / f"sentinel-{port}.conf"  # sentinels rewrite their file: one each
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.folder}\n"
            f"logfile {self.folder / f'sentinel-{port}.log'}\n"
            f"sentinel monitor {self.master_name} 127.0.0.1 {self.primary_port} 2\n"
            f"sentinel down-after-milliseconds {self.master_name} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {self.master_name} 10000\n"
            f"sentinel parallel-syncs {self.master_name} 1\n"
        )
        self._spawn(f"sentinel-{port}", ["redis-server", str(conf), "--sentinel"])

    def _spawn(self, name: str, args: list[str]) -> None:
        child = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._children[name] = child
        self.pids[name] = child.pid

    def wait_ready(self, deadline: float = READY_DEADLINE) -> None:
        give_up = time.monotonic() + deadline
        while not self._ready():
            if time.monotonic() > give_up:
                raise RuntimeError(f"the Sentinel set in {self.folder} was not ready in {deadline} s")
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            with redis.Redis(port=self.replica_port, socket_timeout=1, decode_responses=True) as r:
                if r.info("replication").get("master_link_status") != "up":
                    return False
            for _host, port in self.sentinels:
                with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as s:
                    master = s.sentinel_master(self.master_name)
                    if int(master.get("num-slaves", 0)) < 1 or int(master.get("num-other-sentinels", 0)) < 2:
                        return False
        except redis.RedisError:
            return False
        return True

    def kill(self, name: str) -> None:
        """SIGKILL one process of the set (a server lost at once), and forget it."""
        self._signal(name, signal.SIGKILL)
        self._reap(name)
        self.pids.pop(name, None)

    def rejoin(self, name: str) -> None:
        """Start a killed data node again as a replica of the current primary (as an operator
        brings a failed server back; the Sentinels then count it as a replica)."""
        master = self.master_address()
        if master is None:
            raise RuntimeError("no sentinel names a primary: nothing to rejoin")
        self.start_redis(name, replica_of=master[1])

    def pause(self, name: str) -> None:
        """SIGSTOP one process: alive, holding its connections, answering nothing."""
        self._signal(name, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self._signal(name, signal.SIGCONT)

    def stop(self) -> None:
        """Kill every process this set started (resumed first, in case one was paused)."""
        for name in list(self.pids):
            self._signal(name, signal.SIGCONT)
            self._signal(name, signal.SIGKILL)
            self._reap(name)
        self.pids.clear()

    def _signal(self, name: str, signum: signal.Signals) -> None:
        pid = self.pids.get(name)
        if pid is not None and _is_our_redis(pid, self._port_of_process(name)):
            os.kill(pid, signum)

    def _reap(self, name: str) -> None:
        child = self._children.pop(name, None)
        if child is not None:
            child.wait(timeout=10)

    # The state file of the command line

    def save(self, path: Path) -> None:
        state = {
            "folder": str(self.folder),
            "primary_port": self.primary_port,
            "replica_port": self.replica_port,
            "sentinel_ports": list(self.sentinel_ports),
            "master_name": self.master_name,
            "pids": self.pids,
        }
        path.write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, path: Path) -> SentinelSet:
        state = json.loads(path.read_text())
        return cls(
            folder=Path(state["folder"]),
            primary_port=state["primary_port"],
            replica_port=state["replica_port"],
            sentinel_ports=tuple(state["sentinel_ports"]),
            master_name=state["master_name"],
            pids={str(k): int(v) for k, v in state["pids"].items()},
        )


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _is_our_redis(pid: int, port: int) -> bool:
    """Whether ``pid`` is still a live (not zombie) redis-server on ``port``: PIDs get reused,
    and PID 1 here leaves killed processes as zombies that still answer kill -0. (redis-server
    retitles itself "redis-server 127.0.0.1:PORT", so the port is what its command line shows.)"""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return "State:\tZ" not in status and "redis-server" in cmdline and f":{port}" in cmdline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.clusters.sentinel", description=__doc__)
    parser.add_argument("action", choices=["start", "stop", "kill", "pause", "resume", "rejoin", "master"])
    parser.add_argument(
        "node", nargs="?", help="for kill/pause/resume/rejoin: primary, replica, sentinel-PORT"
    )
    parser.add_argument("--state", type=Path, default=Path(tempfile.gettempdir()) / "tb-sentinel.json")
    parser.add_argument("--folder", type=Path, help="data folder for start (default: a new temporary one)")
    parser.add_argument("--primary-port", type=int, default=6401)
    parser.add_argument("--replica-port", type=int, default=6402)
    parser.add_argument("--sentinel-ports", default="26401,26402,26403")
    args = parser.parse_args(argv)
    if args.action in ("kill", "pause", "resume", "rejoin", "master"):
        return _act(args.action, args.node, args.state)
    if args.action == "stop":
        if not args.state.exists():
            print(f"no state file {args.state}: nothing to stop")
            return 0
        cluster = SentinelSet.load(args.state)
        cluster.stop()
        shutil.rmtree(cluster.folder, ignore_errors=True)
        args.state.unlink()
        print(f"stopped the Sentinel set of {args.state}")
        return 0
    folder = args.folder or Path(tempfile.mkdtemp(prefix="tb-sentinel-"))
    cluster = SentinelSet(
        folder=folder,
        primary_port=args.primary_port,
        replica_port=args.replica_port,
        sentinel_ports=tuple(int(p) for p in args.sentinel_ports.split(",")),
    )
    started = time.monotonic()
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    cluster.save(args.state)
    print(f"Sentinel set ready in {time.monotonic() - started:.1f} s (state: {args.state})")
    print(f"TASKBROKER_REDIS_SENTINELS={cluster.sentinels_setting}")
    print(f"TASKBROKER_REDIS_MASTER={cluster.master_name}")
    return 0


def _act(action: str, node: str | None, state: Path) -> int:
    """One chaos step on a set started from the shell; the state file follows (a killed
    process leaves it, a rejoined one enters it)."""
    cluster = SentinelSet.load(state)
    if action == "master":
        print(cluster.master_address())
        return 0
    if node is None:
        raise SystemExit(f"{action} needs a node: primary, replica or sentinel-PORT")
    if action == "rejoin":
        cluster.rejoin(node)
    else:
        getattr(cluster, action)(node)
    cluster.save(state)
    print(f"{action} {node}: done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
