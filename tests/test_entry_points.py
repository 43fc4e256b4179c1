"""One way in: every script of benchmarks/ and recipes/ imports without running anything, answers
--help, and runs through qkv.entry's wrapper; the wrapper's exit codes and one-line errors; the one
DDP self-relaunch."""

import importlib.util
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import qkv.entry
from qkv.entry import entry_point, relaunch_under_torchrun, run_main
from qkv.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "recipes").glob("*.py"))


def test_the_scripts_are_found():
    names = {f"{p.parent.name}/{p.name}" for p in SCRIPTS}
    assert {"benchmarks/bad_inputs.py", "benchmarks/big_corpus.py", "recipes/multi30k.py",
            "recipes/shakespeare.py"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_script_imports_without_running_and_enters_through_the_wrapper(script, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(qkv.entry, "run_main", lambda *args, **kwargs: calls.append(args) or 0)
    monkeypatch.syspath_prepend(str(script.parent))          # sibling imports (decode_speed, shakespeare)
    before = set(sys.modules)
    try:
        spec = importlib.util.spec_from_file_location(f"_entry_test_{script.parent.name}_{script.stem}", script)
        module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)   # dataclasses look it up
        spec.loader.exec_module(module)
    finally:                                                   # leave no script module behind
        for name in set(sys.modules) - before:
            if Path(getattr(sys.modules[name], "__file__", None) or "/").parent in (ROOT / "benchmarks", ROOT / "recipes"):
                del sys.modules[name]
    assert callable(module.main) and calls == []
    assert capsys.readouterr() == ("", "")                     # importing printed nothing
    source = script.read_text(encoding="utf-8")
    entry = source[source.index('if __name__ == "__main__":'):]
    assert "run_main(main)" in entry or ("@entry_point" in source and "sys.exit(main())" in entry)
    assert not re.search(r"keep_freed_memory\(|import keep_freed_memory", source)   # the wrapper sets it


def test_every_script_answers_help(tmp_path):
    cwd = tmp_path                                             # no script relies on where it is started
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))

    def help_of(script: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, env=env,
                              cwd=cwd, timeout=120)

    with ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(zip(SCRIPTS, pool.map(help_of, SCRIPTS)))
    failed = {f"{s.parent.name}/{s.name}": (r.returncode, r.stderr[-500:]) for s, r in done.items()
              if r.returncode != 0 or not r.stdout.startswith(f"usage: {s.name}") or "Traceback" in r.stderr}
    assert not failed


# --- the wrapper --------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("QKV_DEBUG", raising=False)


def raising(exc: BaseException):
    def fn():
        raise exc
    return fn


def test_a_deliberate_error_is_one_line_and_exit_2(capsys):
    assert run_main(raising(DataError("input.txt not found:\n   pass --data DIR"))) == 2
    assert capsys.readouterr().err == "error: input.txt not found: pass --data DIR\n"


def test_qkv_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("QKV_DEBUG", "1")
    with pytest.raises(ConfigError):
        run_main(raising(ConfigError("bad value")))


def test_ctrl_c_is_exit_130(capsys):
    assert run_main(raising(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "error: interrupted\n"


@pytest.mark.parametrize("failure", [
    RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 38400000000 bytes.\nmore"),
    RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    MemoryError(),
])
def test_running_out_of_memory_is_one_line_of_advice(failure, capsys):
    assert run_main(raising(failure)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: out of memory (") and "train.batch_tokens" in err


@pytest.mark.parametrize("bug", [RuntimeError("expected scalar type Float but found Half"), ValueError("bug")])
def test_a_bug_keeps_its_traceback(bug):
    with pytest.raises(type(bug), match=str(bug)):
        run_main(raising(bug))


@pytest.mark.parametrize("code, status", [(0, 0), (3, 3), (None, 0)])
def test_exit_codes_pass_through(code, status):
    assert run_main(raising(SystemExit(code))) == status
    assert run_main(lambda: code) == status                     # returned, not raised


def test_an_exit_message_is_printed_with_status_1(capsys):
    assert run_main(raising(SystemExit("keep the load bounded"))) == 1
    assert capsys.readouterr().err == "keep the load bounded\n"


def test_argv_reaches_the_function_and_the_allocator_is_set_once(monkeypatch):
    applied = []
    monkeypatch.setattr(qkv.entry, "_kept_freed_memory", None)
    monkeypatch.setattr("qkv.fast.malloc.keep_freed_memory", lambda: applied.append(1) or True)

    @entry_point
    def main(argv=None):
        return len(argv)

    assert main(["a", "b"]) == 2 and run_main(main.__wrapped__, ["c"]) == 1
    assert applied == [1] and qkv.entry.prepare_process() is True


# --- the one DDP self-relaunch ------------------------------------------------------------------


@pytest.fixture
def launches(monkeypatch):
    started = []
    monkeypatch.setattr("qkv.training.distributed.local_launch", lambda command, n: started.append((command, n)) or 7)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    return started


def test_one_process_or_a_rank_does_the_work_itself(launches, monkeypatch):
    def command():
        raise AssertionError("no command is built when nothing is relaunched")

    assert relaunch_under_torchrun(1, command) is None
    monkeypatch.setenv("WORLD_SIZE", "2")                       # already a torchrun rank
    assert relaunch_under_torchrun(2, command) is None and launches == []


def test_several_processes_relaunch_and_return_the_ranks_status(launches):
    assert relaunch_under_torchrun(2, lambda: ["torchrun", "script.py"]) == 7
    assert launches == [(["torchrun", "script.py"], 2)]


@pytest.mark.parametrize("processes", [0, -1, 100_000])
def test_impossible_process_counts_are_refused_before_any_command(processes, launches):
    with pytest.raises(ConfigError, match="--processes must be between 1 and"):
        relaunch_under_torchrun(processes, lambda: ["never"])
    assert launches == []


def test_a_bad_input_found_while_building_the_command_is_one_line(launches, capsys):
    def command():
        raise ConfigError("recipe config not found: x.toml")

    assert run_main(lambda: relaunch_under_torchrun(2, command)) == 2
    assert capsys.readouterr().err == "error: recipe config not found: x.toml\n" and launches == []


@pytest.mark.parametrize("rank", [False, True])
def test_a_torchrun_rank_leaves_with_its_status_and_no_interpreter_clean_up(rank):
    """Under torchrun (WORLD_SIZE set) an entry point's process leaves with its exit status, its one
    line printed, without the interpreter's final clean-up (where gloo's threads can abort a rank
    with SIGABRT); outside torchrun run_main returns the status and the clean-up runs."""
    code = ("import atexit, sys\n"
            "from qkv.entry import run_main\n"
            "from qkv.errors import ConfigError\n"
            "atexit.register(lambda: print('clean-up ran', file=sys.stderr))\n"
            "def work():\n"
            "    print('working', end='')\n"
            "    raise ConfigError('the data differs')\n"
            "sys.exit(run_main(work))\n")
    env = {k: v for k, v in os.environ.items() if k != "WORLD_SIZE"}
    if rank:
        env["WORLD_SIZE"] = "2"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2 and done.stdout == "working"
    assert done.stderr == "error: the data differs\n" + ("" if rank else "clean-up ran\n"), done.stderr
