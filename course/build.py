"""Execute the course's notebooks and render them as static HTML.

    python course/build.py                 # `make course-html`: every notebook, en and ko -> course/html/
    python course/build.py en/01_tokens.py # only these (paths relative to course/)
    python course/build.py --mathjax file:///usr/share/javascript/mathjax/MathJax.js
                                           # formulas offline (Debian's libjs-mathjax); default: a CDN

The notebooks are percent-format .py files (jupytext) in course/en and course/ko, twins with the
same code. Each runs in a fresh Python kernel with course/<lang> as its working directory, so
`../runs` is course/runs, where the shared trained run lives (trained by the first notebook that
needs it, loaded by the others). tests/course/test_course.py executes them with the same code.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import resource
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

COURSE = Path(__file__).resolve().parent
LANGUAGES = ("en", "ko")
LANGUAGE_NAMES = {"en": "English", "ko": "한국어"}
NOTEBOOK = re.compile(r"^\d\d_\w+\.py$")
# The line every notebook that needs the trained encoder-decoder shares (see course/README.md):
# notebooks holding it run first, one at a time, so the run is trained once and then only loaded.
SHARED_RUN = 'qkv.train("dates", out="../runs/dates"'
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def notebooks(course: Path = COURSE, language: str | None = None) -> list[Path]:
    """The course's notebooks (course/<lang>/NN_slug.py), in course order, English first."""
    languages = LANGUAGES if language is None else (language,)
    return [path for lang in languages for path in sorted((course / lang).glob("*.py")) if NOTEBOOK.match(path.name)]


def read(path: Path):  # -> nbformat.NotebookNode
    import jupytext

    return jupytext.read(path)


@dataclass
class Failure(Exception):
    """A notebook stopped at a cell: which one, its source, and the error it raised."""

    path: Path
    cell: int               # index among the notebook's cells (markdown included), from 0
    source: str
    ename: str
    evalue: str
    traceback: str

    def __str__(self) -> str:
        return (f"{self.path.parent.name}/{self.path.name}: cell {self.cell} raised {self.ename}: {self.evalue}\n"
                f"--- the cell ---\n{self.source}\n--- traceback ---\n{self.traceback}")


def kernel_manager(kernel_dir: Path, env: dict[str, str]):  # -> AsyncKernelManager
    """A manager for a Python kernel run by this interpreter (not whatever "python3" kernel a
    machine has registered), with `env` added to the environment."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    spec = kernel_dir / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3", "language": "python", "env": env,
    }))
    specs = KernelSpecManager(kernel_dirs=[str(kernel_dir)], ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)


def kernel_env(src: Path | None = None, threads: int | None = None) -> dict[str, str]:
    """PYTHONPATH with `src` first (the kernel imports qkv from this tree), and a thread count
    when several kernels share the cores."""
    src = COURSE.parent / "src" if src is None else src
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH", "")) if p)}
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


async def execute(path: Path, env: dict[str, str], timeout: int = 900):  # -> nbformat.NotebookNode
    """Run every cell of the notebook at `path` in its own folder; raise Failure at the first error.

    The kernel's own log (not the cells' output, which the notebook keeps) goes to a file, shown
    only when the kernel itself fails; the kernel is shut down at the end either way."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = read(path)
    with tempfile.TemporaryDirectory(prefix="qkv-kernel-") as tmp:
        km = kernel_manager(Path(tmp), env)
        log = Path(tmp) / "kernel.log"
        client = NotebookClient(nb, timeout=timeout, km=km, resources={"metadata": {"path": str(path.parent)}})
        try:
            with open(log, "wb") as kernel_stderr:
                await client.async_execute(stderr=kernel_stderr)
        except CellExecutionError as exc:
            index = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code" and
                          any(o.get("output_type") == "error" for o in c.get("outputs", []))), -1)
            raise Failure(path, index, nb.cells[index].source if index >= 0 else "", exc.ename,
                          ANSI.sub("", exc.evalue), ANSI.sub("", exc.traceback)) from None
        except Exception as exc:           # the kernel died, timed out or never started
            raise Failure(path, -1, "", type(exc).__name__, str(exc),
                          log.read_text(encoding="utf-8", errors="replace")[-4000:]) from None
        finally:
            if await km.is_alive():        # a km passed in is ours to shut down, not nbclient's
                await km.shutdown_kernel(now=True)
    return nb


def order(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(the first notebook that trains the shared run, if any; all the others, English first)."""
    first = next((p for p in paths if SHARED_RUN in p.read_text(encoding="utf-8")), None)
    rest = [p for p in paths if p != first]
    return ([first] if first else []), sorted(rest, key=lambda p: p.parent.name != "en")


async def execute_all(paths: Sequence[Path], parallel: int = 2, src: Path | None = None,
                      on_done=None) -> dict[Path, object]:
    """Execute `paths`: the one that trains the shared run alone first, then the rest `parallel`
    at a time (one thread each when parallel > 1). Twins never run at the same time: a notebook
    starts after its English twin has finished, since both write the same files under ../runs
    (and the second reuses what the first saved there). Returns {path: notebook or Failure}."""
    results: dict[Path, object] = {}
    first, rest = order(paths)
    finished = {p.name: asyncio.Event() for p in paths if p.parent.name == "en"}

    async def one(path: Path, env: dict[str, str], gate: asyncio.Semaphore) -> None:
        if path.parent.name != "en" and path.name in finished:
            await finished[path.name].wait()
        async with gate:
            start = time.perf_counter()
            try:
                results[path] = await execute(path, env)
            except Failure as failure:
                results[path] = failure
            finally:
                if path.parent.name == "en" and path.name in finished:
                    finished[path.name].set()
            if on_done is not None:
                on_done(path, results[path], time.perf_counter() - start)

    for path in first:
        await one(path, kernel_env(src), asyncio.Semaphore(1))
    gate = asyncio.Semaphore(max(parallel, 1))
    env = kernel_env(src, threads=1 if parallel > 1 else None)
    await asyncio.gather(*(one(p, env, gate) for p in rest))
    return {p: results[p] for p in paths}


# --- HTML -----------------------------------------------------------------------------------------


def title(nb) -> str:
    """The first markdown heading of a notebook."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return ""


def write_html(done: dict[Path, object], out: Path, mathjax: str | None = None) -> Path:
    """One HTML page per executed notebook (out/<lang>/NN_slug.html) and out/index.html.
    `mathjax`: where the pages load MathJax 2 from (nbconvert's CDN address by default)."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(**({"mathjax_url": mathjax} if mathjax else {}))
    rows: dict[str, list[str]] = {lang: [] for lang in LANGUAGES}
    for path, nb in done.items():
        lang = path.parent.name
        target = out / lang / (path.stem + ".html")
        target.parent.mkdir(parents=True, exist_ok=True)
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
        target.write_text(body, encoding="utf-8")
        rows[lang].append(f'<li><a href="{lang}/{target.name}">{html.escape(title(nb) or path.stem)}</a></li>')
    columns = "".join(f'<section><h2>{LANGUAGE_NAMES[lang]}</h2><ol start="0">{"".join(rows[lang])}</ol></section>'
                      for lang in LANGUAGES if rows[lang])
    index = out / "index.html"
    index.write_text(
        '<!doctype html><html><head><meta charset="utf-8"><title>qkv: the course</title><style>'
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.5}"
        "main{display:flex;gap:3rem;flex-wrap:wrap}section{flex:1;min-width:18rem}</style></head><body>"
        "<h1>qkv: the Transformer, in notebooks / 노트북으로 배우는 트랜스포머</h1>"
        "<p>Executed notebooks, in the order of the course. / 실행된 노트북, 강의 순서대로.</p>"
        f"<main>{columns}</main></body></html>", encoding="utf-8")
    return index


def main(argv: Iterable[str]) -> int:
    args, mathjax = list(argv), None
    if "--mathjax" in args:
        at = args.index("--mathjax")
        if at + 1 >= len(args):
            print("error: --mathjax needs an address, e.g. file:///usr/share/javascript/mathjax/MathJax.js", file=sys.stderr)
            return 2
        mathjax = args.pop(at + 1)
        args.pop(at)
        if mathjax.endswith("MathJax.js"):
            mathjax += "?config=TeX-AMS_CHTML-full,Safe"     # the configuration nbconvert's own address names
    chosen = [COURSE / a for a in args] or notebooks()
    missing = [str(p) for p in chosen if not p.is_file()]
    if missing:
        print(f"error: no notebook {missing[0]}; give paths relative to course/, e.g. en/01_tokens.py", file=sys.stderr)
        return 2
    start = time.perf_counter()

    def done(path: Path, result: object, seconds: float) -> None:
        status = "ok" if not isinstance(result, Failure) else f"FAILED at cell {result.cell}: {result.ename}"
        print(f"{path.parent.name}/{path.name}: {status} ({seconds:.0f} s)", flush=True)

    results = asyncio.run(execute_all(chosen, on_done=done))
    kernels = resource.getrusage(resource.RUSAGE_CHILDREN)      # the kernels, shut down and waited for
    failures = [r for r in results.values() if isinstance(r, Failure)]
    index = write_html({p: nb for p, nb in results.items() if not isinstance(nb, Failure)}, COURSE / "html", mathjax)
    print(f"{len(results) - len(failures)} of {len(results)} notebooks in {time.perf_counter() - start:.0f} s "
          f"({kernels.ru_utime + kernels.ru_stime:.0f} s of CPU in the kernels); open {index}")
    for failure in failures:
        print(f"\n{failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
