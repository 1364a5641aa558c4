"""`taskbroker dev`: the API, a consumer of a `default` Inline scheduler and the timeout daemon in
one process, on embedded backends unless Redis and RabbitMQ URLs are configured."""

from __future__ import annotations

import asyncio
import json
import os

import structlog

from api.app import create_app
from api.server import DrainingServer, draining_server
from runtimes.base import RuntimeConfig
from runtimes.inline import InlineRuntime
from scheduler_worker.consumer import Consumer
from taskbroker.backends import Backends, embedded_backends, real_backends
from taskbroker.models import SchedulerDefinition
from taskbroker.names import queue_name
from taskbroker.settings import Settings
from timeout_daemon.daemon import TimeoutDaemon

log = structlog.get_logger("taskbroker.dev")

DEFAULT_SCHEDULER = "default"


def uses_embedded_backends() -> bool:
    return not (os.environ.get("TASKBROKER_REDIS_URL") or os.environ.get("TASKBROKER_AMQP_URL"))


def banner(url: str, embedded: bool) -> str:
    example = json.dumps(
        {
            "scheduler": DEFAULT_SCHEDULER,
            "attributes": {"function": "runtimes.builtin:echo", "kwargs": {"hello": "world"}},
        }
    )
    backends = (
        "embedded Redis and queue (nothing is kept after exit)"
        if embedded
        else "configured Redis and RabbitMQ"
    )
    return (
        f"\ntaskbroker dev is serving at {url} on {backends}.\n"
        f"Scheduler '{DEFAULT_SCHEDULER}' (inline) has a consumer. Try:\n\n"
        f"  curl -s -X POST {url}/task/schedule -H 'Content-Type: application/json' -d '{example}'\n"
        f"  curl -s {url}/task/<id from the answer>\n\n"
        f"API docs: {url}/docs   Stop: Ctrl-C\n"
    )


async def serve_dev(settings: Settings, *, host: str, port: int, concurrency: int) -> None:
    embedded = uses_embedded_backends()
    backends: Backends = (
        embedded_backends(settings) if embedded else real_backends(settings, connection_name="taskbroker-dev")
    )
    await backends.broker.connect()
    definition = SchedulerDefinition(name=DEFAULT_SCHEDULER, runtime="inline", description="taskbroker dev")
    await backends.broker.declare(queue_name(settings.key_prefix, DEFAULT_SCHEDULER))
    await backends.store.register_scheduler(definition)

    stop = asyncio.Event()
    runtime = InlineRuntime(RuntimeConfig(scheduler=DEFAULT_SCHEDULER, concurrency=concurrency))
    consumer = Consumer(
        settings=settings,
        store=backends.store,
        broker=backends.broker,
        runtime=runtime,
        scheduler=DEFAULT_SCHEDULER,
        concurrency=concurrency,
    )
    daemon = TimeoutDaemon(settings=settings, store=backends.store, broker=backends.broker)
    background = [asyncio.create_task(consumer.run(stop)), asyncio.create_task(daemon.run(stop))]

    app = create_app(settings, backends, owns_backends=False)
    server = draining_server(app, host=host, port=port)
    announce = asyncio.create_task(_announce_when_started(server, host, port, embedded))
    try:
        await server.serve()  # returns on SIGINT / SIGTERM
    finally:
        announce.cancel()
        stop.set()
        await asyncio.gather(*background, return_exceptions=True)
        await backends.close()


async def _announce_when_started(server: DrainingServer, host: str, port: int, embedded: bool) -> None:
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for this)
        await asyncio.sleep(0.05)
    bound_port = port
    if server.servers and server.servers[0].sockets:
        bound_port = server.servers[0].sockets[0].getsockname()[1]
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(banner(f"http://{shown_host}:{bound_port}", embedded), flush=True)
