"""The API's own documentation: ``/openapi.json``, ``/docs`` (Swagger UI) and ``/redoc``.

Served as ``TASKBROKER_API_DOCS`` says: ``token`` (the default) asks for a token of any role, as
every endpoint but ``/health`` does; ``public`` serves them to anyone; ``off`` serves none. The
schema maps every operation of an API that schedules code, so it is not given to strangers by
default. The pages are served under the same rule as the schema they load: a browser that may
open ``/docs`` (through a proxy that adds the header, say) may also fetch ``/openapi.json``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from taskbroker.api.auth import AnyCaller
from taskbroker.settings import ApiDocsAccess

OPENAPI_PATH = "/openapi.json"


async def _any_token(_principal: AnyCaller) -> None:
    """The usual bearer check (api.auth), as a dependency of the whole docs router."""


def docs_router(app: FastAPI, access: ApiDocsAccess) -> APIRouter | None:
    """The documentation routes of ``app``, behind a token unless ``access`` is ``public``;
    None when it is ``off``. Build the app with ``openapi_url=None`` (and so no docs of
    FastAPI's own), or FastAPI serves these paths unguarded first."""
    if access == "off":
        return None
    router = APIRouter(
        include_in_schema=False, dependencies=[Depends(_any_token)] if access == "token" else []
    )

    def schema_url(request: Request) -> str:
        root_path: str = request.scope.get("root_path", "")
        return root_path.rstrip("/") + OPENAPI_PATH

    @router.get(OPENAPI_PATH)
    async def openapi_schema() -> JSONResponse:
        return JSONResponse(app.openapi())

    @router.get("/docs")
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=schema_url(request),
            title=f"{app.title} - Swagger UI",
            # Swagger UI's Authorize button then keeps the token across reloads of the page.
            swagger_ui_parameters={"persistAuthorization": True},
        )

    @router.get("/redoc")
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(openapi_url=schema_url(request), title=f"{app.title} - ReDoc")

    return router
