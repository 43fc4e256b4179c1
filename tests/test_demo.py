"""`qkv demo` (README's first command) runs again and again, and never deletes anyone's work."""

import pytest

from qkv.cli import main
from qkv.demo import DEMO_MARK, run_demo

QUICK = ("train.steps=2", "train.eval_every=2", "train.checkpoint_every=2", "train.eval_examples=8",
         "data.train_size=200", "data.valid_size=8", "train.threads=1")


def test_the_demo_runs_twice_in_one_directory(tmp_path):
    out = tmp_path / "demo"
    first = run_demo(out, n_test=10, quiet=True, extra_overrides=QUICK)
    assert first.steps == 2 and len(first.examples) == 8 and 0.0 <= first.exact_match <= 1.0
    assert (out / DEMO_MARK).is_file() and (out / "model.safetensors").is_file()
    (out / "step-1.safetensors").write_bytes(b"left over")       # whatever the last demo left is replaced
    again = run_demo(out, n_test=10, quiet=True, extra_overrides=QUICK)
    assert again.steps == 2 and not (out / "step-1.safetensors").exists()


@pytest.mark.parametrize("content", ["config.toml", "notes.txt"])
def test_the_demo_never_replaces_a_directory_it_did_not_write(content, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / content).write_text("someone's work")
    assert main(["demo", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was not written by `qkv demo`" in err
    assert [p.name for p in out.iterdir()] == [content] and (out / content).read_text() == "someone's work"


def test_the_demo_never_clears_a_directory_through_a_link(tmp_path, capsys):
    target = tmp_path / "earlier-demo"
    target.mkdir()
    (target / ".qkv-demo").write_text("marked")
    (tmp_path / "link").symlink_to(target)
    assert main(["demo", "--out", str(tmp_path / "link")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "symbolic link" in err and (target / ".qkv-demo").exists()
