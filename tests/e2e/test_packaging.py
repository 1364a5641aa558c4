"""What `pip install taskbroker` puts into a user's environment: one top-level import package,
`taskbroker`, so a project with its own `api`, `runtimes` or `scheduler_worker` package (the most
common names in web services) runs beside it. Tried as a user would: the built wheel installed
(not editable) into a fresh virtual environment, the project on PYTHONPATH, `taskbroker dev`
started there, and an Inline task of the project's own module run to `complete`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN
from tests.support.blocking_api import BlockingApi
from tests.support.processes import REPO_ROOT, ManagedProcess

pytestmark = pytest.mark.e2e

INSTALL_DEADLINE = 900.0
USER_PACKAGES = ("api", "runtimes", "scheduler_worker", "timeout_daemon", "schedule_firer")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(REPO_ROOT)],
        check=True,
        timeout=INSTALL_DEADLINE,
    )
    (built,) = out.glob("taskbroker-*.whl")
    return built


def test_the_wheel_installs_one_top_level_package_taskbroker(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top_level = {name.split("/")[0] for name in names if ".dist-info/" not in name}

    assert top_level == {"taskbroker"}
    for module in ("api/app.py", "runtimes/base.py", "scheduler_worker/consumer.py", "lua/claim.lua"):
        assert f"taskbroker/{module}" in names, module
    dashboard = ("templates/base.html", "templates/tasks.html", "static/dashboard.css", "static/js/api.js")
    for file in dashboard:
        assert f"taskbroker/api/dashboard/{file}" in names, file


def _user_project(root: Path) -> Path:
    """A project with its own packages of our folders' names, and a task module using one."""
    for package in USER_PACKAGES:
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text(f'OWNER = "the project\'s own {package}"\n')
    (root / "usertasks.py").write_text(
        "import api\n\n\ndef double(n: int) -> dict[str, object]:\n"
        '    return {"n": 2 * n, "api": api.OWNER}\n'
    )
    return root


def test_dev_from_the_installed_wheel_runs_a_task_of_a_project_with_its_own_api_package(
    wheel: Path, tmp_path: Path, http: httpx.Client
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=INSTALL_DEADLINE)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        timeout=INSTALL_DEADLINE,
    )
    project = _user_project(tmp_path / "project")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKBROKER_") and k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(project), TASKBROKER_ADMIN_TOKEN=ADMIN_TOKEN, PYTHONUNBUFFERED="1")
    dev = ManagedProcess(
        "dev",
        ["dev", "--port", "0", "--allow", "usertasks"],
        env,
        tmp_path,
        command=[str(venv / "bin" / "taskbroker")],
        cwd=project,
    )
    try:
        url = dev.wait_for_stdout(r"serving at (http://127\.0\.0\.1:\d+) on embedded").group(1)
        api = BlockingApi(http, url)

        task = api.schedule("default", {"function": "usertasks:double", "kwargs": {"n": 21}})
        final = api.wait_for_state(task["id"])
        page, script = http.get(f"{url}/ui/tasks"), http.get(f"{url}/ui/static/js/tasks.js")
    finally:
        dev.kill()
        dev.close_logs()

    assert final["state"] == "complete", final
    assert final["result"] == {"n": 42, "api": "the project's own api"}
    assert page.status_code == 200  # the dashboard's files came with the wheel
    assert script.status_code == 200
