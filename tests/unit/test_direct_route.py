"""DirectRoute (api/direct_route.py): the common request reaches the endpoint without FastAPI's
general machinery, and every other request gets exactly what the route it extends answers: a
JsonBodyRoute, FastAPI's own route behind the JSON body checks (api/json_body.py)."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request, Response, status
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from taskbroker.api.direct_route import DirectRoute
from taskbroker.api.errors import install_error_handlers
from taskbroker.api.json_body import JsonBodyRoute


class Order(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item: str = Field(min_length=1)
    count: int = Field(default=1, ge=1)


async def caller(request: Request) -> str:
    return request.headers.get("x-caller", "anonymous")


Caller = Annotated[str, Depends(caller)]


async def greeting(who: Caller) -> str:
    """A dependency with a dependency of its own: a DirectRoute cannot call it with the request."""
    return f"hello {who}"


def _app(route_class: type[APIRoute]) -> FastAPI:
    router = APIRouter(route_class=route_class)

    @router.post("/order", status_code=201, response_model=Order)
    async def place(
        body: Order,
        who: Caller,
        reference: Annotated[str | None, Header(alias="Reference", max_length=8)] = None,
    ) -> Response:
        answer = {"item": body.item, "count": body.count, "who": who, "reference": reference}
        return Response(Order(item=body.item).model_dump_json() + str(answer), status_code=201)

    app = FastAPI()
    install_error_handlers(app)  # the API's own: FastAPI's fails on a lone surrogate
    app.include_router(router)
    return app


async def _post(app: FastAPI, content: bytes, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        return await http.post("/order", content=content, headers=headers)


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        pytest.param(b'{"item": "pen", "count": 2}', {**JSON, "x-caller": "ann"}, id="valid"),
        pytest.param(b'{"item": "pen"}', {**JSON, "Reference": "r-1"}, id="valid-with-header"),
        pytest.param(b'{"item": ""}', JSON, id="invalid-field"),
        pytest.param(b'{"item": "pen", "colour": "red"}', JSON, id="extra-field"),
        pytest.param(b'{"item": "pen"', JSON, id="not-json"),
        pytest.param(b'{"item": "\\ud800"}', JSON, id="lone-surrogate"),
        pytest.param(b'{"item": "pen"}', {"content-type": "text/plain"}, id="not-json-content-type"),
        pytest.param('{"item": "pen"}'.encode("utf-16"), JSON, id="not-utf8"),
        pytest.param(b'{"item": "pen"}', {"content-type": "application/json; charset=utf-8"}, id="charset"),
        pytest.param(b'{"item": "pen"}', {**JSON, "Reference": "much-too-long"}, id="header-too-long"),
        pytest.param(b"", JSON, id="empty"),
    ],
)
async def test_a_direct_route_answers_every_request_as_a_plain_fastapi_route_does(
    content: bytes, headers: dict[str, str]
) -> None:
    direct = await _post(_app(DirectRoute), content, headers)
    plain = await _post(_app(JsonBodyRoute), content, headers)

    assert (direct.status_code, direct.content) == (plain.status_code, plain.content)


async def test_a_direct_route_documents_the_endpoint_as_a_plain_route_does() -> None:
    assert _app(DirectRoute).openapi() == _app(APIRoute).openapi()


async def test_a_direct_route_honours_dependency_overrides() -> None:
    app = _app(DirectRoute)

    async def someone_else(request: Request) -> str:
        return "override"

    app.dependency_overrides[caller] = someone_else

    response = await _post(app, b'{"item": "pen"}', JSON)

    assert "'who': 'override'" in response.text


def test_a_direct_route_refuses_an_endpoint_it_cannot_bind() -> None:
    router = APIRouter(route_class=DirectRoute)

    async def search(body: Order, page: int = 1) -> Response:
        return Response()

    with pytest.raises(TypeError, match="query"):
        router.add_api_route("/search", search, methods=["POST"])


def test_a_direct_route_refuses_a_dependency_that_needs_more_than_the_request() -> None:
    router = APIRouter(route_class=DirectRoute)

    async def place(body: Order, value: Annotated[Any, Depends(greeting)]) -> Response:
        return Response()

    with pytest.raises(TypeError, match="only the request"):
        router.add_api_route("/order", place, methods=["POST"])


async def test_a_direct_route_runs_the_dependencies_its_router_adds() -> None:
    async def members_only(request: Request) -> None:
        if request.headers.get("x-caller") != "member":
            raise HTTPException(status.HTTP_403_FORBIDDEN, "members only")

    router = APIRouter(route_class=DirectRoute, dependencies=[Depends(members_only)])

    @router.post("/order", status_code=201, response_model=Order)
    async def place(body: Order) -> Response:
        return Response(body.model_dump_json(), status_code=201)

    app = FastAPI()
    app.include_router(router)

    refused = await _post(app, b'{"item": "pen"}', JSON)
    admitted = await _post(app, b'{"item": "pen"}', {**JSON, "x-caller": "member"})

    assert refused.status_code == 403
    assert admitted.status_code == 201
