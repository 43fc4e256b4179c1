"""The docs cannot rot: the map names every module, and every relative link leads somewhere.

The Python blocks of README.md and docs/*.md run as tests of their own (pytest-markdown-docs,
enabled by `--markdown-docs` in pyproject.toml); a block that needs a trained run, data or the
network is fenced as ```python notest.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "qkv"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]


def modules_and_packages() -> list[str]:
    """`qkv.<name>` for every subpackage (a folder with __init__.py) and top-level module."""
    names = [f"qkv.{d.name}" for d in PACKAGE.iterdir() if d.is_dir() and (d / "__init__.py").is_file()]
    names += [f"qkv.{f.stem}" for f in PACKAGE.glob("*.py") if f.stem not in ("__init__", "__main__")]
    return sorted(names)


def test_architecture_names_every_package_and_module():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    names = modules_and_packages()
    assert names, f"no modules found under {PACKAGE}"
    missing = [n for n in names if not re.search(rf"`{re.escape(n)}`", text)]
    assert not missing, f"docs/architecture.md does not describe {', '.join(missing)}: add each to the map"


def test_architecture_describes_only_real_packages():
    """Each entry of the map (a bold **`qkv.<name>`** paragraph) is a package or module that exists."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    described = re.findall(r"^\*\*`(qkv\.\w+)`\*\*", text, re.M)
    assert described, "docs/architecture.md describes no package"
    gone = sorted(set(described) - set(modules_and_packages()))
    assert not gone, f"docs/architecture.md describes {', '.join(gone)}, which src/qkv does not hold"


# --- links -------------------------------------------------------------------------------------

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: link text kept, URLs dropped, punctuation removed."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    found: set[str] = set()
    for line in text.splitlines():
        if line.startswith("#"):
            base = github_anchor(line.lstrip("#"))
            anchor, n = base, 0
            while anchor in found:                   # GitHub numbers repeated headings
                n += 1
                anchor = f"{base}-{n}"
            found.add(anchor)
    return found


def relative_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    links = [a or b for a, b in LINK.findall(text)]
    return [link for link in links if not re.match(r"[a-z][a-z0-9+.-]*:", link)]   # no http:, mailto:


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_lead_somewhere(page):
    broken = []
    for link in relative_links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link} (no file {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target})")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link} (no heading with anchor #{anchor})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {'; '.join(broken)}"
