"""The layer rule of pyproject.toml's [tool.importlinter] is a contract that can fail: an upward
import, or one process importing another, breaks `lint-imports` (run by CI). Each case below adds
one such import to a copy of the tree and runs the real tool on the copy."""

from __future__ import annotations

import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import taskbroker

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("taskbroker", "api", "scheduler_worker", "timeout_daemon", "schedule_firer", "runtimes")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def _lint_copy(
    tmp_path: Path, module_file: str | None = None, line: str = ""
) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on a copy of the packages, with ``line`` appended to ``module_file``."""
    for package in PACKAGES:
        # symlinks kept: taskbroker/api and its siblings point at the top-level folders
        shutil.copytree(
            ROOT / package, tmp_path / package, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    if module_file is not None:
        with (tmp_path / module_file).open("a") as source:
            source.write(f"\n{line}\n")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tmp_path,
        env={"PATH": str(LINT_IMPORTS.parent), "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_unchanged_tree_keeps_every_contract(tmp_path: Path) -> None:
    result = _lint_copy(tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module_file", "line", "broken"),
    [
        # The issue's own case: the shared core importing a process.
        ("taskbroker/scheduling.py", "import taskbroker.api.app", "no upward import"),
        ("taskbroker/models.py", "import taskbroker.store", "no upward import"),
        ("taskbroker/settings.py", "import taskbroker.backends", "no upward import"),
        ("taskbroker/store.py", "import taskbroker.runtimes.base", "no upward import"),
        ("taskbroker/queue/memory.py", "import taskbroker.scheduling", "no upward import"),
        ("taskbroker/backends.py", "import taskbroker.scheduler_worker.consumer", "no upward import"),
        ("runtimes/base.py", "import taskbroker.scheduler_worker.consumer", "no upward import"),
        ("scheduler_worker/main.py", "import taskbroker.cli", "no upward import"),
        ("api/app.py", "import taskbroker.scheduler_worker.consumer", "none imports another"),
        ("timeout_daemon/main.py", "import taskbroker.schedule_firer.firer", "none imports another"),
        ("schedule_firer/firer.py", "from taskbroker.api.limits import check_task_input", "none imports another"),
        ("api/routers/tasks.py", "import taskbroker.client", "no upward import"),
        ("taskbroker/client/errors.py", "import redis", "imports no server side"),
        ("taskbroker/client/calls.py", "import taskbroker.schedule_store", "imports no server side"),
        ("taskbroker/client/sync.py", "import fastapi", "imports no server side"),
    ],
)
def test_an_import_against_the_layers_breaks_a_contract(
    tmp_path: Path, module_file: str, line: str, broken: str
) -> None:
    result = _lint_copy(tmp_path, module_file, line)

    assert result.returncode == 1, result.stdout + result.stderr
    broken_section = result.stdout.split("Broken contracts", 1)[-1]
    assert broken in " ".join(broken_section.split()), result.stdout


def test_every_module_of_the_shared_core_is_placed_in_a_layer() -> None:
    """A new module of taskbroker/ must be given a layer, or nothing checks its imports."""
    (layers,) = [c for c in _contracts() if c["type"] == "layers"]
    assert isinstance(layers["layers"], list)
    placed = {name.strip() for layer in layers["layers"] for name in str(layer).replace("|", ":").split(":")}
    modules = {f"taskbroker.{m.name}" for m in pkgutil.iter_modules(taskbroker.__path__)}

    assert modules - placed == set()
    assert placed - modules <= set(PACKAGES)
