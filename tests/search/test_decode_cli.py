"""`qkv translate`, `qkv evaluate` and `qkv generate`, run as a user would (tiny untrained runs)."""

import io
import json

import pytest
from tests.serve_runs import tiny_run
from tests.search.test_decode import one_thread  # noqa: F401  (autouse: tiny models decode fastest on one thread)

from qkv.cli import main


@pytest.fixture(scope="module")
def mt(tmp_path_factory):
    return str(tiny_run(tmp_path_factory.mktemp("runs") / "mt"))


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return str(tiny_run(tmp_path_factory.mktemp("runs") / "lm", arch="decoder-only"))


def qkv(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_translate_text_file_and_stdin_agree(mt, tmp_path, capsys, monkeypatch):
    code, one, _ = qkv(capsys, "translate", "--model", mt, "--beam", "2", "hello world")
    assert code == 0 and one.count("\n") == 1
    src = tmp_path / "in.txt"
    src.write_text("hello world\n\nabc\n", encoding="utf-8")
    code, out, _ = qkv(capsys, "translate", "-m", mt, "--beam", "2", "--input", str(src))
    lines = out.split("\n")[:-1]
    assert code == 0 and len(lines) == 3 and lines[0] + "\n" == one and lines[1] == ""   # empty in, empty out
    monkeypatch.setattr("sys.stdin", io.StringIO("hello world\n\nabc\n"))
    assert qkv(capsys, "translate", "-m", mt, "--beam", "2")[1] == out
    dest = tmp_path / "out.txt"
    assert qkv(capsys, "translate", "-m", mt, "--beam", "2", "-i", str(src), "-o", str(dest))[:2] == (0, "")
    assert dest.read_text(encoding="utf-8") == out


def test_translate_n_best_and_seeded_sampling(mt, capsys):
    code, out, _ = qkv(capsys, "translate", "-m", mt, "--beam", "4", "--n-best", "3", "abc")
    rows = [line.split(" ||| ") for line in out.splitlines()]
    assert code == 0 and len(rows) == 3 and {r[0] for r in rows} == {"0"}
    scores = [float(r[2]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    args = ("translate", "-m", mt, "--sample", "--temperature", "2", "--seed", "5", "abc")
    assert qkv(capsys, *args)[1] == qkv(capsys, *args)[1]


def test_overlong_input_is_cut_with_a_warning(mt, capsys):
    code, out, err = qkv(capsys, "translate", "-m", mt, "--beam", "1", "a" * 100)
    assert code == 0 and out.count("\n") == 1
    assert err.startswith("warning: line 1 has 100 tokens") and err.count("\n") == 1


@pytest.mark.parametrize("args, message", [
    (("translate", "-m", "{lm}", "hello"), "is a language model"),
    (("generate", "-m", "{mt}", "--prompt", "hi"), "is a translation model"),
    (("translate", "-m", "{mt}", "--beam", "2", "--n-best", "3", "hi"), "n-best"),
    (("translate", "-m", "{mt}", "--sample", "--top-p", "0", "hi"), "top-p"),
    (("translate", "-m", "{mt}", "-i", "/nonexistent.txt"), "file not found"),
    (("translate", "-m", "/nonexistent-run", "hi"), "run directory not found"),
])
def test_mistakes_are_one_line_errors(mt, lm, capsys, args, message):
    code, out, err = qkv(capsys, *[a.format(mt=mt, lm=lm) for a in args])
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_generate_streams_a_seeded_continuation(lm, capsys):
    args = ("generate", "-m", lm, "--prompt", "the cat", "--max-new-tokens", "12", "--seed", "3", "--top-k", "10")
    code, out, _ = qkv(capsys, *args)
    assert code == 0 and out.startswith("the cat") and out.endswith("\n")
    assert 0 < len(out) - len("the cat\n") <= 12
    assert qkv(capsys, *args)[1] == out
    code, out, _ = qkv(capsys, "generate", "-m", lm, "--greedy", "--max-new-tokens", "5")
    assert code == 0


def test_evaluate_prints_bleu_and_chrf_with_signatures(mt, tmp_path, capsys):
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    src.write_text("abc\nhello\n", encoding="utf-8")
    ref.write_text("cba\nolleh\n", encoding="utf-8")
    code, out, _ = qkv(capsys, "evaluate", "-m", mt, "--src", str(src), "--ref", str(ref), "--beam", "2")
    assert code == 0 and out.startswith("BLEU = ") and "nrefs:1" in out and "chrF = " in out
    code, out, _ = qkv(capsys, "evaluate", "-m", mt, "--src", str(src), "--ref", str(ref), "--json")
    result = json.loads(out)
    assert code == 0 and result["sentences"] == 2 and {"bleu", "chrf", "bleu_signature"} <= result.keys()
    assert result["metric"] == "bleu" and "exact_match" not in result     # not a built-in task's run
    ref.write_text("cba\n", encoding="utf-8")
    code, _, err = qkv(capsys, "evaluate", "-m", mt, "--src", str(src), "--ref", str(ref))
    assert code == 2 and "2 source lines but 1 reference lines" in err
