"""The documentation: a README that is a front door (at most 250 lines), every relative link in
it and in docs/ leading to a file and heading that exist, and the MkDocs site building in
strict mode (which checks the links and anchors between the pages)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"(?ms)^```.*?^```")


def headings(page: Path) -> set[str]:
    """The anchors MkDocs gives the page's headings (Python-Markdown's toc slugs)."""
    from markdown.extensions.toc import slugify

    text = FENCE.sub("", page.read_text())
    return {slugify(re.sub(r"[`*]", "", title), "-") for title in re.findall(r"(?m)^#{1,6} (.+?)\s*$", text)}


def relative_links(page: Path) -> list[str]:
    return [target for target in LINK.findall(FENCE.sub("", page.read_text()))
            if not re.match(r"[a-z]+:", target)]


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for must in ("Not for clinical use", "make export", "make test", "## Layout", "docs/node.md"):
        assert must in readme


@pytest.mark.parametrize("page", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_every_relative_link_leads_to_a_file_and_heading(page: Path):
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        assert destination.exists(), f"{page.name}: {target} leads nowhere"
        if anchor:
            assert anchor in headings(destination), f"{page.name}: {target}: no such heading"


def test_the_site_builds_in_strict_mode(tmp_path: Path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    assert mkdocs, "mkdocs not found: the docs test needs the dev extra (pip install 'chexplain[dev]')"
    done = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "node" / "index.html").exists()
