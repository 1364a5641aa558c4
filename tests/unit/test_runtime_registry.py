"""Runtimes are found by entry point; a plugin that cannot be used is named, never a traceback."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from taskbroker.runtimes.base import Runtime
from taskbroker.runtimes.inline import InlineRuntime
from taskbroker.runtimes.registry import RuntimeBroken, RuntimeNotInstalled, installed_runtimes, load_runtime
from tests.support.plugin_dists import IMPORT_ERROR, WORKING_RUNTIME, write_plugin


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path that plugins are written into, as into site-packages."""
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _unique(stem: str) -> str:
    """Module and runtime names no other test (or sys.modules) has seen."""
    return f"{stem}_{uuid.uuid4().hex[:8]}"


def test_a_plugin_package_adds_a_runtime_without_any_edit_of_ours(plugin_dir: Path) -> None:
    module, name = _unique("good_plugin"), _unique("good")
    write_plugin(
        plugin_dir,
        package="taskbroker-good",
        runtime=name,
        target=f"{module}:GoodRuntime",
        module_source=WORKING_RUNTIME.format(cls="GoodRuntime", name=name),
    )

    runtime = load_runtime(name)

    assert issubclass(runtime, Runtime)
    assert runtime.name == name
    assert name in installed_runtimes()


def test_a_plugin_that_fails_to_import_is_reported_naming_its_package_and_the_error(plugin_dir: Path) -> None:
    name = _unique("broken")
    write_plugin(
        plugin_dir,
        package="taskbroker-broken",
        runtime=name,
        target=f"{_unique('broken_plugin')}:BrokenRuntime",
        module_source=IMPORT_ERROR,
    )

    with pytest.raises(RuntimeBroken) as raised:
        load_runtime(name)

    message = str(raised.value)
    assert "taskbroker-broken 1.0" in message
    assert "ModuleNotFoundError" in message
    assert "missing_dependency_of_the_plugin" in message
    assert name in installed_runtimes()  # listing never imports a plugin


def test_an_entry_point_that_is_not_a_runtime_class_is_refused_naming_its_package(plugin_dir: Path) -> None:
    module, name = _unique("wrong_plugin"), _unique("wrong")
    write_plugin(
        plugin_dir,
        package="taskbroker-wrong",
        runtime=name,
        target=f"{module}:not_a_runtime",
        module_source="def not_a_runtime():\n    return None\n",
    )

    with pytest.raises(RuntimeBroken, match=r"taskbroker-wrong 1\.0 does not name a Runtime subclass"):
        load_runtime(name)


@pytest.mark.parametrize(
    ("class_body", "class_name_says"),
    [
        ('    name = "something-else"\n', "'something-else'"),
        ("", "no name"),
    ],
    ids=["another-name", "no-name"],
)
def test_a_runtime_class_whose_name_is_not_its_entry_point_name_is_refused_naming_both(
    plugin_dir: Path, class_body: str, class_name_says: str
) -> None:
    module, name = _unique("misnamed_plugin"), _unique("misnamed")
    write_plugin(
        plugin_dir,
        package="taskbroker-misnamed",
        runtime=name,
        target=f"{module}:MisnamedRuntime",
        module_source=(
            "from taskbroker.runtimes.base import Runtime\n\n"
            f"class MisnamedRuntime(Runtime):\n{class_body}"
            "    async def run(self, task):\n        return None\n\n"
            "    async def cancel(self, task):\n        return None\n"
        ),
    )

    with pytest.raises(RuntimeBroken) as raised:
        load_runtime(name)

    message = str(raised.value)
    assert "taskbroker-misnamed 1.0" in message
    assert f"entry point {name} = {module}:MisnamedRuntime" in message
    assert f"{module}.MisnamedRuntime" in message
    assert class_name_says in message
    assert f"name = {name!r}" in message  # what to write in the class to fix it


@pytest.mark.parametrize("name", ["inline", "docker", "kubernetes"])
def test_each_built_in_runtime_is_named_as_its_entry_point(name: str) -> None:
    assert load_runtime(name).name == name


def test_a_runtime_name_claimed_by_two_packages_is_refused_naming_both(plugin_dir: Path) -> None:
    name = _unique("twice")
    for package in ("taskbroker-first", "taskbroker-second"):
        module = _unique("twice_plugin")
        write_plugin(
            plugin_dir,
            package=package,
            runtime=name,
            target=f"{module}:TwiceRuntime",
            module_source=WORKING_RUNTIME.format(cls="TwiceRuntime", name=name),
        )

    with pytest.raises(RuntimeBroken) as raised:
        load_runtime(name)

    assert "taskbroker-first 1.0" in str(raised.value)
    assert "taskbroker-second 1.0" in str(raised.value)


def test_an_unknown_runtime_is_not_installed_and_the_installed_ones_are_named() -> None:
    with pytest.raises(RuntimeNotInstalled, match=r"'no-such-runtime' is not installed.*inline"):
        load_runtime("no-such-runtime")


def test_the_built_in_inline_runtime_is_found_by_entry_point_like_any_plugin() -> None:
    assert load_runtime("inline") is InlineRuntime


def test_a_plugin_written_against_the_old_runtimes_package_is_told_the_new_name(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before 0.2 the runtime API was a top-level ``runtimes`` package; an installed taskbroker no
    longer has one (in a checkout the folder is importable, so the test hides it)."""
    monkeypatch.setitem(sys.modules, "runtimes", None)
    monkeypatch.setitem(sys.modules, "runtimes.base", None)
    name = _unique("old")
    write_plugin(
        plugin_dir,
        package="taskbroker-old",
        runtime=name,
        target=f"{_unique('old_plugin')}:OldRuntime",
        module_source=WORKING_RUNTIME.replace("taskbroker.runtimes.base", "runtimes.base").format(
            cls="OldRuntime", name=name
        ),
    )

    with pytest.raises(RuntimeBroken) as raised:
        load_runtime(name)

    message = str(raised.value)
    assert "taskbroker-old 1.0" in message
    assert "from taskbroker.runtimes.base import Runtime" in message
