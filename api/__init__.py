"""The HTTP service: FastAPI routers per resource, wired in one place (api.app)."""
