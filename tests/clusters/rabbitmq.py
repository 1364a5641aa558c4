"""A 3-node RabbitMQ cluster on loopback for tests and CI, beside (never touching) the machine's
own RabbitMQ on 5672.

Each node has its own ports (AMQP 5701-5703, Erlang distribution 25701-25703), name
(``r1@localhost``...), data and log folders, and the cluster one Erlang cookie in a HOME of its
own, all under one base folder. The nodes boot in parallel; r2 and r3 then join r1. Everything a
later ``stop`` needs (node names, PIDs, pid files) is written to ``state.json`` in the base folder,
so CI can start the cluster with one command and stop exactly its processes with another::

    python -m tests.clusters.rabbitmq start [--base DIR]   # prints the AMQP URL list
    python -m tests.clusters.rabbitmq stop [--base DIR]

Tests use ``running_cluster()`` (a context manager), through ``cluster_for_a_module()`` as the
body of a module-scoped fixture: one cluster per test module, or the one CI started if
``TASKBROKER_TEST_RABBIT_CLUSTER`` names its base folder (then the fixture leaves it running). A
test that kills a node restarts it before it ends, so the next test finds three nodes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
"""The server script itself: the /usr/sbin wrapper switches to the rabbitmq user."""
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
NODES = 3
AMQP_PORT_BASE = 5700
DIST_PORT_BASE = 25700
CTL_DIST_PORTS = (25710, 25730)
"""The CLI's own distribution ports (it would otherwise take 35672-35682, the shared server's)."""
COOKIE = "taskbroker-test-rabbit-cluster"
BOOT_TIMEOUT = 120
ENV_BASE = "TASKBROKER_TEST_RABBIT_CLUSTER"
"""Base folder of a cluster already running (started by CI): tests use it and leave it running."""
DEFAULT_BASE = Path(tempfile.gettempdir()) / f"taskbroker-rabbit-cluster-{os.getuid()}"


def _running(pid: int) -> bool:
    """Alive and not a zombie (PID 1 here does not reap orphans: /proc/PID/status says Z)."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


@dataclass(frozen=True)
class Node:
    index: int
    base: Path

    @property
    def name(self) -> str:
        return f"r{self.index}@localhost"

    @property
    def port(self) -> int:
        return AMQP_PORT_BASE + self.index

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    @property
    def folder(self) -> Path:
        return self.base / f"r{self.index}"

    @property
    def pid_file(self) -> Path:
        return self.folder / "rabbit.pid"

    def pid(self) -> int | None:
        """The node's Erlang VM, as its pid file says; None once it is not running (a zombie
        left to PID 1 counts as gone: /proc/PID/status says Z)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _running(pid) else None


class RabbitCluster:
    """Three nodes under ``base``; start, kill and restart them, ask them with rabbitmqctl."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.nodes = [Node(i, base) for i in range(1, NODES + 1)]
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def amqp_url(self) -> str:
        """``TASKBROKER_AMQP_URL`` for all three nodes (comma-separated)."""
        return ",".join(self.urls)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    # Environment

    def _common_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.base / "home"),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_CTL_DIST_PORT_MIN=str(CTL_DIST_PORTS[0]),
            RABBITMQ_CTL_DIST_PORT_MAX=str(CTL_DIST_PORTS[1]),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    def _node_env(self, node: Node) -> dict[str, str]:
        env = self._common_env()
        env.update(
            RABBITMQ_CONFIG_FILE=str(node.folder / "rabbitmq.conf"),
            RABBITMQ_NODENAME=node.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(node.port),
            RABBITMQ_DIST_PORT=str(DIST_PORT_BASE + node.index),
            RABBITMQ_MNESIA_BASE=str(node.folder / "mnesia"),
            RABBITMQ_LOG_BASE=str(node.folder / "log"),
            RABBITMQ_PID_FILE=str(node.pid_file),
            # The script then execs the VM itself (no signal-forwarding shell between): the pid
            # file's PID is the process a test SIGKILLs.
            RUNNING_UNDER_SYSTEMD="1",
            ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def _prepare(self) -> None:
        home = self.base / "home"
        home.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(COOKIE)
            cookie.chmod(0o400)
        (self.base / "rabbitmq-env.conf").write_text("")
        (self.base / "enabled_plugins").write_text("[].\n")
        for node in self.nodes:
            (node.folder / "log").mkdir(parents=True, exist_ok=True)
            (node.folder / "rabbitmq.conf").write_text(
                f"listeners.tcp.default = 127.0.0.1:{node.port}\nloopback_users = none\n"
            )

    # Commands

    def ctl(self, node: Node, *args: str, timeout: float = 60) -> str:
        done = subprocess.run(
            [CTL, "-n", node.name, *args],
            cwd=self.base if self.base.exists() else None,  # Erlang may write a Mnesia folder there
            env=self._common_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl -n {node.name} {' '.join(args)}: {done.stderr or done.stdout}")
        return done.stdout

    def _boot(self, node: Node) -> None:
        log = (node.folder / "log" / "console.log").open("ab")
        child = subprocess.Popen(
            [SERVER],
            cwd=node.folder,
            env=self._node_env(node),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._children[node.index] = child
        self.ctl(node, "wait", str(node.pid_file), "--timeout", str(BOOT_TIMEOUT), timeout=BOOT_TIMEOUT + 10)

    def start(self) -> None:
        """Boot the three nodes in parallel, then join r2 and r3 to r1, one after the other (a
        node that is already a member, after a restart, rejoins by itself)."""
        if self.base.exists() and any(n.pid() for n in self.nodes):
            raise RuntimeError(f"a cluster is already running under {self.base}: stop it first")
        self._prepare()
        joining = [n for n in self.nodes[1:] if not (n.folder / "mnesia").exists()]
        with ThreadPoolExecutor(NODES) as pool:
            list(pool.map(self._boot, self.nodes))
        # One join at a time, and only on a node's first boot (a restarted member rejoins by
        # itself): two nodes joining r1 at once can abort each other's schema copy (seen in CI:
        # join_cluster failed with {aborted, {shutdown, ... schema_prepare}}).
        for node in joining:
            self._join_first(node)
        self.write_state()

    def _join_first(self, node: Node) -> None:
        self.ctl(node, "stop_app")
        self.ctl(node, "join_cluster", self.nodes[0].name)
        self.ctl(node, "start_app")

    def write_state(self) -> None:
        state = {
            "base": str(self.base),
            "urls": self.urls,
            "nodes": [{"name": n.name, "port": n.port, "pid": n.pid()} for n in self.nodes],
        }
        (self.base / "state.json").write_text(json.dumps(state, indent=2))

    def kill(self, node: Node) -> None:
        """SIGKILL the node's VM (no goodbye to its peers or clients) and wait until it is gone."""
        pid = node.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        child = self._children.pop(node.index, None)
        if child is not None:
            child.wait(timeout=30)
        deadline = time.monotonic() + 30
        while node.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self, node: Node) -> None:
        """Start a stopped or killed node again on its data: it rejoins the cluster."""
        if node.pid() is None:
            self._boot(node)
            self.write_state()

    def stop(self) -> None:
        """Stop exactly this cluster's nodes: rabbitmqctl stop, then SIGKILL what remains."""
        with ThreadPoolExecutor(NODES) as pool:
            list(pool.map(self._stop_node, self.nodes))

    def _stop_node(self, node: Node) -> None:
        # Not `stop PIDFILE`: it waits for the PID to vanish, and our own child stays a zombie
        # until we reap it, so it would always wait out its timeout.
        pid = node.pid()
        if pid is None:
            return
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.ctl(node, "stop", timeout=60)
        child = self._children.pop(node.index, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=30)
        # The node removes its pid file before its VM has exited: wait on the PID itself.
        deadline = time.monotonic() + 30
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _running(pid):  # what did not stop in time
            os.kill(pid, signal.SIGKILL)

    # Queries

    def running_nodes(self) -> list[str]:
        """Nodes up, as a live node sees the cluster."""
        for node in self.nodes:
            if node.pid() is None:
                continue
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                status = json.loads(self.ctl(node, "cluster_status", "--formatter", "json"))
                return list(status.get("running_nodes", []))
        return []

    def quorum_leader(self, queue: str) -> Node:
        """The node leading a quorum queue, as a live node says."""
        for node in self.nodes:
            if node.pid() is None:
                continue
            rows = json.loads(self.ctl(node, "list_queues", "name", "leader", "--formatter", "json"))
            for row in rows:
                if row["name"] == queue and row.get("leader"):
                    return self.node(row["leader"])
        raise RuntimeError(f"no live node names a leader of {queue!r}")

    def home_node(self, queue: str) -> Node:
        """The node a classic queue lives on (list_queues shows only an opaque process id)."""
        query = (
            "[{element(4, amqqueue:get_name(Q)), node(amqqueue:get_pid(Q))} || "
            "Q <- rabbit_amqqueue:list(), amqqueue:get_type(Q) =:= rabbit_classic_queue]."
        )
        for node in self.nodes:
            if node.pid() is None:
                continue
            for name, home in re.findall(r'\{<<"([^"]*)">>,\s*([\w@.-]+)\}', self.ctl(node, "eval", query)):
                if name == queue:
                    return self.node(home)
        raise RuntimeError(f"no live node lists {queue!r}")

    def node_of_connection(self, pid: int) -> Node:
        """The node a local process (``pid``) holds an AMQP connection to, read from its sockets
        (the client's side: rabbitmqctl names connections by opaque ids)."""
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        ports = {n.port: n for n in self.nodes}
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            if fields[9] in inodes and remote_port in ports and fields[3] == "01":  # ESTABLISHED
                return ports[remote_port]
        raise RuntimeError(f"process {pid} holds no connection to a node of this cluster")


@contextlib.contextmanager
def running_cluster(base: Path | None = None) -> Iterator[RabbitCluster]:
    """The cluster CI started (``TASKBROKER_TEST_RABBIT_CLUSTER``), left running; otherwise one
    of our own in a fresh folder, stopped and removed at the end."""
    shared = os.environ.get(ENV_BASE)
    if shared:
        yield RabbitCluster(Path(shared))
        return
    own = base or Path(tempfile.mkdtemp(prefix="taskbroker-rabbit-cluster-"))
    cluster = RabbitCluster(own)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(own, ignore_errors=True)


def cluster_available() -> bool:
    return Path(SERVER).exists() and Path(CTL).exists()


def cluster_for_a_module() -> Iterator[RabbitCluster]:
    """The body of a module-scoped fixture: a running 3-node cluster, all three nodes up::

    @pytest.fixture(scope="module")
    def cluster() -> Iterator[RabbitCluster]:
        yield from cluster_for_a_module()
    """
    if not cluster_available():
        pytest.skip("RabbitMQ's server is not installed here: no cluster can be started")
    with running_cluster() as cluster:
        for node in cluster.nodes:  # a test before may have killed one and failed to restart it
            cluster.restart(node)
        yield cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.clusters.rabbitmq")
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--base", type=Path, default=DEFAULT_BASE, help=f"state folder ({DEFAULT_BASE})")
    args = parser.parse_args(argv)
    cluster = RabbitCluster(args.base)
    if args.command == "start":
        started = time.monotonic()
        cluster.start()
        print(f"RabbitMQ cluster up in {time.monotonic() - started:.1f} s under {args.base}", file=sys.stderr)
        print(f"export {ENV_BASE}={args.base}", file=sys.stderr)
        print(cluster.amqp_url)
    elif args.command == "stop":
        cluster.stop()
        shutil.rmtree(args.base, ignore_errors=True)
    else:
        print(json.dumps({"running": cluster.running_nodes()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
