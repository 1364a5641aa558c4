"""The dashboard's pages and files, under one Content-Security-Policy.

The pages carry no data and need no token: each is the frame of one view, and its script fills
it through the public API with the token the user signed in with, which stays in the browser's
sessionStorage and travels only in an ``Authorization`` header. No cookie carries a session, so
no request can be forged from another site (docs/dashboard.md, "Signing in").
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, HTTPException, Request, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
"""Only our own files, no inline script or style, no other origin (no CDN: air-gapped clusters)."""
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
STATIC = HERE / "static"
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
FILES = {
    str(path.relative_to(STATIC)): path
    for path in sorted(STATIC.rglob("*"))
    if path.is_file() and path.suffix in MEDIA_TYPES
}
"""Every file served, listed once at import: a request names one of these or gets 404."""

router = APIRouter(prefix="/ui", include_in_schema=False)


def _page(request: Request, page: str, title: str, **context: str) -> HTMLResponse:
    response = templates.TemplateResponse(
        request,
        f"{page}.html",
        {"page": page, "title": title, **context},
        headers=SECURITY_HEADERS,
    )
    return response


@router.get("", response_class=HTMLResponse)
async def overview(request: Request) -> HTMLResponse:
    return _page(request, "overview", "Overview")


@router.get("/", response_class=RedirectResponse)
async def overview_slash() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=status.HTTP_308_PERMANENT_REDIRECT)


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request) -> HTMLResponse:
    return _page(request, "sign_in", "Sign in")


@router.get("/tasks", response_class=HTMLResponse)
async def tasks(request: Request) -> HTMLResponse:
    return _page(request, "tasks", "Tasks")


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
async def task(request: Request, task_id: UUID) -> HTMLResponse:
    return _page(request, "task", "Task", task_id=str(task_id))


@router.get("/schedules", response_class=HTMLResponse)
async def schedules(request: Request) -> HTMLResponse:
    return _page(request, "schedules", "Schedules")


@router.get("/schedules/{schedule_id}", response_class=HTMLResponse)
async def schedule(request: Request, schedule_id: UUID) -> HTMLResponse:
    return _page(request, "schedule", "Schedule", schedule_id=str(schedule_id))


@router.get("/consumers", response_class=HTMLResponse)
async def consumers(request: Request) -> HTMLResponse:
    return _page(request, "consumers", "Consumers")


@router.get("/tokens", response_class=HTMLResponse)
async def tokens(request: Request) -> HTMLResponse:
    return _page(request, "tokens", "Tokens")


@router.get("/static/{name:path}")
async def static_file(name: Annotated[str, PathParam(max_length=200)]) -> Response:
    path = FILES.get(name)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dashboard file {name!r}")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=SECURITY_HEADERS)
