"""A route class for the API's hot endpoints (scheduling): the common request is bound to the
endpoint's parameters directly, without FastAPI's general machinery.

Per request FastAPI parses the content type with the email package, decodes the JSON with the
standard library, resolves every dependency through its general solver (cache keys, scopes,
overrides, four parameter kinds per dependency) and validates the answer again: about a third
of the API's CPU for a one-task request. A ``DirectRoute`` handles the request whose body is
``application/json`` that its model validates, with no header parameter sent and no dependency
overridden: it validates the body with pydantic's own JSON parser, calls each dependency with
the request and calls the endpoint. Every other request, and every body that does not validate,
takes the general path (a JsonBodyRoute's checks, then FastAPI's), so FastAPI stays the one
place that words input errors; errors raised
by dependencies or the endpoint reach the app's handlers as before. The OpenAPI document is the
one FastAPI builds from the endpoint's signature.

The endpoint must return a Response (its model documented with ``response_model``), and its
dependencies may take only the request: the route refuses, when it is built, an endpoint whose
parameters it cannot bind.

Two private parts of FastAPI are read: the context variable through which FastAPI hands an
included route its effective dependant, and the fields of ``Dependant`` (each kind of
parameter FastAPI can bind). ``require_fastapi_internals`` refuses, when a route is built (at
startup), a FastAPI without that variable or whose Dependant has a field this module does not
know: a new kind of parameter would otherwise go unbound. fastapi is bounded below its next
minor in pyproject.toml.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextvars import ContextVar
from typing import Any

import fastapi
from fastapi import Request, Response
from fastapi import routing as fastapi_routing
from fastapi.dependencies.models import Dependant
from pydantic import BaseModel, ValidationError

from taskbroker.api.json_body import JsonBodyRoute
from taskbroker.errors import IncompatibleLibrary

JSON = b"application/json"

DEPENDANT_FIELDS = frozenset(
    {
        # Bound by DirectBinding, or refused when it is built:
        "path_params",
        "query_params",
        "header_params",
        "cookie_params",
        "body_params",
        "dependencies",
        "call",
        "request_param_name",
        "websocket_param_name",
        "http_connection_param_name",
        "response_param_name",
        "background_tasks_param_name",
        "security_scopes_param_name",
        # What a dependency is, not a value it is given:
        "name",
        "own_oauth_scopes",
        "parent_oauth_scopes",
        "use_cache",
        "path",
        "scope",
        "concurrency",
    }
)
"""The fields of FastAPI's Dependant this module knows the meaning of."""


def require_fastapi_internals() -> None:
    """Refuse to start, naming FastAPI's version, if the private parts a DirectRoute reads are
    gone or have grown (see the module's docstring)."""
    problems = []
    if not isinstance(getattr(fastapi_routing, "_effective_route_context_var", None), ContextVar):
        problems.append("has no fastapi.routing._effective_route_context_var")
    fields = {field.name for field in dataclasses.fields(Dependant)}
    if unknown := sorted(fields - DEPENDANT_FIELDS):
        problems.append(f"has Dependant fields a DirectRoute does not bind ({', '.join(unknown)})")
    if gone := sorted(DEPENDANT_FIELDS - fields):
        problems.append(f"has no Dependant fields {', '.join(gone)}")
    if problems:
        raise IncompatibleLibrary(
            "FastAPI", fastapi.__version__, " and ".join(problems), "bind scheduling requests directly"
        )


class DirectRoute(JsonBodyRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        require_fastapi_internals()
        general = super().get_route_handler()
        binding = DirectBinding(self._effective_dependant(), self.path)

        async def handle(request: Request) -> Response:
            if not binding.takes(request.headers.raw, request.app):
                return await general(request)
            response = await binding.respond(request, await request.body())
            # None: the body does not validate; FastAPI words the error (the body is cached).
            return response if response is not None else await general(request)

        return handle

    def own_binding(self) -> DirectBinding:
        """The binding of the route's own dependant, without a router's or app's dependencies:
        for a caller that serves the route itself (api.scheduling_lane), which checks there
        are none."""
        return DirectBinding(self.dependant, self.path)

    def _effective_dependant(self) -> Dependant:
        """The dependant FastAPI's handler uses: once included in an app, the route's handler is
        built again with the router's dependencies added (FastAPI passes that context in a
        private context variable, as in ``APIRoute.get_route_handler``); the tests check that a
        router's dependency still refuses a request."""
        context = fastapi_routing._effective_route_context_var.get()
        if context is not None and context.original_route is self:
            dependant: Dependant = context.dependant
            return dependant
        return self.dependant


class DirectBinding:
    """How a request's values reach the endpoint: the body model, each dependency called with
    the request, and header parameters at their defaults (a request that sends one goes the
    general way, which validates it)."""

    def __init__(self, dependant: Dependant, path: str) -> None:
        endpoint = dependant.call
        where = getattr(endpoint, "__name__", repr(endpoint))
        if endpoint is None or not inspect.iscoroutinefunction(endpoint):
            raise TypeError(f"{where}: a DirectRoute endpoint must be an async function")
        if dependant.path_params or dependant.query_params or dependant.cookie_params:
            raise TypeError(f"{where}: a DirectRoute binds no path, query or cookie parameters")
        if len(dependant.body_params) != 1:
            raise TypeError(f"{where}: a DirectRoute endpoint takes exactly one body model")
        (body_field,) = dependant.body_params
        model = body_field.field_info.annotation
        if not (inspect.isclass(model) and issubclass(model, BaseModel)):
            raise TypeError(f"{where}: a DirectRoute body must be a pydantic model")
        if any(
            getattr(dependant, name) is not None
            for name in (
                "request_param_name",
                "websocket_param_name",
                "response_param_name",
                "background_tasks_param_name",
                "http_connection_param_name",
                "security_scopes_param_name",
            )
        ):
            raise TypeError(f"{where}: a DirectRoute endpoint takes no request, response or tasks")
        self.path = path
        self.body_model: type[BaseModel] = model
        self._body_name = body_field.name
        self._endpoint: Callable[..., Awaitable[Any]] = endpoint
        self._headers = frozenset(
            name.encode("latin-1")
            for field in dependant.header_params
            for name in {field.alias.lower(), field.alias.lower().replace("_", "-")}
        )
        self._header_defaults = {field.name: field.default for field in dependant.header_params}
        self._dependencies = [_request_only(sub, where) for sub in dependant.dependencies]
        self._calls = [call for call, _ in self._dependencies]

    def takes(self, headers: Sequence[tuple[bytes, bytes]], app: Any) -> bool:
        """Whether a request with these (raw ASGI) headers can be bound directly: a JSON body,
        none of the endpoint's header parameters sent, none of its dependencies overridden."""
        content_type = None
        for name, value in headers:
            if name == b"content-type":
                content_type = content_type or value
            elif name in self._headers:
                return False
        if content_type != JSON:
            return False
        overrides: dict[Any, Any] = getattr(app, "dependency_overrides", {})
        return not (overrides and any(call in overrides for call in self._calls))

    async def respond(self, request: Request, body: bytes) -> Response | None:
        """The endpoint's response; None when the body does not validate. Errors raised by a
        dependency or the endpoint propagate, for the app's handlers to answer."""
        try:
            model = self.body_model.model_validate_json(body)
        except ValidationError:
            return None
        values: dict[str, Any] = {self._body_name: model, **self._header_defaults}
        for call, (name, request_param) in self._dependencies:
            value = await call(**{request_param: request})
            if name is not None:  # None: a router's or app's dependency, run for its checks
                values[name] = value
        response = await self._endpoint(**values)
        if not isinstance(response, Response):
            raise TypeError(f"{self.path}: a DirectRoute endpoint must return a Response")
        return response


def _request_only(sub: Dependant, where: str) -> tuple[Callable[..., Awaitable[Any]], tuple[str | None, str]]:
    """A dependency the route can call itself: async, taking the request and nothing else."""
    call = sub.call
    asynchronous = inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
        getattr(call, "__call__", None)  # noqa: B004 (a security scheme instance)
    )
    takes_only_request = (
        sub.request_param_name is not None
        and not sub.dependencies
        and not (sub.path_params or sub.query_params or sub.header_params or sub.cookie_params)
        and not sub.body_params
        and sub.response_param_name is None
        and sub.background_tasks_param_name is None
        and sub.security_scopes_param_name is None
        and sub.websocket_param_name is None
        and sub.http_connection_param_name is None
    )
    if call is None or not asynchronous or not takes_only_request:
        raise TypeError(f"{where}: a DirectRoute dependency must be async and take only the request")
    assert sub.request_param_name is not None
    return call, (sub.name, sub.request_param_name)
