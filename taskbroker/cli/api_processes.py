"""`taskbroker api --workers N`: N API processes serving one port, so the API scales over a
host's cores without a load balancer in front.

This process binds the socket, then starts N processes (spawned, not forked: each builds its
own event loop and connections from scratch) that serve it, each the same API process `taskbroker
api` runs alone: the bounded, draining uvicorn server of taskbroker.api.main over its own
backends. The kernel hands each connection to one of the processes waiting on the socket.

Not uvicorn's ``workers=`` (uvicorn.run, or its Multiprocess supervisor): it starts
``uvicorn.Server`` from a plain ``uvicorn.Config`` and an import string, so the processes would
lose the header and slow-client limits and the draining shutdown our server adds; the
supervisor class itself is not part of uvicorn's documented API. The one uvicorn API used here,
``Server.serve(sockets=...)``, is public. Not SO_REUSEPORT either: one socket bound once fails
at once, in this process, when the port is taken, and works wherever Python runs.

Shutdown: SIGTERM or SIGINT here is passed on to every process, each drains its requests as the
single API does, and this process exits 0 once all have exited 0. A process that exits on its
own (it could not start, or it crashed) stops the others, and this one exits 1: a supervisor
(systemd, Kubernetes, compose) restarts the whole, which is what it would do for one process.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType

import structlog

log = structlog.get_logger("taskbroker.api")


def bind(host: str, port: int) -> socket.socket:
    """The listening socket every API process accepts on (inherited by each)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.bind((host, port))
    listening.listen(2048)  # uvicorn's default backlog
    listening.set_inheritable(True)
    return listening


def serve_api_processes(listening: socket.socket, workers: int) -> int:
    """Run ``workers`` API processes on the ``listening`` socket (see ``bind``) until a stop
    signal; the exit status."""
    host, port = listening.getsockname()[:2]
    context = multiprocessing.get_context("spawn")
    processes: list[BaseProcess] = [
        context.Process(target=serve_one, args=(listening, host, port), name=f"taskbroker-api-{number}")
        for number in range(workers)
    ]
    asked_to_stop = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal asked_to_stop
        asked_to_stop = True
        _terminate(processes)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        for process in processes:
            process.start()
        listening.close()  # the processes hold it now
        log.info("api.processes_started", workers=workers, pids=[p.pid for p in processes], port=port)
        failed = _wait_for_all(processes, lambda: asked_to_stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    exitcodes = [p.exitcode for p in processes]
    log.info("api.processes_stopped", exitcodes=exitcodes)
    return 1 if failed or any(code != 0 for code in exitcodes) else 0


def _wait_for_all(processes: list[BaseProcess], asked_to_stop: Callable[[], bool]) -> bool:
    """Wait until every process has exited; whether one exited before a stop was asked for (the
    others are then stopped)."""
    failed = False
    running = list(processes)
    while running:
        ready = multiprocessing.connection.wait([p.sentinel for p in running])
        for process in [p for p in running if p.sentinel in ready]:
            process.join()
            running.remove(process)
            if not asked_to_stop() and not failed:
                log.error("api.process_exited", pid=process.pid, exitcode=process.exitcode)
                failed = True
                _terminate(running)
    return failed


def _terminate(processes: list[BaseProcess]) -> None:
    """SIGTERM to each process still running: each drains, then exits 0."""
    for process in processes:
        if process.pid is not None and process.exitcode is None:
            os.kill(process.pid, signal.SIGTERM)


def serve_one(listening: socket.socket, host: str, port: int) -> None:
    """One API process (the spawned processes' entry point): its own settings, backends and
    server, serving the shared socket.

    It leaves the terminal's process group, so that a Ctrl-C reaches the supervisor only, which
    passes on one SIGTERM (uvicorn takes a second signal as "exit now"); and on Linux it is sent
    SIGTERM if the supervisor dies, so none outlives it."""
    os.setpgrp()
    _stop_with_parent()
    from taskbroker.backends import real_backends
    from taskbroker.cli.config import server_settings
    from taskbroker.cli.servers import refusing_incompatible_libraries, run_server

    settings = server_settings("api")
    with refusing_incompatible_libraries():
        from taskbroker.api.main import api_server  # its routes check FastAPI as they are built

        backends = real_backends(settings, connection_name=f"taskbroker-api-{os.getpid()}")
        run_server(api_server(settings, backends, host=host, port=port).serve(sockets=[listening]))


def _stop_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    set_parent_death_signal = 1  # PR_SET_PDEATHSIG, prctl(2)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(set_parent_death_signal, signal.SIGTERM)
    if os.getppid() == 1:  # the supervisor died before the call
        os.kill(os.getpid(), signal.SIGTERM)
