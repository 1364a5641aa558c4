"""How a task runs. `Runtime` is the contract; `inline`, and plugins found by entry point, implement it."""

from runtimes.base import Runtime, RuntimeConfig, RuntimeConfigError, TaskCancelled, TaskFailed

__all__ = ["Runtime", "RuntimeConfig", "RuntimeConfigError", "TaskCancelled", "TaskFailed"]
