"""Tiny plugin distributions written into a directory: a real ``*.dist-info`` with an
``entry_points.txt`` and a module beside it. With the directory on sys.path (or PYTHONPATH),
importlib.metadata finds the plugin exactly as it finds an installed package."""

from __future__ import annotations

from pathlib import Path

WORKING_RUNTIME = """
from taskbroker.runtimes.base import Runtime

class {cls}(Runtime):
    name = "{name}"

    async def run(self, task):
        return {{"ran": str(task.id)}}

    async def cancel(self, task):
        return None
"""

IMPORT_ERROR = "import missing_dependency_of_the_plugin\n"


def write_plugin(directory: Path, *, package: str, runtime: str, target: str, module_source: str) -> None:
    """A distribution ``package`` 1.0 registering ``runtime = target``, and target's module."""
    dist_info = directory / f"{package.replace('-', '_')}-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(f"[taskbroker.runtimes]\n{runtime} = {target}\n")
    module = target.partition(":")[0]
    (directory / f"{module}.py").write_text(module_source)
