"""The one safe writer: every file qkv writes goes through here.

A write is atomic (a temporary file beside the target, flushed, then `os.replace`), so a crash or
kill -9 leaves either the old file or the new one, never half of one. `os.replace` replaces a
symbolic link at the target itself, so a write never follows a link into another file (e.g. a
run's weights). A new file gets the mode `0o666` less the umask, like `open`; a replaced file
keeps its mode. A path that cannot be written (a directory, under a file, no permission, a
read-only file system, a full disk) raises `OutputError` with one line, and no temporary file is
left behind.

A directory (an export, an import, a prepared corpus) is written the same way with
`atomic_directory`: into a temporary sibling, renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import tomli_w

from qkv.errors import OutputError, QkvError

_ADVICE = {
    errno.ENOSPC: "free some space or write somewhere else",
    errno.EDQUOT: "free some space or write somewhere else",
    errno.EROFS: "write somewhere else",
    errno.EACCES: "write somewhere else",
    errno.EPERM: "write somewhere else",
    errno.ELOOP: "a symbolic link is in the way; give another name",
}


def _reason(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    advice = _ADVICE.get(exc.errno or 0)
    return f"{reason}; {advice}" if advice else reason


def output_error(path: str | os.PathLike, exc: OSError, what: str = "") -> OutputError:
    """The one-line `OutputError` for an OSError met while writing `path`."""
    return OutputError(f"cannot write {what + ' ' if what else ''}{path}: {_reason(exc)}")


def current_umask() -> int:
    """The process's umask, read without changing it where Linux says it (/proc), else set back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_mode(path: Path) -> int:
    """An existing regular file's mode (not a link's target's), else 0o666 less the umask."""
    try:
        st = os.lstat(path)
    except OSError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode):           # lstat: a link's target keeps its own
        return st.st_mode & 0o777
    return 0o666 & ~current_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """Call `write(f)` on a temporary file beside `path`, then put it at `path` in one step.

    A symbolic link at `path` is replaced, never followed. Errors from the file system become one
    line (`OutputError`) and leave neither `path` changed nor a temporary file behind.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory; give a file name")
    if _is_stream(path):
        _write_stream(path, write)
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise output_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), _new_mode(path))
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise output_error(path, exc) from None
        raise


def _is_stream(path: Path) -> bool:
    """Whether `path` leads to a device, a pipe or a socket (/dev/stdout, /dev/null, a FIFO): those
    are written in place, as a stream; replacing them with a file is never what was meant."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _write_stream(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    try:
        with open(path, "wb") as f:
            write(f)
    except OSError as exc:
        raise output_error(path, exc) from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so a crash leaves either the old file or the new one, never half.

    A path that cannot be a file (a directory, under a file, no permission, a full or read-only
    disk) raises OutputError with one line. A kill between the two steps leaves a
    `.<name>.*.tmp` file beside `path`; `remove_temporary_files` clears those.
    """
    atomic_write(path, lambda f: f.write(data))


def save_figure(fig: Any, path: str | os.PathLike, **savefig: Any) -> None:
    """Write a matplotlib figure through the safe writer (format from the suffix, PNG by default)."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=savefig.pop("format", path.suffix.lstrip(".").lower() or "png"), **savefig)
    atomic_write_bytes(path, buf.getvalue())


def open_append(path: str | os.PathLike) -> BinaryIO:
    """Open a log (e.g. a run's metrics.jsonl) to append to it, never through a symbolic link."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as exc:
        raise output_error(path, exc) from None
    return os.fdopen(fd, "ab")


def append_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Append `data` to the log at `path` (created if missing); one line on a full or read-only disk."""
    try:
        with open_append(path) as f:
            f.write(data)
    except OutputError:
        raise
    except OSError as exc:
        raise output_error(path, exc) from None


@contextlib.contextmanager
def exclusive_lock(path: Path, busy: Callable[[str], QkvError], cannot: Callable[[OSError], QkvError]) -> Iterator[int]:
    """Hold an advisory `flock` on `path` (created if missing, never opened through a link) with
    this process's pid written in it; the system drops the lock when the process dies, even by
    kill -9. Raises `busy(holder_pid)` when another process holds it, `cannot(error)` when the file
    cannot be opened. Yields the file descriptor."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as exc:
        raise cannot(exc) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy(os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield fd
    finally:
        os.close(fd)                             # closing releases the lock


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike, what: str = "directory",
                     replaceable: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Write a directory whole or not at all: yields a temporary sibling of `out` to fill, which is
    renamed to `out` when the block ends without error, and removed when it fails.

    An existing `out` must be an empty directory, or one that `replaceable(out)` accepts (a
    previous output of the same kind, which is then replaced); anything else is refused in one line.
    """
    out = Path(out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputError(f"{what} {out} is a file or a link; give a new directory")
    if out.is_dir() and any(out.iterdir()) and not (replaceable and replaceable(out)):
        raise OutputError(f"{what} {out} already exists and is not empty; choose another --out or delete it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        os.chmod(tmp, 0o777 & ~current_umask())     # mkdtemp's 0700 would hide it from other users
    except OSError as exc:
        raise output_error(out, exc, what) from None
    try:
        yield tmp
        if out.is_dir() and not out.is_symlink() and any(out.iterdir()):
            if not (replaceable and replaceable(out)):       # e.g. another process wrote it meanwhile
                raise OutputError(f"{what} {out} was filled by someone else meanwhile; choose another --out")
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if out.is_dir() and not out.is_symlink():
                out.rmdir()
            os.replace(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        found = _os_error(exc)
        if found is not None:
            raise output_error(out, found, what) from None
        raise


def _os_error(exc: BaseException) -> OSError | None:
    """The file-system error in `exc`: an OSError, or a library's error that carries one in its
    message the way Rust and C++ libraries print it ("... (os error 28)")."""
    if isinstance(exc, OutputError) or not isinstance(exc, Exception):
        return None
    if isinstance(exc, OSError):
        return exc
    match = re.search(r"os error (\d+)", str(exc))
    if match and int(match.group(1)) in _ADVICE:
        code = int(match.group(1))
        return OSError(code, os.strerror(code))
    return None


def ensure_directory(path: str | os.PathLike, what: str = "directory") -> Path:
    """Create directory `path` (and its parents), or say in one line why it cannot be one."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file; give a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {what} {path}: {_reason(exc)}") from None
    return path


def remove_temporary_files(directory: str | os.PathLike) -> list[Path]:
    """Delete the `.<name>.*.tmp` files that a kill during `atomic_write_bytes` left in `directory`.

    Only for a directory this process owns (e.g. a locked run directory): another writer's
    temporary file would vanish under it.
    """
    removed = []
    for tmp in Path(directory).glob(".*.tmp"):
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def save_toml(path: str | os.PathLike, data: dict[str, Any]) -> None:
    atomic_write_bytes(path, tomli_w.dumps(_drop_none(data)).encode("utf-8"))


def _drop_none(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _drop_none(v) for k, v in data.items() if v is not None}
    return data
