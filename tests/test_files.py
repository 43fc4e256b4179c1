"""The one safe writer (qkv.files): atomic, no link following, the umask applied, one line on a
full or read-only disk, nothing partial left behind."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from qkv.errors import OutputError
from qkv.files import append_bytes, atomic_directory, atomic_write, atomic_write_bytes, save_figure


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_new_file_gets_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.txt", b"x")
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "b.txt", b"x")
    finally:
        os.umask(old)
    assert mode(tmp_path / "a.txt") == 0o644
    assert mode(tmp_path / "b.txt") == 0o600


def test_replaced_file_keeps_its_mode(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"old")
    path.chmod(0o640)
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new" and mode(path) == 0o640


def test_a_link_is_replaced_not_followed(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    weights = run / "model.safetensors"
    weights.write_bytes(b"weights")
    link = tmp_path / "picture.png"
    link.symlink_to(weights)
    atomic_write_bytes(link, b"PNG")
    assert weights.read_bytes() == b"weights"
    assert not link.is_symlink() and link.read_bytes() == b"PNG"


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "No space left on device; free some space"),
                                         (errno.EROFS, "Read-only file system"),
                                         (errno.EACCES, "Permission denied")])
def test_disk_errors_are_one_line_and_leave_nothing(tmp_path, code, words):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def fail(f):
        f.write(b"half")
        raise OSError(code, os.strerror(code))

    with pytest.raises(OutputError) as info:
        atomic_write(path, fail)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert path.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_full_disk_on_flush(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match="No space left"):
        atomic_write_bytes(tmp_path / "out.bin", b"x" * 100)
    assert list(tmp_path.iterdir()) == []


def test_read_only_directory(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="Permission denied"):
            atomic_write_bytes(tmp_path / "out.bin", b"x")
    finally:
        tmp_path.chmod(0o755)


def test_figure_through_the_writer(tmp_path):
    class Figure:
        def savefig(self, f, format, dpi):
            f.write(f"{format} {dpi}".encode())

    target = tmp_path / "real.png"
    target.write_bytes(b"keep")
    (tmp_path / "p.png").symlink_to(target)
    save_figure(Figure(), tmp_path / "p.png", dpi=50)
    assert (tmp_path / "p.png").read_bytes() == b"png 50" and target.read_bytes() == b"keep"


def test_append_never_follows_a_link(tmp_path):
    target = tmp_path / "weights"
    target.write_bytes(b"w")
    (tmp_path / "metrics.jsonl").symlink_to(target)
    with pytest.raises(OutputError, match="symbolic link"):
        append_bytes(tmp_path / "metrics.jsonl", b"{}\n")
    assert target.read_bytes() == b"w"
    append_bytes(tmp_path / "log", b"a")
    append_bytes(tmp_path / "log", b"b")
    assert (tmp_path / "log").read_bytes() == b"ab"


def test_directory_whole_or_not_at_all(tmp_path):
    out = tmp_path / "export"
    with pytest.raises(RuntimeError), atomic_directory(out, "export") as tmp:
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("failed half-way")
    assert not out.exists() and leftovers(tmp_path) == []
    with atomic_directory(out, "export") as tmp:
        (tmp / "config.json").write_text("{}")
    assert (out / "config.json").is_file() and leftovers(tmp_path) == []


def test_directory_refuses_foreign_content_and_replaces_its_own(tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"), atomic_directory(out, "export"):
        pass
    assert (out / "notes.txt").read_text() == "mine"
    with atomic_directory(out, "export", replaceable=lambda d: (d / "notes.txt").exists()) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"] and leftovers(tmp_path) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"), atomic_directory(tmp_path / "file"):
        pass


def test_directory_full_disk_leaves_nothing(tmp_path):
    out = tmp_path / "export"
    with pytest.raises(OutputError, match="No space left"), atomic_directory(out, "export"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert not out.exists() and leftovers(tmp_path) == []


def test_a_device_is_written_in_place_not_replaced(tmp_path):
    atomic_write_bytes("/dev/null", b"nothing")
    assert Path("/dev/null").is_char_device()
    if Path("/dev/full").is_char_device():
        with pytest.raises(OutputError, match="No space left on device; free some space"):
            atomic_write_bytes("/dev/full", b"x" * 10)
        assert Path("/dev/full").is_char_device()
    (tmp_path / "to-null").symlink_to("/dev/null")         # like /dev/stdout: a link to a device
    atomic_write_bytes(tmp_path / "to-null", b"x")
    assert (tmp_path / "to-null").is_symlink()


def test_a_run_and_a_directory_output_are_readable_by_others_under_umask_022(tmp_path):
    from tests.serve_runs import tiny_run

    old = os.umask(0o022)
    try:
        run = tiny_run(tmp_path / "run")
        with atomic_directory(tmp_path / "export") as tmp:
            atomic_write_bytes(tmp / "model.bin", b"x")
    finally:
        os.umask(old)
    modes = {p.name: mode(p) for p in run.iterdir() if not p.name.startswith(".")}
    assert modes and set(modes.values()) == {0o644}, modes
    assert mode(tmp_path / "export") == 0o755 and mode(tmp_path / "export" / "model.bin") == 0o644


def test_two_writers_of_one_directory_never_mix(tmp_path):
    out = tmp_path / "prepared"
    with pytest.raises(OutputError, match="meanwhile"), atomic_directory(out, "prepared corpus") as tmp:
        (tmp / "mine").write_text("second")
        out.mkdir()                                   # the first writer finished while this one worked
        (out / "theirs").write_text("first")
    assert [p.name for p in out.iterdir()] == ["theirs"] and leftovers(tmp_path) == []
