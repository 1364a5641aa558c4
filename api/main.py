"""Start the API process: the app over the process's backends, in a draining uvicorn server.
`taskbroker api` and `taskbroker dev` both start it here."""

from __future__ import annotations

from taskbroker.api.app import create_app
from taskbroker.api.http_limits import HttpLimits
from taskbroker.api.server import DrainingServer, draining_server
from taskbroker.backends import Backends
from taskbroker.settings import Settings


def api_server(
    settings: Settings, backends: Backends, *, host: str, port: int, owns_backends: bool = True
) -> DrainingServer:
    """The API on ``host``:``port``, ready to ``serve()``; with ``owns_backends`` it closes them
    when it stops."""
    app = create_app(settings, backends, owns_backends=owns_backends)
    return draining_server(app, host=host, port=port, limits=HttpLimits.of(settings))
