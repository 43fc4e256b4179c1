"""The course (course/): English and Korean twins with the same code, every notebook executed.

The notebooks run in a temporary copy of course/ (so the shared run in ../runs is trained once
per test session, by the first notebook that needs it, and nothing is written into the tree),
with this tree's src/ first on the kernel's path, two kernels at a time after the first.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COURSE = ROOT / "course"
HANGUL = re.compile(r"[\uac00-\ud7a3]")


def _load_build():
    spec = importlib.util.spec_from_file_location("qkv_course_build", COURSE / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


build = _load_build()
NOTEBOOKS = [f"{p.parent.name}/{p.name}" for p in build.notebooks()]


def _need(*modules: str) -> None:
    for name in modules:
        pytest.importorskip(name, reason=f"the course tests need {name} (pip install -e '.[course]')")


def test_course_has_notebooks():
    assert NOTEBOOKS, "course/en and course/ko hold no NN_slug.py notebook"


def test_every_notebook_has_a_twin():
    en = {p.name for p in build.notebooks(language="en")}
    ko = {p.name for p in build.notebooks(language="ko")}
    assert en == ko, f"only in course/en: {sorted(en - ko)}; only in course/ko: {sorted(ko - en)}"


@pytest.mark.parametrize("name", [p.name for p in build.notebooks(language="en")])
def test_twins_share_their_code_and_ko_prose_is_korean(name):
    _need("jupytext")
    en, ko = build.read(COURSE / "en" / name), build.read(COURSE / "ko" / name)
    assert [c.cell_type for c in en.cells] == [c.cell_type for c in ko.cells], \
        f"{name}: en and ko have different cells (types in order must match)"
    for i, (a, b) in enumerate(zip(en.cells, ko.cells)):
        if a.cell_type == "code":
            assert a.source == b.source, f"{name}: code cell {i} differs between en and ko:\n{a.source}\n---\n{b.source}"
        else:
            assert b.source.strip() and HANGUL.search(b.source), f"{name}: ko markdown cell {i} has no Korean"
            assert a.source.strip(), f"{name}: en markdown cell {i} is empty"
    assert en.metadata.get("kernelspec", {}).get("name") == "python3", f"{name}: the header names no python3 kernel"


@pytest.fixture(scope="session")
def course_copy(tmp_path_factory) -> Path:
    """course/ copied without runs/ and html/ (what the notebooks write stays in the copy), beside the
    repository files the notebooks read (../../recipes/results/...), as in the repository."""
    repo = tmp_path_factory.mktemp("repo")
    copy = repo / "course"
    shutil.copytree(COURSE, copy, ignore=shutil.ignore_patterns("runs", "html", "__pycache__", "*.ipynb", ".ipynb_checkpoints"))
    shutil.copytree(ROOT / "recipes" / "results", repo / "recipes" / "results")
    return copy


@pytest.fixture(scope="session")
def executed(course_copy) -> dict[str, object]:
    """Every notebook executed once: {"en/00_before_attention.py": notebook or build.Failure}."""
    _need("jupytext", "nbclient", "ipykernel")
    results = asyncio.run(build.execute_all(build.notebooks(course_copy), parallel=2, src=ROOT / "src"))
    return {f"{p.parent.name}/{p.name}": r for p, r in results.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(executed, name):
    result = executed[name]
    if isinstance(result, build.Failure):
        pytest.fail(str(result), pytrace=False)


def test_a_wrong_answer_fails_with_a_bilingual_hint(course_copy):
    """An exercise's `...` replaced by a wrong answer: the check cell stops the notebook, saying
    what is wrong in English and Korean (exercise 1.1 comes before the notebook needs a trained run)."""
    _need("jupytext", "nbclient", "ipykernel")
    path = course_copy / "en" / "wrong_answer.py"
    text = (course_copy / "en" / "01_tokens.py").read_text(encoding="utf-8")
    exercise = "n_word_tokens = ..."
    assert exercise in text, f"01_tokens.py no longer has the exercise line {exercise!r}"
    path.write_text(text.replace(exercise, "n_word_tokens = 1"), encoding="utf-8")
    with pytest.raises(build.Failure) as caught:
        asyncio.run(build.execute(path, build.kernel_env(ROOT / "src")))
    failure = caught.value
    assert failure.ename == "AssertionError", str(failure)
    assert " / " in failure.evalue and HANGUL.search(failure.evalue), failure.evalue
    assert "check_1_1" in failure.source or "n_word_tokens" in failure.source, failure.source


@pytest.mark.parametrize("readme", ["README.md", "README.ko.md"])
def test_course_readmes_list_every_notebook(readme):
    text = (COURSE / readme).read_text(encoding="utf-8")
    missing = [p.stem for p in build.notebooks(language="en") if p.stem not in text]
    assert not missing, f"course/{readme} does not list {', '.join(missing)}"
