"""Find runtimes by name through the ``taskbroker.runtimes`` entry point group.

Built-in runtimes register themselves in our own pyproject.toml exactly as plugins do, so there is
one way to find a runtime. Only the consumer loads runtimes: the API stores a scheduler's runtime
name without loading it, because the API's environment need not have the plugin installed.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from taskbroker.runtimes.base import Runtime

ENTRY_POINT_GROUP = "taskbroker.runtimes"


class RuntimeUnavailable(LookupError):
    """The scheduler's runtime cannot be used in this environment; the message says what to do.

    A consumer that meets it refuses to start rather than take tasks it cannot run.
    """


class RuntimeNotInstalled(RuntimeUnavailable):
    """No installed package registers a runtime of that name."""


class RuntimeBroken(RuntimeUnavailable):
    """A package registers the runtime, but its entry point does not load to a Runtime subclass
    (an import error in the plugin, a wrong object path), or two packages claim the name."""


def _package(entry_point: EntryPoint) -> str:
    """The distribution that registered ``entry_point``, for error messages."""
    dist = entry_point.dist
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown package"


def installed_runtimes() -> list[str]:
    """Names of every registered runtime, loadable or not (loading a broken one is what fails)."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def load_runtime(name: str) -> type[Runtime]:
    """The Runtime class registered as ``name``.

    Raises RuntimeNotInstalled (naming the installed runtimes) or RuntimeBroken (naming the
    package at fault); never lets a plugin's own import error escape as a bare traceback. A class
    whose ``name`` is not ``name`` is broken too: its logs and task errors would speak of another
    runtime than the one the scheduler was registered with.
    """
    candidates = {(ep.value, _package(ep)): ep for ep in entry_points(group=ENTRY_POINT_GROUP, name=name)}
    if not candidates:
        raise RuntimeNotInstalled(
            f"runtime {name!r} is not installed; installed runtimes: "
            f"{', '.join(installed_runtimes()) or 'none'}. "
            "Install the package that provides it in this consumer's environment."
        )
    if len(candidates) > 1:
        claims = "; ".join(f"{package} ({value})" for value, package in sorted(candidates))
        raise RuntimeBroken(
            f"runtime {name!r} is registered by more than one package: {claims}. Uninstall all but one."
        )
    (entry_point,) = candidates.values()
    package = _package(entry_point)
    try:
        runtime = entry_point.load()
    except ModuleNotFoundError as exc:
        if exc.name != "runtimes" and not (exc.name or "").startswith("runtimes."):
            raise _broken(name, package, entry_point.value, exc) from exc
        # Before 0.2 taskbroker installed its runtime API as a top-level `runtimes` package.
        raise RuntimeBroken(
            f"runtime {name!r} from package {package} imports {exc.name!r}, taskbroker's runtime API "
            "before 0.2; it is now 'taskbroker.runtimes' (e.g. 'from taskbroker.runtimes.base import "
            "Runtime'): update that package (docs/runtimes.md, Moving a runtime to 0.2)."
        ) from exc
    except Exception as exc:  # any error inside a third-party import is that package's fault
        raise _broken(name, package, entry_point.value, exc) from exc
    if not (isinstance(runtime, type) and issubclass(runtime, Runtime)):
        raise RuntimeBroken(
            f"runtime {name!r} from package {package} does not name a Runtime subclass: "
            f"{entry_point.value} is {runtime!r}."
        )
    declared = getattr(runtime, "name", None)  # a ClassVar a careless subclass may never set
    if declared != name:
        says = "no name" if declared is None else f"name {declared!r}"
        raise RuntimeBroken(
            f"runtime {name!r} from package {package}: entry point {name} = {entry_point.value} "
            f"loads {runtime.__module__}.{runtime.__qualname__}, which has {says}. A runtime class "
            f"must be named as it is registered: set name = {name!r} in the class, or register it "
            "under its own name."
        )
    return runtime


def _broken(name: str, package: str, value: str, exc: BaseException) -> RuntimeBroken:
    return RuntimeBroken(
        f"runtime {name!r} from package {package} failed to load ({value}): {type(exc).__name__}: {exc}. "
        "Fix or reinstall that package in this consumer's environment."
    )
