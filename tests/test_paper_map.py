"""docs/paper-map.md names real code: every `path:qualified.name` in it exists."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAP = ROOT / "docs" / "paper-map.md"
REF = re.compile(r"`(src/qkv/[\w/]+\.py):([\w.]+)`")


def defined_names(path: Path) -> set[str]:
    """Qualified names of the classes and functions defined in a file (Class.method included)."""
    names: set[str] = set()

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(prefix + child.name)
                visit(child, prefix + child.name + ".")

    visit(ast.parse(path.read_text()), "")
    return names


def test_every_name_in_the_paper_map_exists():
    refs = REF.findall(MAP.read_text())
    assert len(refs) >= 40                                    # the map is not empty or reformatted away
    missing = [f"{path}:{name}" for path, name in refs
               if not (ROOT / path).is_file() or name not in defined_names(ROOT / path)]
    assert not missing, f"docs/paper-map.md names code that does not exist: {missing}"


def test_the_map_covers_every_section_and_course_step():
    text = MAP.read_text()
    for section in ("3.1", "3.2.1", "3.2.2", "3.2.3", "3.3", "3.4", "3.5", "5.3", "5.4"):
        assert f"| {section} " in text, section
    for step in ("tokenization", "embeddings", "Q, K, V", "scores", "/ sqrt(d)", "mask", "softmax", "x V",
                 "heads", "cross-attention", "FFN", "residual + norm", "positional encoding"):
        assert f"| {step}" in text, step          # a row starts with the step
