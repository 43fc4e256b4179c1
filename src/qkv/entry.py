"""One way in: the wrapper every entry point runs through, and the one DDP self-relaunch.

Every entry point (the `qkv` command, the recipes, the benchmarks) runs its main function through
:func:`run_main` (or decorates it with :func:`entry_point`), which

- applies the process-wide settings once, before anything else (glibc keeps freed memory for
  big tensors, :mod:`qkv.fast.malloc`; QKV_KEEP_FREED_MEMORY=0 turns it off),
- prints a deliberate error (:class:`~qkv.errors.QkvError`) as one line, ``error: ...``, and
  exits 2 (QKV_DEBUG=1 shows the traceback instead),
- prints a :class:`~qkv.errors.QkvWarning` as one line, ``warning: ...``,
- turns a full or read-only device while writing (ENOSPC, EDQUOT, EROFS, EFBIG) into one line
  and exit 2, and a closed pipe (``qkv ... | head``) into a quiet exit 141,
- answers Ctrl-C with ``error: interrupted`` and exit 130,
- answers an allocation failure (CPU or CUDA) with one line of advice and exit 2; any other
  exception is a bug and keeps its traceback,
- passes SystemExit codes through (argparse and click: 2 for a usage error, 0 for --help).

Training entry points with ``--processes N`` start themselves again under torchrun with
:func:`relaunch_under_torchrun`; torchrun's specifics (the command, the thread share, the
checks) live in :mod:`qkv.training.distributed`.

Nothing here imports torch, so a script's ``--help`` stays fast.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from qkv.errors import QkvError, QkvWarning

__all__ = ["entry_point", "is_torchrun_rank", "out_of_memory", "prepare_process", "relaunch_under_torchrun",
           "run_main"]

_kept_freed_memory: bool | None = None


def prepare_process() -> bool:
    """The process-wide settings of every entry point, applied once (a second call changes nothing):
    glibc keeps freed memory for reuse. Returns whether freed memory is kept (a benchmark records it)."""
    global _kept_freed_memory
    if _kept_freed_memory is None:
        from qkv.fast.malloc import keep_freed_memory

        _kept_freed_memory = keep_freed_memory()
    return _kept_freed_memory


def run_main(fn: Callable[..., object], argv: Sequence[str] | None = None) -> int:
    """Run an entry point's main function and return its exit status (for ``sys.exit``).

    ``fn()`` is called without arguments when `argv` is None (it reads ``sys.argv`` itself), else
    ``fn(list(argv))``. An int it returns is the exit status; anything else (None) is 0.
    A torchrun rank does not return: it leaves with that status without the interpreter's final
    clean-up, where gloo can abort it (`qkv.training.distributed.exit_worker_rank`)."""
    code = _run_main(fn, argv)
    if is_torchrun_rank():
        from qkv.training.distributed import exit_worker_rank

        exit_worker_rank(code)
    return code


def _run_main(fn: Callable[..., object], argv: Sequence[str] | None) -> int:
    prepare_process()
    try:
        with _warnings_as_lines():
            code = fn() if argv is None else fn(list(argv))
            sys.stdout.flush()                  # a full device fails here, not silently at exit
    except SystemExit as exc:
        return _exit_status(exc)
    except KeyboardInterrupt:
        _print_error("interrupted")
        return 130
    except Exception as exc:                     # noqa: BLE001  (re-raised unless deliberate or out of memory)
        if _debug():
            raise
        if isinstance(exc, QkvError):
            _print_error(" ".join(str(exc).split()))
            return 2
        if isinstance(exc, BrokenPipeError):    # `qkv ... | head`: the reader left, as with SIGPIPE
            _silence_stdout()
            return 141
        if isinstance(exc, OSError) and exc.errno in _FULL_OR_READ_ONLY:
            where = f" {exc.filename}" if exc.filename else ""
            _print_error(f"cannot write{where}: {exc.strerror}; free some space or write somewhere else")
            _silence_stdout()
            return 2
        if out_of_memory(exc):
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            _print_error(f"out of memory ({first}); ask for less at once: a smaller --batch-size or --beam, "
                         f"shorter inputs, or for training a smaller train.batch_tokens or model")
            return 2
        raise
    return code if isinstance(code, int) else 0


def entry_point(fn: Callable[..., object]) -> Callable[[Sequence[str] | None], int]:
    """Decorator form of :func:`run_main`: ``main(argv=None) -> int`` runs through the wrapper.

        @entry_point
        def main(argv: list[str] | None = None) -> int: ...

        if __name__ == "__main__":
            sys.exit(main())
    """
    @functools.wraps(fn)
    def wrapped(argv: Sequence[str] | None = None) -> int:
        return run_main(fn, argv)

    return wrapped


def out_of_memory(exc: BaseException) -> bool:
    """Whether an exception is an allocation failure (CPU or CUDA), not a bug.
    torch.OutOfMemoryError is a RuntimeError; the CPU allocator says "can't allocate memory"."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def is_torchrun_rank() -> bool:
    """Whether torchrun started this process (it sets WORLD_SIZE): a rank never relaunches."""
    return "WORLD_SIZE" in os.environ


def relaunch_under_torchrun(processes: int, command: Callable[[], list[str]]) -> int | None:
    """Start this entry point again under torchrun in `processes` ranks on this machine.

    Returns None when this process should do the work itself (one process, or it already is a
    torchrun rank), else the exit status of the ranks. `processes` is checked first (at least 1,
    no more than the cores or GPUs: one line otherwise). `command` builds the whole torchrun
    command, usually with :func:`qkv.training.distributed.local_launch_command` (which gives each rank
    its share of the global batch); it is called only when relaunching, so the config and data
    checks it makes fail here once, in one line, not once per rank."""
    from qkv.training.distributed import check_processes, local_launch

    check_processes(processes)
    if processes == 1 or is_torchrun_rank():
        return None
    return local_launch(command(), processes)


def run_distributed(processes: int, command: Callable[[], list[str]], work: Callable[[], Any]) -> int:
    """A recipe's main: with `processes` > 1 start it again under torchrun (`command`, see
    `relaunch_under_torchrun`) and return the ranks' exit status; otherwise do `work()`. Rank 0
    prints what it returns as JSON; the other DDP ranks' `work` returns None (each rank then
    leaves through `run_main`)."""
    import json

    code = relaunch_under_torchrun(processes, command)
    if code is not None:                        # the ranks did the work
        return code
    results = work()
    if results is None:                         # a DDP rank other than 0: rank 0 reports
        return 0
    print(json.dumps(results, indent=2, ensure_ascii=False))
    return 0


def _exit_status(exc: SystemExit) -> int:
    """The status a SystemExit asks for: an int as is, None 0, a message printed to stderr and 1
    (what the interpreter itself does with ``sys.exit("message")``)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr, flush=True)
    return 1


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """A QkvWarning raised anywhere below (e.g. tokenizer training lines skipped) is printed as
    one line, ``warning: ...``, every time; other warnings keep Python's own format."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", QkvWarning)
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
            if issubclass(category, QkvWarning):
                print(f"warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


_FULL_OR_READ_ONLY = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so that the interpreter's last flush of what is still
    buffered (to a full device, a closed pipe) adds no second message."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _print_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def _debug() -> bool:
    return os.environ.get("QKV_DEBUG", "") not in ("", "0")
