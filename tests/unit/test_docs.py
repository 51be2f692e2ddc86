"""README and docs/ as a reader follows them: every link leads somewhere, and the commands
the README gives are the ones CI and the tests run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy.settings import SETTINGS
from tests.system.test_nginx_debian import UPSTREAM

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CONFIGURATION = REPO / "docs" / "configuration.md"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def heading_anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings: lower case, spaces to hyphens, every
    other character but letters, digits, `-` and `_` dropped."""
    anchors = set()
    fenced = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        heading = re.match(r"#+ (.*)", line)
        if heading and not fenced:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_leads_to_a_file_and_heading(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and anchor not in heading_anchors(linked):
            broken.append(target)
    assert broken == [], f"{page.name}: links that lead nowhere"


def test_readme_test_command_is_what_ci_runs() -> None:
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    (command,) = [line for line in ci if line.startswith("python3 -m venv")]
    assert f"\n    {command}\n" in (REPO / "README.md").read_text()


def test_readme_nginx_install_changes_the_upstream_the_configs_ship() -> None:
    readme = (REPO / "README.md").read_text()
    (sed,) = re.findall(r"^    sed '(s/[^']*/)' nginx/(\S+)", readme, re.M)
    assert sed[0] == f"s/{UPSTREAM}/127.0.0.1:8080/"
    assert f"server {UPSTREAM} " in (REPO / "nginx" / sed[1]).read_text()


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_every_setting_has_its_row_in_the_configuration_table(setting: str) -> None:
    flag = "--" + setting.replace("_", "-")
    env, key = "PIXCACHE_" + setting.upper(), f"`{setting}`"
    rows = [line for line in CONFIGURATION.read_text().splitlines() if line.startswith("|")]
    assert any(f"`{flag}`" in row and env in row and key in row for row in rows), flag
