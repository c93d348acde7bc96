"""The README is the front door: short, opening with the two set-up commands, linking every docs
page, and naming only paths that exist in a clone. Docs links must resolve inside the repo too,
and bench/README.md describes every bench script.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 160
DOCS_PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "bench" / "README.md"]
LINK = re.compile(r"\]\(([^()\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")
EXTERNAL = ("http://", "https://", "mailto:")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (links and headings there are not markdown)."""
    lines, in_fence = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            lines.append(line)
    return lines


def fenced_blocks(text: str) -> list[tuple[int, list[str]]]:
    """Each fenced block as (index of its opening line, its lines)."""
    blocks, current, start = [], None, 0
    for i, line in enumerate(text.splitlines()):
        if FENCE.match(line):
            if current is None:
                current, start = [], i
            else:
                blocks.append((start, current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def github_anchors(text: str) -> set[str]:
    """Heading anchors as GitHub renders them: lower case, punctuation dropped, spaces to '-',
    repeated headings numbered."""
    anchors: set[str] = set()
    for line in prose_lines(text):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in anchors:
            n += 1
            candidate = f"{slug}-{n}"
        anchors.add(candidate)
    return anchors


def relative_links(page: Path) -> list[str]:
    text = "\n".join(prose_lines(page.read_text(encoding="utf-8")))
    return [target for target in LINK.findall(text) if not target.startswith(EXTERNAL)]


def test_readme_is_short():
    num_lines = len(README.read_text(encoding="utf-8").splitlines())
    assert num_lines <= MAX_README_LINES, f"README.md has {num_lines} lines (at most {MAX_README_LINES})"


def test_readme_opens_with_the_demo_and_test_commands():
    text = README.read_text(encoding="utf-8")
    commands = [line.split("#", 1)[0].strip().removeprefix("$ ")
                for _, lines in fenced_blocks(text) for line in lines]
    commands = [c for c in commands if c]
    assert commands[:2] == ["make demo", "make test"]
    first_block_line = fenced_blocks(text)[0][0]
    sections_before = [l for l in text.splitlines()[:first_block_line] if l.startswith("## ")]
    assert not sections_before, "the set-up commands must come before any section"
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("demo", "test"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"Makefile has no '{target}' target"


def test_readme_never_mentions_the_shared_directory():
    assert "../shared" not in README.read_text(encoding="utf-8")


@pytest.mark.parametrize("page", [README] + DOCS_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repo(page: Path):
    broken = []
    for target in relative_links(page):
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(f"{target} (no such file in the repo)")
        elif anchor and resolved.suffix == ".md":
            if anchor not in github_anchors(resolved.read_text(encoding="utf-8")):
                broken.append(f"{target} (no heading '#{anchor}')")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in relative_links(README)}
    unlinked = [str(page.relative_to(ROOT)) for page in DOCS_PAGES if page.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def test_every_path_in_the_readme_layout_exists():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    heading = lines.index("## Layout")
    start, layout = next((i, block) for i, block in fenced_blocks(text) if i > heading)
    assert start < next(i for i, l in enumerate(lines) if i > heading and l.startswith("## "))
    paths = [line.split()[0] for line in layout if line.strip()]
    assert len(paths) >= 8, "the layout block lists too few paths to be the repo's layout"
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"README layout names paths that do not exist: {missing}"


def test_every_bench_script_is_described_in_bench_readme():
    text = (ROOT / "bench" / "README.md").read_text(encoding="utf-8")
    scripts = sorted(p.name for p in (ROOT / "bench").iterdir() if p.suffix in (".py", ".sh"))
    undescribed = [name for name in scripts if f"`{name}`" not in text]
    assert not undescribed, f"bench scripts bench/README.md does not describe: {undescribed}"
