"""A taskbroker runtime that runs a command on the consumer's host (the example plugin)."""

from taskbroker_subprocess.runtime import CommandTask, SubprocessRuntime

__all__ = ["CommandTask", "SubprocessRuntime"]
