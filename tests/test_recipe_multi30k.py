"""recipes/multi30k.py: the missing-data error and a tiny end-to-end run on a made-up corpus."""

import importlib.util
import json
import random
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORDS = {"ein": "a", "mann": "man", "hund": "dog", "läuft": "runs", "sitzt": "sits", "rot": "red",
         "blau": "blue", "kind": "child", "spielt": "plays", "hier": "here", "dort": "there"}
TINY = ["model.d_model=32", "model.n_heads=2", "model.n_encoder_layers=1", "model.n_decoder_layers=1",
        "model.d_ff=64", "train.batch_tokens=300", "train.precision=fp32", "train.threads=1",
        "train.checkpoint_every=2", "train.keep_checkpoints=2", "train.eval_every=3",
        "train.eval_examples=10", "train.log_every=1", "data.vocab_size=300", "data.min_freq=1"]


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("multi30k_recipe", ROOT / "recipes" / "multi30k.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_corpus(folder: Path) -> Path:
    """train (300 pairs), val and test_2016_flickr (12 each) of a word-for-word "German" -> English."""
    rng = random.Random(0)
    folder.mkdir()
    for split, n in (("train", 300), ("val", 12), ("test_2016_flickr", 12)):
        de = [" ".join(rng.choice(list(WORDS)) for _ in range(rng.randint(2, 6))) for _ in range(n)]
        (folder / f"{split}.de").write_text("".join(s.capitalize() + ".\n" for s in de), encoding="utf-8")
        en = [" ".join(WORDS[w] for w in s.split()) for s in de]
        (folder / f"{split}.en").write_text("".join(s.capitalize() + ".\n" for s in en), encoding="utf-8")
    return folder


def test_missing_data_is_one_line_naming_the_place(recipe, tmp_path, capsys):
    assert recipe.main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("error: Multi30k not found: expected") and str(tmp_path / "nowhere" / "train.de") in err
    assert not (tmp_path / "run").exists()


def test_impossible_process_counts_are_one_line(recipe, tmp_path, capsys):
    assert recipe.main(["--processes", "100000", "--out", str(tmp_path / "run")]) == 2
    assert "--processes must be between 1 and" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_tiny_end_to_end_run_writes_results(recipe, tmp_path, capsys):
    data = write_corpus(tmp_path / "m30k")
    out = tmp_path / "run"
    args = ["--data", str(data), "--out", str(out), "--average", "2", "--beam", "2", "--processes", "1"]
    assert recipe.main(args + ["--steps", "6"] + [x for s in TINY for x in ("--set", s)]) == 0
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert json.loads(capsys.readouterr().out) == results
    assert {"recipe", "direction", "test", "val_greedy", "weights", "decoding", "training", "machine",
            "examples", "parameters"} <= set(results)
    test = results["test"]
    assert test["set"] == "test_2016_flickr" and test["sentences"] == 12 and test["beam_size"] == 2
    assert test["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert 0 <= test["bleu"] <= 100 and 0 <= test["chrf"] <= 100
    assert test["bleu_lowercased_signature"].startswith("nrefs:1|case:lc|") and test["bleu_lowercased"] >= test["bleu"]
    assert set(results["val_greedy"]) == {"best", "averaged"}
    assert results["training"]["steps"] == 6 and results["training"]["wall_clock_s"] >= 0
    assert results["training"]["speed_probe"]["used"] is False               # --steps: a fixed run
    assert {"cpu", "cores", "torch", "load_average_before"} <= set(results["machine"])
    assert len(results["examples"]) == 5 and (out / "averaged.safetensors").exists()
    # --evaluate-only measures the same run again without training
    assert recipe.main(["--evaluate-only"] + args) == 0
    # a short run keeps fewer step checkpoints than --average asks for: average those it has
    assert recipe.main(["--evaluate-only"] + args[:-6] + ["--average", "50", "--beam", "2"]) == 0
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert set(results["val_greedy"]) == {"best", "averaged"}
    kept = len(list(out.glob("step-*.safetensors")))
    assert kept >= 2 and results["weights"] in ("best", f"average of the last {kept} step checkpoints")


def test_ranks_are_launched_with_a_share_of_the_global_batch(recipe, tmp_path):
    data = write_corpus(tmp_path / "m30k")
    argv = ["--data", str(data), "--set", "train.steps=3"]
    command = recipe.launch_command(2, recipe.parse_args(argv), argv)
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    assert command[5].endswith("multi30k.py") and command[6:-2] == argv
    assert command[-2:] == ["--set", "train.batch_tokens=2000"]           # the config's 4000 per side, halved
    argv += ["--set", "train.batch_tokens=3000"]                          # the user's global batch
    assert recipe.launch_command(3, recipe.parse_args(argv), argv)[-1] == "train.batch_tokens=1000"


def test_a_bad_config_is_one_line_before_any_rank_starts(recipe, tmp_path, capsys):
    data = write_corpus(tmp_path / "m30k")
    args = ["--data", str(data), "--config", str(tmp_path / "missing.toml"), "--processes", "2"]
    assert recipe.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: recipe config not found: {tmp_path / 'missing.toml'}"


def test_a_quick_run_probes_its_speed_and_fills_its_budget(recipe, tmp_path, capsys):
    """Without a fixed train.steps the recipe times its own steps first and trains what fits in 95%
    of the budget (here 1.2 s); results.json says what the probe measured and chose."""
    data = write_corpus(tmp_path / "m30k")
    out = tmp_path / "run"
    tiny = [s for s in TINY if not s.startswith("train.steps=")] + ["train.max_minutes=0.02"]
    args = ["--data", str(data), "--out", str(out), "--average", "0", "--beam", "1", "--processes", "1"]
    assert recipe.main(args + [x for s in tiny for x in ("--set", s)]) == 0
    training = json.loads((out / "results.json").read_text(encoding="utf-8"))["training"]
    probe = training["speed_probe"]
    assert probe["used"] is True and probe["budget_s"] == pytest.approx(1.2) and probe["fill"] == 0.95
    chosen = probe["refit"]["steps"] if "refit" in probe else probe["steps"]    # the second look may move it
    assert chosen == training["config"]["train"]["steps"] != 2700 and probe["config_steps"] == 2700
    assert "refit" not in probe or probe["refit"]["steps_before"] == probe["steps"]
    assert probe["steps_per_s"] > 0 and 0 < probe["probe_seconds"] < 20 and probe["cpu"]
    assert training["steps"] <= chosen                                      # the cap stays as a safety net


@pytest.mark.parametrize("flags, fill", [([], 0.95), (["--minutes", "30"], 0.95), (["--no-probe"], None),
                                         (["--steps", "50"], None), (["--set", "train.steps=50"], None)])
def test_the_probe_is_off_when_the_steps_are_fixed(recipe, tmp_path, monkeypatch, flags, fill):
    import qkv.training.loop

    seen = {}

    def fake_train(config, out, overrides=(), fill_budget=None, **kwargs):
        seen.update(overrides=overrides, fill=fill_budget)
        raise KeyboardInterrupt                               # stop before anything is trained

    monkeypatch.setattr(qkv.training.loop, "train", fake_train)
    args = recipe.parse_args(["--data", str(write_corpus(tmp_path / "m30k")), "--out", str(tmp_path / "run"), *flags])
    with pytest.raises(KeyboardInterrupt):
        recipe.run_recipe(args)
    assert seen["fill"] == fill
    assert ("train.steps=50" in seen["overrides"]) == ("50" in flags or "train.steps=50" in flags)


def test_no_budget_to_fill_is_one_line_before_any_rank_starts(recipe, tmp_path, capsys):
    data = write_corpus(tmp_path / "m30k")
    args = ["--data", str(data), "--out", str(tmp_path / "run"), "--processes", "2", "--set", "train.max_minutes=0"]
    assert recipe.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.max_minutes, which is 0" in err and "--no-probe" in err
    assert not (tmp_path / "run").exists()
