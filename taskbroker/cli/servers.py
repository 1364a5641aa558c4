"""The server commands: api, worker, timeout-daemon, schedule-firer and dev. Each builds its
process's backends once and starts the process through the start-up function of the process's
own package (api.main, scheduler_worker.main, timeout_daemon.main, schedule_firer.main), the
same one `dev` uses. The process packages are imported inside the commands, so that the client
commands start without loading the server side."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Annotated, Any

import typer

from taskbroker import event_loop
from taskbroker.backends import Backends, real_backends
from taskbroker.cli.config import server_settings
from taskbroker.cli.options import MetricsHostOption, MetricsPortOption, key_values
from taskbroker.cli.output import err
from taskbroker.errors import IncompatibleLibrary
from taskbroker.lifecycle import install_stop_signals
from taskbroker.metrics.health import ProcessHealth
from taskbroker.settings import Settings


def run_server(coroutine: Coroutine[Any, Any, None]) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        event_loop.run(coroutine)


@contextlib.contextmanager
def refusing_incompatible_libraries() -> Iterator[None]:
    """Exit 1 with the library and version when a process refuses to start on it."""
    try:
        yield
    except IncompatibleLibrary as exc:
        err.print(f"[red]Cannot start:[/red] {exc}")
        raise typer.Exit(1) from exc


def api(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, help="API processes serving the port (one per core scales the API).")
    ] = 1,
) -> None:
    """Serve the HTTP API (uvicorn). SIGTERM drains in-flight requests, then exits."""
    settings = server_settings("api")
    if workers > 1:
        from taskbroker.cli.api_processes import bind, serve_api_processes

        try:
            listening = bind(host, port)
        except OSError as exc:
            err.print(f"[red]Cannot listen on {host}:{port}:[/red] {exc}")
            raise typer.Exit(1) from exc
        raise typer.Exit(serve_api_processes(listening, workers))
    with refusing_incompatible_libraries():
        from taskbroker.api.main import api_server  # its routes check FastAPI as they are built

        backends = real_backends(settings, connection_name=f"taskbroker-api-{os.getpid()}")
        run_server(api_server(settings, backends, host=host, port=port).serve())


def _serve_process(
    process: str,
    settings: Settings,
    serve: Callable[[Backends, asyncio.Event], Awaitable[None]],
    health: ProcessHealth,
) -> None:
    """Run a server process on the real servers until SIGTERM or SIGINT, then close its
    connections. Its ``health`` (the metrics port's /healthz and /readyz) asks this loop, and is
    ready while Redis and RabbitMQ answer (and whatever checks ``serve`` adds)."""

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        backends = real_backends(settings, connection_name=f"taskbroker-{process}-{os.getpid()}")
        _watch_servers(health, backends)
        health.attach(asyncio.get_running_loop())
        try:
            await serve(backends, stop)
        finally:
            await backends.close()

    with refusing_incompatible_libraries():
        event_loop.run(main())


def _watch_servers(health: ProcessHealth, backends: Backends) -> None:
    async def redis() -> str:
        await backends.store.ping()
        return "ok"

    async def rabbitmq() -> str:
        await backends.broker.ping()
        return "ok"

    health.add_check("redis", redis)
    health.add_check("rabbitmq", rabbitmq)


def worker(
    scheduler: Annotated[str, typer.Option(help="Name of the scheduler whose queue to consume.")],
    concurrency: Annotated[int, typer.Option(min=1, help="Tasks run at once by this process.")] = 4,
    prefetch: Annotated[
        int | None, typer.Option(min=1, help="Deliveries held at once; default: the concurrency.")
    ] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option(
            help="Module (or package) Inline tasks may import; repeat for several. "
            "Default: taskbroker.runtimes.builtin."
        ),
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(help="Runtime option KEY=VALUE, passed to the scheduler's runtime; repeatable."),
    ] = None,
    metrics_port: MetricsPortOption = 0,
    metrics_host: MetricsHostOption = "127.0.0.1",
) -> None:
    """Consume one scheduler's queue and run its tasks. Start any number of replicas to scale.

    SIGTERM: stop taking tasks, let running ones finish within TASKBROKER_SHUTDOWN_GRACE seconds,
    hand the rest back to the queue, exit 0.
    """
    from taskbroker.errors import UnknownScheduler
    from taskbroker.runtimes.base import RuntimeConfigError
    from taskbroker.runtimes.registry import RuntimeUnavailable
    from taskbroker.scheduler_worker.main import serve_worker

    settings = server_settings("worker")
    options = key_values(option or [], "--option")
    health = ProcessHealth()

    async def serve(backends: Backends, stop: asyncio.Event) -> None:
        await serve_worker(
            settings,
            backends,
            scheduler=scheduler,
            concurrency=concurrency,
            prefetch=prefetch,
            allow=tuple(allow or ["taskbroker.runtimes.builtin"]),
            options=options,
            stop=stop,
            health=health,
        )

    try:
        with _metrics_endpoint(metrics_host, metrics_port, health):
            _serve_process(f"worker-{scheduler}", settings, serve, health)
    except (UnknownScheduler, RuntimeUnavailable, RuntimeConfigError) as exc:
        err.print(f"[red]Cannot start the worker:[/red] {exc}")
        raise typer.Exit(1) from exc


def timeout_daemon(
    metrics_port: MetricsPortOption = 0, metrics_host: MetricsHostOption = "127.0.0.1"
) -> None:
    """Expire tasks past their timeout and requeue tasks whose consumer died. Run one or more."""
    from taskbroker.timeout_daemon.main import serve_daemon

    settings = server_settings("timeout-daemon")
    health = ProcessHealth()
    with _metrics_endpoint(metrics_host, metrics_port, health):
        _serve_process("timeout-daemon", settings, functools.partial(serve_daemon, settings), health)


@contextlib.contextmanager
def _metrics_endpoint(host: str, port: int, health: ProcessHealth) -> Iterator[None]:
    """The process's --metrics-port (0: none), with its /healthz and /readyz, for the duration
    of the block; exit 1 if it cannot be bound."""
    from taskbroker.metrics.endpoint import MetricsEndpoint

    if not port:
        yield
        return
    try:
        endpoint = MetricsEndpoint.start(host, port, health)
    except OSError as exc:
        err.print(f"[red]Cannot serve metrics on {host}:{port}:[/red] {exc}")
        raise typer.Exit(1) from exc
    try:
        yield
    finally:
        endpoint.close()


def dev(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).")] = 8000,
    concurrency: Annotated[int, typer.Option(min=1, help="Tasks the built-in consumer runs at once.")] = 4,
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow",
            help="A module (or package) whose functions the built-in consumer may run; repeat for "
            "more. Default: taskbroker.runtimes.builtin.",
        ),
    ] = None,
) -> None:
    """Everything in one process for trying taskbroker: the API, a `default` Inline scheduler with its
    consumer, the timeout daemon and the schedule firer. Without TASKBROKER_REDIS_URL /
    TASKBROKER_AMQP_URL it needs no servers: it runs on embedded ones that keep nothing after exit."""
    from taskbroker.cli.dev import DEFAULT_ALLOW, serve_dev

    settings = server_settings("dev")
    modules = tuple(allow) if allow else DEFAULT_ALLOW
    with refusing_incompatible_libraries():
        run_server(serve_dev(settings, host=host, port=port, concurrency=concurrency, allow=modules))


def schedule_firer(
    metrics_port: MetricsPortOption = 0, metrics_host: MetricsHostOption = "127.0.0.1"
) -> None:
    """Fire due recurring schedules (creating their tasks). Run one or more: replicas never fire
    one fire time twice."""
    from taskbroker.schedule_firer.main import serve_firer

    settings = server_settings("schedule-firer")
    health = ProcessHealth()
    with _metrics_endpoint(metrics_host, metrics_port, health):
        _serve_process("schedule-firer", settings, functools.partial(serve_firer, settings), health)
