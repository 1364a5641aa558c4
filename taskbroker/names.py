"""Naming rules shared by the HTTP API, the CLI and the stores: one place, one pattern each."""

SCHEDULER_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
RUNTIME_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
KEY_PREFIX_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,62}$"


def queue_name(key_prefix: str, scheduler: str) -> str:
    """The RabbitMQ queue of a scheduler, namespaced like every Redis key."""
    return f"{key_prefix}.{scheduler}"
