"""Find runtimes by name through the ``taskbroker.runtimes`` entry point group."""

from __future__ import annotations

from importlib.metadata import entry_points

from runtimes.base import Runtime

ENTRY_POINT_GROUP = "taskbroker.runtimes"


class RuntimeNotInstalled(LookupError):
    pass


def installed_runtimes() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def load_runtime(name: str) -> type[Runtime]:
    """The Runtime class registered as ``name``; RuntimeNotInstalled names the installed ones."""
    for entry_point in entry_points(group=ENTRY_POINT_GROUP, name=name):
        runtime = entry_point.load()
        if not (isinstance(runtime, type) and issubclass(runtime, Runtime)):
            raise RuntimeNotInstalled(f"entry point {name!r} does not name a Runtime subclass: {runtime!r}")
        return runtime
    raise RuntimeNotInstalled(
        f"runtime {name!r} is not installed; installed runtimes: "
        f"{', '.join(installed_runtimes()) or 'none'}. "
        "Install the package that provides it in this consumer's environment."
    )
