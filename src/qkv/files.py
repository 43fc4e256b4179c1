"""The one safe writer: every file qkv writes goes through here.

A write is atomic (a temporary file beside the target, flushed, then `os.replace`), so a crash or
kill -9 leaves either the old file or the new one, never half of one. A path that cannot be written
(a directory, under a file, no permission, a full disk) raises `OutputError` with one line.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import tomli_w

from qkv.errors import OutputError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so a crash leaves either the old file or the new one, never half.

    A path that cannot be a file (a directory, under a file, no permission) raises OutputError
    with one line. A kill between the two steps leaves a `.<name>.*.tmp` file beside `path`;
    `remove_temporary_files` clears those.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def ensure_directory(path: str | os.PathLike, what: str = "directory") -> Path:
    """Create directory `path` (and its parents), or say in one line why it cannot be one."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file; give a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {what} {path}: {exc.strerror or exc}") from None
    return path


def remove_temporary_files(directory: str | os.PathLike) -> list[Path]:
    """Delete the `.<name>.*.tmp` files that a kill during `atomic_write_bytes` left in `directory`.

    Only for a directory this process owns (e.g. a locked run directory): another writer's
    temporary file would vanish under it.
    """
    removed = []
    for tmp in Path(directory).glob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def save_toml(path: str | os.PathLike, data: dict[str, Any]) -> None:
    atomic_write_bytes(path, tomli_w.dumps(_drop_none(data)).encode("utf-8"))


def _drop_none(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _drop_none(v) for k, v in data.items() if v is not None}
    return data
