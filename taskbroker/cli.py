"""The `taskbroker` command: server processes (api, worker, timeout-daemon, dev) and client commands.

This module and taskbroker.dev are the composition root: the only shared modules that import the
process packages.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from taskbroker import event_loop
from taskbroker.backends import Backends, redis_client
from taskbroker.client import Client, ClientError, TaskSpec
from taskbroker.errors import StoreUnavailable
from taskbroker.logs import configure_logging
from taskbroker.models import utcnow
from taskbroker.settings import Settings
from taskbroker.tokens import AdminScopeRefused, Role, TokenRecord, TokenStore, check_scope

app = typer.Typer(
    help="taskbroker: a distributed task broker. Run `taskbroker dev` to try it on one machine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

UrlOption = Annotated[
    str,
    typer.Option("--url", envvar="TASKBROKER_URL", help="Base URL of the taskbroker API."),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="TASKBROKER_TOKEN",
        help="API token (prefer the TASKBROKER_TOKEN variable: options show up in process lists).",
        show_default=False,
    ),
]
MetricsPortOption = Annotated[
    int,
    typer.Option(
        "--metrics-port", min=0, max=65535, help="Serve Prometheus metrics on this port at /metrics; 0: off."
    ),
]
MetricsHostOption = Annotated[
    str, typer.Option("--metrics-host", help="Interface the metrics port binds (0.0.0.0 in containers).")
]


def _settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        err.print(f"[red]Invalid TASKBROKER_* configuration:[/red]\n{exc}")
        raise typer.Exit(2) from exc
    configure_logging(settings.log_format)
    return settings


def _server_settings(process: str) -> Settings:
    """Settings for a server process, logged at start so operators see what it connects to
    (passwords in the URLs are redacted by the log pipeline)."""
    settings = _settings()
    structlog.get_logger("taskbroker").info(
        "process.starting",
        process=process,
        redis_url=settings.redis_url,
        amqp_url=settings.amqp_url,
        key_prefix=settings.key_prefix,
        admin_token_set=settings.admin_token is not None,
    )
    return settings


def _run(coroutine: Any) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        event_loop.run(coroutine)


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8000,
) -> None:
    """Serve the HTTP API (uvicorn). SIGTERM drains in-flight requests, then exits."""
    from api.app import create_app
    from api.http_limits import HttpLimits
    from api.server import draining_server
    from taskbroker.backends import real_backends

    settings = _server_settings("api")
    backends = real_backends(settings, connection_name=f"taskbroker-api-{os.getpid()}")
    app = create_app(settings, backends)
    _run(draining_server(app, host=host, port=port, limits=HttpLimits.of(settings)).serve())


def _serve_process(
    process: str, settings: Settings, serve: Callable[[Backends, asyncio.Event], Awaitable[None]]
) -> None:
    """Run a server process on the real servers until SIGTERM or SIGINT, then close its connections."""
    from taskbroker.backends import real_backends
    from taskbroker.lifecycle import install_stop_signals

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        backends = real_backends(settings, connection_name=f"taskbroker-{process}-{os.getpid()}")
        try:
            await serve(backends, stop)
        finally:
            await backends.close()

    event_loop.run(main())


@app.command()
def worker(
    scheduler: Annotated[str, typer.Option(help="Name of the scheduler whose queue to consume.")],
    concurrency: Annotated[int, typer.Option(min=1, help="Tasks run at once by this process.")] = 4,
    prefetch: Annotated[
        int | None, typer.Option(min=1, help="Deliveries held at once; default: the concurrency.")
    ] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option(
            help="Module (or package) Inline tasks may import; repeat for several. Default: runtimes.builtin."
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
    from runtimes.base import RuntimeConfigError
    from runtimes.registry import RuntimeUnavailable
    from scheduler_worker.main import serve_worker
    from taskbroker.errors import UnknownScheduler

    settings = _server_settings("worker")
    options = _key_values(option or [], "--option")

    async def serve(backends: Backends, stop: asyncio.Event) -> None:
        await serve_worker(
            settings,
            backends,
            scheduler=scheduler,
            concurrency=concurrency,
            prefetch=prefetch,
            allow=tuple(allow or ["runtimes.builtin"]),
            options=options,
            stop=stop,
        )

    try:
        with _metrics_endpoint(metrics_host, metrics_port):
            _serve_process(f"worker-{scheduler}", settings, serve)
    except (UnknownScheduler, RuntimeUnavailable, RuntimeConfigError) as exc:
        err.print(f"[red]Cannot start the worker:[/red] {exc}")
        raise typer.Exit(1) from exc


@app.command("timeout-daemon")
def timeout_daemon(
    metrics_port: MetricsPortOption = 0, metrics_host: MetricsHostOption = "127.0.0.1"
) -> None:
    """Expire tasks past their timeout and requeue tasks whose consumer died. Run one or more."""
    from timeout_daemon.main import serve_daemon

    settings = _server_settings("timeout-daemon")
    with _metrics_endpoint(metrics_host, metrics_port):
        _serve_process("timeout-daemon", settings, functools.partial(serve_daemon, settings))


@contextlib.contextmanager
def _metrics_endpoint(host: str, port: int) -> Iterator[None]:
    """The process's --metrics-port (0: none) for the duration of the block; exit 1 if it cannot
    be bound."""
    from taskbroker.metrics.endpoint import MetricsEndpoint

    if not port:
        yield
        return
    try:
        endpoint = MetricsEndpoint.start(host, port)
    except OSError as exc:
        err.print(f"[red]Cannot serve metrics on {host}:{port}:[/red] {exc}")
        raise typer.Exit(1) from exc
    try:
        yield
    finally:
        endpoint.close()


@app.command()
def dev(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).")] = 8000,
    concurrency: Annotated[int, typer.Option(min=1, help="Tasks the built-in consumer runs at once.")] = 4,
) -> None:
    """Everything in one process for trying taskbroker: the API, a `default` Inline scheduler with its
    consumer, the timeout daemon and the schedule firer. Without TASKBROKER_REDIS_URL /
    TASKBROKER_AMQP_URL it needs no servers: it runs on embedded ones that keep nothing after exit."""
    from taskbroker.dev import serve_dev

    settings = _server_settings("dev")
    _run(serve_dev(settings, host=host, port=port, concurrency=concurrency))


# Client commands


def _key_values(pairs: list[str], flag: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            err.print(f"[red]{flag} takes KEY=VALUE, got {pair!r}[/red]")
            raise typer.Exit(2)
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw
    return values


@contextlib.contextmanager
def _api(url: str, token: str | None) -> Iterator[Client]:
    """A client for one command: an error from the API ends the command with its message, exit 1."""
    try:
        with Client(url, token=token) as client:
            yield client
    except ClientError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@app.command()
def schedule(
    scheduler: Annotated[str, typer.Argument(help="Scheduler to run the task.")],
    url: UrlOption = "http://127.0.0.1:8000",
    token: TokenOption = None,
    function: Annotated[
        str | None, typer.Option(help="Inline callable as module:function, e.g. runtimes.builtin:echo.")
    ] = None,
    arg: Annotated[
        list[str] | None, typer.Option(help="Positional argument (JSON or text); repeatable.")
    ] = None,
    kwarg: Annotated[
        list[str] | None, typer.Option(help="Keyword argument KEY=VALUE (JSON or text); repeatable.")
    ] = None,
    attributes: Annotated[
        str | None, typer.Option(help="All attributes as a JSON object (for runtimes other than inline).")
    ] = None,
    timeout: Annotated[str | None, typer.Option(help="Expiry time, ISO-8601 with timezone.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the final state and print it.")] = False,
    priority: Annotated[int, typer.Option(min=0, max=9, help="0 (lowest, default) to 9 (highest).")] = 0,
    key: Annotated[
        str | None, typer.Option(help="Idempotency key: while a task holding it is live, print that task.")
    ] = None,
    callback_url: Annotated[
        str | None, typer.Option(help="POST the final task here (host and port on TASKBROKER_WEBHOOK_HOSTS).")
    ] = None,
    count: Annotated[
        int, typer.Option(min=1, help="Schedule this many copies, in batches, with a progress bar.")
    ] = 1,
    batch_size: Annotated[int, typer.Option(min=1, max=1000, help="Tasks per batch with --count.")] = 1000,
) -> None:
    """Schedule one task (or --count N of them) and print it (or their ids)."""
    body: dict[str, Any] = json.loads(attributes) if attributes else {}
    if function:
        body["function"] = function
    if arg:
        body["args"] = [_key_values([f"_={a}"], "--arg")["_"] for a in arg]
    if kwarg:
        body["kwargs"] = _key_values(kwarg, "--kwarg")
    if count > 1:
        if key is not None:
            err.print("[red]--key names one task; it cannot go with --count[/red]")
            raise typer.Exit(2)
        spec = TaskSpec(scheduler, body, timeout, priority=priority, callback_url=callback_url)
        _schedule_many(url, token, spec, count, batch_size, wait)
        return
    with _api(url, token) as client:
        task = client.schedule(
            scheduler, body, timeout, priority=priority, key=key, callback_url=callback_url
        )
        if wait:
            with err.status(f"waiting for task {task.id}..."):
                task = client.wait(task.id)
    _print_json(task.model_dump(mode="json"))
    if wait and task.state.value != "complete":
        raise typer.Exit(1)


def _schedule_many(
    url: str, token: str | None, spec: TaskSpec, count: int, batch_size: int, wait: bool
) -> None:
    from taskbroker.watching import schedule_with_progress

    if wait:
        err.print("[red]--wait takes one task; follow many with `taskbroker tasks watch`[/red]")
        raise typer.Exit(2)
    with _api(url, token) as client:
        tasks = schedule_with_progress(
            client, (spec for _ in range(count)), total=count, batch_size=batch_size, console=err
        )
    sys.stdout.write("".join(f"{t.id}\n" for t in tasks))


@app.command()
def task(
    task_id: Annotated[str, typer.Argument(help="Task id.")],
    url: UrlOption = "http://127.0.0.1:8000",
    token: TokenOption = None,
) -> None:
    """Print one task."""
    with _api(url, token) as client:
        _print_json(client.get(task_id).model_dump(mode="json"))


@app.command()
def schedulers(url: UrlOption = "http://127.0.0.1:8000", token: TokenOption = None) -> None:
    """List schedulers with queue depth and consumers: what operators scale by."""
    with _api(url, token) as client:
        rows = client.schedulers()
    table = Table("name", "runtime", "waiting", "consumers", "live tasks", "description")
    for s in rows:
        table.add_row(
            s.name,
            s.runtime,
            "?" if s.messages is None else str(s.messages),
            "?" if s.consumers is None else str(s.consumers),
            str(s.live_tasks),
            s.description,
        )
    Console().print(table)


tasks_app = typer.Typer(help="Follow tasks through the API.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")


@tasks_app.command("watch")
def tasks_watch(
    url: UrlOption = "http://127.0.0.1:8000",
    token: TokenOption = None,
    scheduler: Annotated[str | None, typer.Option(help="Only this scheduler's tasks.")] = None,
) -> None:
    """Print a line for every task state change as it happens (Ctrl-C stops)."""
    from taskbroker.watching import watch

    try:
        with Client(url, token=token, timeout=10) as client:
            watch(client, Console(highlight=False), scheduler=scheduler)
    except ClientError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        return


# Token management, straight against Redis (for operators: no API token is needed to bootstrap)

token_app = typer.Typer(
    help="Create, list and revoke API tokens, directly in Redis (TASKBROKER_REDIS_URL). Admins can "
    "do the same over HTTP: POST /token, GET /tokens, DELETE /token/{id}.",
    no_args_is_help=True,
)
app.add_typer(token_app, name="token")

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _expiry(expires: str | None) -> datetime | None:
    if expires is None:
        return None
    match = _DURATION.match(expires)
    if match is None:
        err.print(f"[red]--expires takes a duration like 30d, 12h, 90m or 3600s; got {expires!r}[/red]")
        raise typer.Exit(2)
    return utcnow() + timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


async def _with_tokens(settings: Settings, action: Callable[[TokenStore], Awaitable[Any]]) -> Any:
    client = redis_client(settings.redis_url)
    try:
        return await action(TokenStore(client, settings.key_prefix, admin_token=None))
    finally:
        await client.aclose()


def _token_call(settings: Settings, action: Callable[[TokenStore], Awaitable[Any]]) -> Any:
    try:
        return asyncio.run(_with_tokens(settings, action))
    except StoreUnavailable as exc:
        err.print(f"[red]{exc}: is TASKBROKER_REDIS_URL right?[/red]")
        raise typer.Exit(1) from exc


@token_app.command("create")
def token_create(
    role: Annotated[Role, typer.Option(help="admin, client or worker.")],
    scheduler: Annotated[
        list[str] | None, typer.Option(help="Limit the token to this scheduler; repeatable. Default: all.")
    ] = None,
    name: Annotated[str, typer.Option(help="A label for people: who or what uses the token.")] = "",
    expires: Annotated[
        str | None, typer.Option(help="Lifetime such as 30d, 12h or 90m. Default: no expiry.")
    ] = None,
) -> None:
    """Create a token and print it. It is shown this once only: only its hash is stored. An
    admin token takes no --scheduler: nothing could hold an admin to it."""
    try:
        check_scope(role, scheduler)
    except AdminScopeRefused as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    settings = _settings()
    expires_at = _expiry(expires)
    record, token = _token_call(
        settings,
        lambda tokens: tokens.create(
            role=role, name=name, schedulers=scheduler or None, expires_at=expires_at
        ),
    )
    _print_json({**record.model_dump(mode="json"), "token": token})
    err.print("Store the token now: it cannot be shown again.")


@token_app.command("list")
def token_list() -> None:
    """List tokens (never their secrets)."""
    settings = _settings()
    records: list[TokenRecord] = _token_call(settings, lambda tokens: tokens.list())
    table = Table("id", "role", "name", "schedulers", "created", "expires")
    for r in records:
        table.add_row(
            r.id,
            r.role.value,
            r.name,
            "all" if r.schedulers is None else ", ".join(r.schedulers),
            r.created_at.isoformat(timespec="seconds"),
            "never" if r.expires_at is None else r.expires_at.isoformat(timespec="seconds"),
        )
    Console().print(table)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="The token's id (see `token list`).")]) -> None:
    """Revoke a token: every API replica refuses it from now on."""
    settings = _settings()
    if not _token_call(settings, lambda tokens: tokens.revoke(token_id)):
        err.print(f"[red]no token with id {token_id!r}[/red]")
        raise typer.Exit(1)
    err.print(f"revoked {token_id}")


# Recurring schedules (client commands, over HTTP)

schedules_app = typer.Typer(
    help="Recurring schedules: list them (no subcommand), force a run, load a YAML file of them. "
    "The `schedule-firer` process fires them.",
)
app.add_typer(schedules_app, name="schedules")


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


@schedules_app.callback(invoke_without_command=True)
def schedules_list(
    ctx: typer.Context, url: UrlOption = "http://127.0.0.1:8000", token: TokenOption = None
) -> None:
    """Without a subcommand: a table of schedules (id, name, scheduler, trigger, next run, last state)."""
    if ctx.invoked_subcommand is not None:
        return
    from taskbroker.triggers import describe

    with _api(url, token) as client:
        rows = client.schedules_list()
    table = Table("id", "name", "scheduler", "trigger", "next run", "last state", "runs")
    for s in rows:
        table.add_row(
            str(s.id),
            s.name,
            s.scheduler,
            describe(s.trigger_spec(None)),
            _when(s.next_run_at) if s.enabled else "paused",
            s.last_state or "-",
            str(s.runs),
        )
    Console().print(table)


@schedules_app.command("run")
def schedules_run(
    schedule_id: Annotated[str, typer.Argument(help="The schedule's id (see `taskbroker schedules`).")],
    url: UrlOption = "http://127.0.0.1:8000",
    token: TokenOption = None,
) -> None:
    """Force a run now (the next fire time is unchanged) and print the task it created."""
    with _api(url, token) as client:
        _print_json(client.schedule_run(schedule_id).model_dump(mode="json"))


@schedules_app.command("load")
def schedules_load(
    file: Annotated[Path, typer.Argument(help="A YAML file with a list under `schedules:`.")],
    url: UrlOption = "http://127.0.0.1:8000",
    token: TokenOption = None,
) -> None:
    """Apply a file of schedules idempotently (matched by name): create new ones, update changed
    ones, leave the rest. Prints one line per schedule: created, updated or unchanged."""
    from taskbroker.schedule_file import Action, ScheduleFileError, plan, read_schedule_file

    try:
        declared = read_schedule_file(file)
    except ScheduleFileError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    with _api(url, token) as client:
        for change in plan(declared, client.schedules_list()):
            if change.action is Action.CREATE:
                schedule_id = str(client.schedule_create(change.spec).id)
            elif change.action is Action.UPDATE:
                assert change.schedule_id is not None
                schedule_id = str(client.schedule_update(change.schedule_id, change.fields).id)
            else:
                schedule_id = change.schedule_id or ""
            detail = f" ({', '.join(sorted(change.fields))})" if change.fields else ""
            sys.stdout.write(f"{change.action.value} {change.name} {schedule_id}{detail}\n")


@app.command("schedule-firer")
def schedule_firer() -> None:
    """Fire due recurring schedules (creating their tasks). Run one or more: replicas never fire
    one fire time twice."""
    from schedule_firer.main import serve_firer

    settings = _server_settings("schedule-firer")
    _serve_process("schedule-firer", settings, functools.partial(serve_firer, settings))
