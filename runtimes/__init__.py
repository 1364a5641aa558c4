"""How a task runs. `Runtime` is the contract; `inline`, and plugins found by entry point, implement it."""

from taskbroker.runtimes.base import (
    RunRegistry,
    Runtime,
    RuntimeConfig,
    RuntimeConfigError,
    TaskCancelled,
    TaskFailed,
    TaskRetry,
    cancel_raises_task_cancelled,
    parse_attributes,
)

__all__ = [
    "RunRegistry",
    "Runtime",
    "RuntimeConfig",
    "RuntimeConfigError",
    "TaskCancelled",
    "TaskFailed",
    "TaskRetry",
    "cancel_raises_task_cancelled",
    "parse_attributes",
]
