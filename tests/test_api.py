"""The Python face of training: qkv.train(reuse=True), what a notebook run again and again relies on, and run.metrics()."""

import json

import pytest

import qkv
from qkv.run import RunDir

TINY = dict(steps=20, d_model=32, d_ff=64, n_heads=2, train_size=400, valid_size=20, eval_every=20,
            checkpoint_every=10, eval_examples=20, threads=1, quiet=True)


def test_reuse_loads_a_finished_run_continues_an_interrupted_one_and_refuses_other_settings(tmp_path):
    out = tmp_path / "r"
    first = qkv.train("reverse", out=out, reuse=True, **TINY)
    metrics = RunDir(out).metrics
    lines = metrics.read_text().splitlines()
    assert json.loads(lines[-1]) == {"kind": "end", "step": 20, "stopped": "finished"}
    weights = RunDir(out).weights().read_bytes()

    again = qkv.train("reverse", out=out, reuse=True, **TINY)          # loaded, not trained again
    assert metrics.read_text().splitlines() == lines
    assert RunDir(out).weights().read_bytes() == weights
    assert again.translate("abc", beam=1) == first.translate("abc", beam=1)

    with pytest.raises(qkv.QkvError, match=r"model.d_model = 32 there, 48 here"):
        qkv.train("reverse", out=out, reuse=True, **{**TINY, "d_model": 48})

    # as if killed before the "end" record was written: the run is continued (from train_state.pt), not reloaded
    kept = [line for line in lines if json.loads(line).get("step", 0) <= 10 and json.loads(line)["kind"] != "end"]
    metrics.write_text("\n".join(kept) + "\n")
    resumed = qkv.train("reverse", out=out, reuse=True, **{**TINY, "steps": 20})
    assert json.loads(metrics.read_text().splitlines()[-1])["kind"] == "end"
    assert resumed.dir.path == out


def test_reuse_trains_anew_a_run_stopped_before_its_first_checkpoint(tmp_path):
    out = tmp_path / "r"
    qkv.train("reverse", out=out, **TINY)
    for path in out.iterdir():                # as if killed early: only the config was written
        if path != RunDir(out).config:
            path.unlink()
    run = qkv.train("reverse", out=out, reuse=True, **TINY)
    assert json.loads(RunDir(out).metrics.read_text().splitlines()[-1])["kind"] == "end"
    assert run.dir.weights().is_file()


def test_metrics_reads_what_training_logged(trained_runs):
    run = qkv.load("runs/reverse")
    records = run.metrics()
    assert records and records[-1]["kind"] == "end"
    train = run.metrics("train")
    assert train == [r for r in records if r["kind"] == "train"]
    assert all({"step", "loss", "lr"} <= set(r) for r in train)
    assert [r["step"] for r in train] == sorted(r["step"] for r in train)
    assert all(r["kind"] == "valid" for r in run.metrics("valid"))
    assert run.metrics("nothing") == []


def test_use_cache_false_gives_the_same_output(tmp_path):
    """The face's no-cache switch (what notebook 09 times the cache against) changes nothing but speed."""
    run = qkv.train("reverse", out=tmp_path / "r", **{**TINY, "steps": 10, "eval_every": 10})
    words = ["abc", "hello", "qkv"]
    for kwargs in (dict(beam=1), dict(beam=3), dict(sample=True, seed=0)):
        assert run.translate(words, use_cache=False, **kwargs) == run.translate(words, **kwargs)
    (tmp_path / "lm.txt").write_text("to be or not to be, that is the question. " * 30, encoding="utf-8")
    lm = qkv.train({"model": {"arch": "decoder-only", "d_model": 32, "n_heads": 2, "n_decoder_layers": 1, "d_ff": 64,
                              "max_len": 24},
                    "train": {"steps": 5, "eval_every": 5, "checkpoint_every": 5, "eval_examples": 8, "threads": 1},
                    "data": {"kind": "lm", "train_text": str(tmp_path / "lm.txt"), "tokenizer": "char", "block_size": 24}},
                   out=tmp_path / "lm", quiet=True)
    for kwargs in (dict(greedy=True), dict(seed=0)):          # 50 tokens: past max_len, so the window slides too
        assert lm.generate("to be", 50, use_cache=False, **kwargs) == lm.generate("to be", 50, **kwargs)
