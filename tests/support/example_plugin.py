"""The example runtime plugin (examples/taskbroker-subprocess), installed into the running venv on
first use, exactly as an operator installs a plugin: `pip install` and nothing else.

Installed by the tests rather than by .ci/run so that `.venv/bin/python -m pytest` works on a clean
clone too. Editable, without dependencies (taskbroker itself is the checkout under test).
"""

from __future__ import annotations

import functools
import importlib
import site
import subprocess
import sys
import sysconfig
from importlib.metadata import entry_points

from tests.support.processes import REPO_ROOT

EXAMPLE_DIR = REPO_ROOT / "examples" / "taskbroker-subprocess"
RUNTIME_NAME = "subprocess"


def _registered() -> bool:
    return any(ep.name == RUNTIME_NAME for ep in entry_points(group="taskbroker.runtimes"))


@functools.cache
def install_example_plugin() -> None:
    """Make `subprocess` a loadable runtime here and in every process this venv starts."""
    if not _registered():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--editable", str(EXAMPLE_DIR)],
            check=True,
            capture_output=True,
        )
        # This process read site-packages' .pth files at start-up; read the new one too.
        site.addsitedir(sysconfig.get_paths()["purelib"])
        importlib.invalidate_caches()
    assert _registered(), f"installing {EXAMPLE_DIR} did not register the {RUNTIME_NAME!r} runtime"
