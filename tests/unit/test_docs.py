"""The docs as specifications of themselves: the README stays short, every setting is documented,
and every relative link in the README and docs/ leads somewhere (a file, and a heading in it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from taskbroker.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGURATION = REPO_ROOT / "docs" / "configuration.md"
PAGES = sorted(
    [
        REPO_ROOT / "README.md",
        *(REPO_ROOT / "docs").glob("*.md"),
        *(REPO_ROOT / "bench" / "results").glob("*.md"),
    ]
)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", flags=re.MULTILINE | re.DOTALL)


def prose(page: Path) -> str:
    """The page without its code blocks (a `[x](y)` inside code is not a link)."""
    return FENCE.sub("", page.read_text())


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but `-` and `_` dropped, spaces as `-`."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", prose(page), flags=re.MULTILINE):
        found.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return found


def relative_links() -> list[tuple[Path, str]]:
    return [
        (page, target)
        for page in PAGES
        for target in LINK.findall(prose(page))
        if not re.match(r"[a-z]+:", target)
    ]


def test_the_readme_is_under_300_lines() -> None:
    lines = len((REPO_ROOT / "README.md").read_text().splitlines())
    assert lines < 300, f"README.md has {lines} lines: move reference material to docs/"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_has_a_row_in_the_configuration_page(name: str) -> None:
    variable = f"TASKBROKER_{name.upper()}"
    rows = [line for line in CONFIGURATION.read_text().splitlines() if line.startswith(f"| `{variable}`")]
    assert rows, f"{variable} (Settings.{name}) has no row in docs/configuration.md's table"


@pytest.mark.parametrize(("page", "target"), relative_links(), ids=lambda v: str(v).rsplit("/", 1)[-1])
def test_every_relative_link_resolves(page: Path, target: str) -> None:
    path, _, anchor = target.partition("#")
    destination = (page.parent / path).resolve() if path else page
    assert destination.exists(), f"{page.relative_to(REPO_ROOT)} links to {target}: no such file"
    if anchor and destination.suffix == ".md":
        assert anchor in anchors(destination), (
            f"{page.relative_to(REPO_ROOT)} links to {target}: {destination.name} has no heading #{anchor}"
        )
