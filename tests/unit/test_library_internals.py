"""Each private part of a library that taskbroker's fast path is built on, checked at startup:
the installed version has it, and a version without it is refused, naming the library, rather
than served by a silent fallback (docs/performance.md, "What each seam is worth")."""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from fastapi import routing as fastapi_routing
from fastapi.dependencies import models as fastapi_models
from pika.adapters.base_connection import BaseConnection
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from taskbroker.api.direct_route import require_fastapi_internals
from taskbroker.api.http_limits import require_uvicorn_protocol
from taskbroker.api.scheduling_lane import LanedFastAPI
from taskbroker.errors import IncompatibleLibrary
from taskbroker.queue.amqp import AmqpBroker, require_pika_frame_hook
from taskbroker.script_calls import require_redis_connection_api

PYPROJECT = Path(__file__).parents[2] / "pyproject.toml"


def refused(check: Any, library: str) -> IncompatibleLibrary:
    with pytest.raises(IncompatibleLibrary) as caught:
        check()
    assert caught.value.library == library
    assert caught.value.version in str(caught.value)
    assert "pyproject.toml" in str(caught.value)
    return caught.value


def test_the_installed_libraries_have_every_private_part_taskbroker_uses() -> None:
    require_fastapi_internals()
    require_uvicorn_protocol()
    require_pika_frame_hook()
    require_redis_connection_api.__wrapped__()
    LanedFastAPI()


# FastAPI


def test_a_fastapi_without_the_effective_route_context_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(fastapi_routing, "_effective_route_context_var")

    assert "_effective_route_context_var" in str(refused(require_fastapi_internals, "FastAPI"))


def test_a_fastapi_whose_dependant_has_a_new_kind_of_parameter_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    grown = dataclasses.make_dataclass(
        "Dependant", [("form_file_param_name", Any, None)], bases=(fastapi_models.Dependant,)
    )
    monkeypatch.setattr("taskbroker.api.direct_route.Dependant", grown)

    assert "form_file_param_name" in str(refused(require_fastapi_internals, "FastAPI"))


def test_a_fastapi_without_its_telemetry_switch_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    init = FastAPI.__init__

    def without_telemetry(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        del self._native_telemetry

    monkeypatch.setattr(FastAPI, "__init__", without_telemetry)

    assert "_native_telemetry" in str(refused(LanedFastAPI, "FastAPI"))


def test_the_lane_finds_an_exception_handler_as_starlette_does() -> None:
    """The lane answers errors itself, looking handlers up the way Starlette's exception
    middleware does (starlette._exception_handler): they must agree on every kind of error."""
    from starlette._exception_handler import _lookup_exception_handler
    from starlette.exceptions import HTTPException

    from taskbroker.errors import QueueMissing, TaskbrokerError, UnknownScheduler

    def handler(_request: Request, _exc: Exception) -> Response:
        return Response()

    app = LanedFastAPI()
    for key in (TaskbrokerError, UnknownScheduler, 404, Exception):
        app.add_exception_handler(key, functools.partial(handler))  # a distinct handler each
    handlers: dict[Any, Any] = app.exception_handlers
    # Starlette's exception middleware holds every handler but Exception's (the error middleware's).
    exception_middleware = {k: v for k, v in handlers.items() if k not in (Exception, 500)}
    for error in (UnknownScheduler("x"), QueueMissing("x"), ValueError("x")):
        handler, unexpected = app._error_handler(error)
        expected = _lookup_exception_handler(exception_middleware, error)
        assert handler is (expected or handlers[Exception]), error
        assert unexpected is (expected is None)
    http_error = HTTPException(404)
    assert app._error_handler(http_error) == (handlers[404], False)


# uvicorn


@pytest.mark.parametrize("method", ["on_header", "send_400_response", "timeout_keep_alive_handler"])
def test_a_uvicorn_protocol_without_a_method_the_limits_extend_is_refused(
    monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    monkeypatch.delattr(HttpToolsProtocol, method)

    assert method in str(refused(require_uvicorn_protocol, "uvicorn"))


@pytest.mark.parametrize("attribute", ["flow", "cycle", "timeout_keep_alive_task", "response_complete"])
def test_a_uvicorn_protocol_that_no_longer_sets_an_attribute_we_read_is_refused(
    monkeypatch: pytest.MonkeyPatch, attribute: str
) -> None:
    source = Path(httptools_impl.__file__).read_text()
    monkeypatch.setattr(
        "taskbroker.api.http_limits.inspect.getsource",
        lambda _module: source.replace(f"self.{attribute} =", f"self.renamed_{attribute} ="),
    )

    assert attribute in str(refused(require_uvicorn_protocol, "uvicorn"))


# pika


def test_a_pika_without_its_frame_hook_is_refused_when_a_broker_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(BaseConnection, "_adapter_emit_data")

    assert "_adapter_emit_data" in str(refused(require_pika_frame_hook, "pika"))
    refused(lambda: AmqpBroker("amqp://guest:guest@127.0.0.1:5672/"), "pika")


def test_a_pika_whose_frame_hook_writes_elsewhere_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def emit(self: Any, data: bytes) -> None:
        self._stream.write(data)

    monkeypatch.setattr(BaseConnection, "_adapter_emit_data", emit)

    refused(require_pika_frame_hook, "pika")


# redis-py


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (AbstractConnection, "send_packed_command"),
        (AbstractConnection, "read_response"),
        (AbstractConnection, "disconnect"),
        (ConnectionPool, "get_connection"),
        (ConnectionPool, "release"),
    ],
)
def test_a_redis_py_without_a_connection_method_script_calls_use_is_refused(
    monkeypatch: pytest.MonkeyPatch, owner: type, name: str
) -> None:
    for cls in owner.__mro__:  # the bases define some of them too
        if name in vars(cls):
            monkeypatch.delattr(cls, name)

    assert name in str(refused(require_redis_connection_api.__wrapped__, "redis-py"))


def test_a_redis_py_whose_read_response_takes_no_timeout_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    async def read_response(self: Any, disable_decoding: bool = False) -> Any:
        raise NotImplementedError

    monkeypatch.setattr(AbstractConnection, "read_response", read_response)

    assert "timeout" in str(refused(require_redis_connection_api.__wrapped__, "redis-py"))


# Version bounds


@pytest.mark.parametrize("library", ["fastapi", "starlette", "uvicorn", "pika", "redis"])
def test_every_library_whose_internals_are_used_has_an_upper_bound_the_installed_one_meets(
    library: str,
) -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (spec,) = [d for d in dependencies if re.match(rf"{library}\b(?![-_])", d)]
    upper = re.search(r"<([\d.]+)", spec)
    assert upper is not None, f"{spec}: no upper bound"
    installed = tuple(int(part) for part in importlib.metadata.version(library).split(".")[:3])
    assert installed < tuple(int(part) for part in upper.group(1).split(".")), spec
