"""`taskbroker dev`: the API, a consumer of a `default` Inline scheduler, the timeout daemon and
the schedule firer in one process, on embedded backends unless Redis and RabbitMQ URLs are
configured. Each is started by the same function as its own command (api.main,
scheduler_worker.main, timeout_daemon.main, schedule_firer.main), over one shared Backends."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Callable

import structlog
from pydantic import SecretStr

from taskbroker.api.main import api_server
from taskbroker.api.server import DrainingServer
from taskbroker.backends import Backends, embedded_backends, real_backends
from taskbroker.errors import QueueIncompatible
from taskbroker.models import SchedulerDefinition
from taskbroker.names import queue_name
from taskbroker.schedule_firer.main import serve_firer
from taskbroker.scheduler_worker.main import serve_worker
from taskbroker.settings import Settings
from taskbroker.timeout_daemon.main import serve_daemon

log = structlog.get_logger("taskbroker.dev")

DEFAULT_SCHEDULER = "default"
DEFAULT_ALLOW = ("taskbroker.runtimes.builtin",)
"""What the `default` scheduler's Inline tasks may import: `taskbroker worker`'s default."""


def uses_embedded_backends() -> bool:
    return not (os.environ.get("TASKBROKER_REDIS_URL") or os.environ.get("TASKBROKER_AMQP_URL"))


def banner(url: str, embedded: bool, admin_token: str, generated: bool) -> str:
    example = json.dumps(
        {
            "scheduler": DEFAULT_SCHEDULER,
            "attributes": {"function": "taskbroker.runtimes.builtin:echo", "kwargs": {"hello": "world"}},
        }
    )
    backends = (
        "embedded Redis and queue (nothing is kept after exit)"
        if embedded
        else "configured Redis and RabbitMQ"
    )
    token_line = (
        f"Admin token (generated for this run; set TASKBROKER_ADMIN_TOKEN to choose one): {admin_token}"
        if generated
        else "Admin token: the one in TASKBROKER_ADMIN_TOKEN"
    )
    return (
        f"\ntaskbroker dev is serving at {url} on {backends}.\n"
        f"{token_line}\n"
        f"Scheduler '{DEFAULT_SCHEDULER}' (inline) has a consumer. Try:\n\n"
        f"  export TASKBROKER_TOKEN={admin_token if generated else '$TASKBROKER_ADMIN_TOKEN'}\n"
        f'  curl -s -X POST {url}/task/schedule -H "Authorization: Bearer $TASKBROKER_TOKEN" \\\n'
        f"       -H 'Content-Type: application/json' -d '{example}'\n"
        f'  curl -s -H "Authorization: Bearer $TASKBROKER_TOKEN" {url}/task/<id from the answer>\n\n'
        f"Dashboard (sign in with the admin token): {url}/ui\n"
        f"API docs (no token needed in dev): {url}/docs   Stop: Ctrl-C\n"
    )


async def serve_dev(
    settings: Settings, *, host: str, port: int, concurrency: int, allow: tuple[str, ...]
) -> None:
    if "api_docs" not in settings.model_fields_set:
        # The banner's docs link is for a browser, which sends no token; `dev` is a local trial.
        settings = settings.model_copy(update={"api_docs": "public"})
    generated = settings.admin_token is None
    if generated:
        settings = settings.model_copy(update={"admin_token": SecretStr(secrets.token_urlsafe(32))})
    assert settings.admin_token is not None
    admin_token = settings.admin_token.get_secret_value()
    embedded = uses_embedded_backends()
    backends: Backends = (
        embedded_backends(settings) if embedded else real_backends(settings, connection_name="taskbroker-dev")
    )
    await backends.broker.connect()
    definition = SchedulerDefinition(name=DEFAULT_SCHEDULER, runtime="inline", description="taskbroker dev")
    try:
        await backends.broker.declare(queue_name(settings.key_prefix, DEFAULT_SCHEDULER))
    except QueueIncompatible as exc:  # an older taskbroker's queue: tasks still flow, unprioritised
        log.warning("dev.queue_without_priorities", error=str(exc))
    await backends.store.register_scheduler(definition)

    stop = asyncio.Event()
    background = [
        asyncio.create_task(
            serve_worker(
                settings,
                backends,
                scheduler=DEFAULT_SCHEDULER,
                concurrency=concurrency,
                prefetch=None,
                allow=allow,
                options={},
                stop=stop,
            )
        ),
        asyncio.create_task(serve_daemon(settings, backends, stop)),
        asyncio.create_task(serve_firer(settings, backends, stop)),
    ]
    server = api_server(settings, backends, host=host, port=port, owns_backends=False)

    def banner_for(url: str) -> str:
        return banner(url, embedded, admin_token, generated)

    announce = asyncio.create_task(_announce_when_started(server, host, port, banner_for))
    try:
        await server.serve()  # returns on SIGINT / SIGTERM
    finally:
        announce.cancel()
        stop.set()
        await asyncio.gather(*background, return_exceptions=True)
        await backends.close()


async def _announce_when_started(
    server: DrainingServer, host: str, port: int, banner_for: Callable[[str], str]
) -> None:
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for this)
        await asyncio.sleep(0.05)
    bound_port = port
    if server.servers and server.servers[0].sockets:
        bound_port = server.servers[0].sockets[0].getsockname()[1]
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(banner_for(f"http://{shown_host}:{bound_port}"), flush=True)
