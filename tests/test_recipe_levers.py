"""recipes/levers.py: the command each lever runs, and the table it makes of the results."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("levers_recipe", ROOT / "recipes" / "levers.py")
levers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(levers)


def test_each_lever_is_the_recipe_with_one_change_and_a_fixed_step_count(tmp_path):
    args = levers.parse_args(["--runs", str(tmp_path)])
    base = levers.command(args, "base", 1337)
    assert base[base.index("--steps") + 1] == "4100" and "train.max_minutes=0" in base and "--resume" not in base
    muon = levers.command(args, "muon-equal-time", 2)
    assert muon[muon.index("--steps") + 1] == str(round(4100 / levers.RECIPES["shakespeare"].muon_step_cost))
    assert "train.optimizer=muon" in muon and "train.seed=2" in muon
    assert muon.index("train.optimizer=muon") > muon.index("train.optimizer=adamw")   # the lever's --set comes last
    assert "train.optimizer=adamw" in base                                           # the baseline is AdamW
    assert "model.qk_norm=true" in levers.command(args, "qk-norm", 1337)
    embedded = levers.command(args, "muon-wd0.02-value-embed", 1337)
    assert embedded.index("train.muon_weight_decay=0.02") > embedded.index("train.muon_weight_decay=0")   # the recipe's
    assert "model.value_embeddings=true" in embedded
    # every run reads the 64-character blocks the levers were measured with; the context variants win over it
    assert "data.block_size=64" in base and "data.block_size=128" not in base
    longer = levers.command(args, "muon-wd0.02-block128", 1337)
    assert longer.index("data.block_size=128") > longer.index("data.block_size=64")
    budget = levers.command(levers.parse_args(["--runs", str(tmp_path), "--budget"]), "wsd", 1337)
    assert "--steps" not in budget and "train.max_minutes=0" not in budget and "train.schedule=wsd" in budget
    assert "--processes" not in budget and "train.threads=1" not in budget      # the recipe as it runs
    with pytest.raises(SystemExit):
        levers.parse_args(["--budget", "--jobs", "2"])                          # quality per minute: alone


def test_the_table_compares_each_lever_with_the_baseline_mean(tmp_path):
    for name, loss, speed in (("base-s1", 1.55, 1400), ("base-s2", 1.56, 1400), ("muon-s1", 1.53, 1000)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({
            "valid_loss": loss, "steps": 4100, "seconds": 300, "median_step_tokens_per_s": speed, "parameters": 1}))
    args = levers.parse_args(["--runs", str(tmp_path), "--variants", "base,muon", "--seeds", "1,2"])
    summary = levers.collect(args, [("base", 1), ("base", 2), ("muon", 1), ("muon", 2)])["summary"]
    assert summary["base"]["mean"] == 1.555 and summary["muon"]["vs_base"] == -0.025
    assert summary["muon"]["step_time_vs_base"] == 1.4 and summary["muon"]["seeds"] == [1]
    assert "| muon |" in levers.table({"summary": summary})


def test_multi30k_levers_run_its_recipe_for_its_steps_and_judge_on_validation_bleu(tmp_path):
    args = levers.parse_args(["--recipe", "multi30k", "--runs", str(tmp_path), "--variants", "base,muon"])
    assert args.seeds == [1, 2] and args.output.name == "multi30k_levers.json"
    base = levers.command(args, "base", 1)
    assert base[1].endswith("multi30k.py") and base[base.index("--steps") + 1] == "2700"
    assert "train.max_minutes=0" in base and "--samples" not in base and "--resume" not in base
    equal = levers.command(args, "muon-equal-time", 1)
    assert equal[equal.index("--steps") + 1] == str(round(2700 / levers.RECIPES["multi30k"].muon_step_cost))
    for name, val, test, weights in (("base-s1", 38.0, 39.0, "best"), ("muon-s1", 38.6, 39.5, "average of the last 5 step checkpoints")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({
            "weights": weights, "test": {"bleu": test, "chrf": 58.0}, "parameters": 1,
            "val_greedy": {"best": {"bleu": val, "chrf": 57.0}, "averaged": {"bleu": val - 5, "chrf": 50.0}}
            if weights == "best" else {"best": {"bleu": val - 5, "chrf": 50.0}, "averaged": {"bleu": val, "chrf": 57.0}},
            "training": {"steps": 2700, "wall_clock_s": 3000, "median_tokens_per_s": 6000 if weights == "best" else 5000}}))
    results = levers.collect(args, [("base", 1), ("muon", 1)])
    summary = results["summary"]
    assert summary["muon"]["valid_bleu"] == [38.6] and summary["muon"]["vs_base"] == 0.6
    assert summary["muon"]["test_bleu"] == [39.5] and summary["muon"]["step_time_vs_base"] == 1.2
    assert results["lower_is_better"] is False and "| muon |" in levers.table(results)


def test_the_other_direction_is_the_multi30k_recipe_with_its_direction(tmp_path):
    args = levers.parse_args(["--recipe", "multi30k-en-de", "--runs", str(tmp_path), "--variants", "base,muon"])
    assert args.seeds == [1, 2] and args.output.name == "multi30k_en_de_levers.json"
    muon = levers.command(args, "muon", 1)
    assert muon[1].endswith("multi30k.py") and muon[muon.index("--direction") + 1] == "en-de"
    assert muon[muon.index("--steps") + 1] == "2700" and "train.optimizer=muon" in muon
    assert "multi30k_en_de.toml" in levers.RECIPES["multi30k-en-de"].experiment


def test_the_long_recipe_trains_its_avx2_hour_of_steps_with_its_own_config(tmp_path):
    args = levers.parse_args(["--recipe", "shakespeare-long", "--runs", str(tmp_path), "--base", "muon-wd0.02",
                              "--variants", "muon-wd0.02,muon-wd0.02-dropout0.2"])
    assert args.seeds == [1337, 1] and args.output.name == "shakespeare_long_levers.json"
    cmd = levers.command(args, "muon-wd0.02-dropout0.2", 1)
    assert cmd[1].endswith("shakespeare.py") and cmd[cmd.index("--config") + 1] == "long"
    assert cmd[cmd.index("--steps") + 1] == "4909" and "train.eval_every=2454" in cmd
    sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
    # the recipe's own Muon and weight decay win over the levers' AdamW starting point; one change
    assert sets.index("train.optimizer=muon") > sets.index("train.optimizer=adamw")
    assert sets[-3:] == ["train.optimizer=muon", "train.muon_weight_decay=0.02", "model.dropout=0.2"]
    recipe = [cmd[i + 1] for i, a in enumerate(levers.command(args, "muon-wd0.02", 1)) if a == "--set"]
    assert recipe == sets[:-1]
    assert not any(s.startswith("data.block_size") for s in sets)          # the long recipe's own 128


def test_levers_on_top_of_muon_compare_with_the_muon_recipe_given_as_base(tmp_path):
    for name, loss in (("muon-s1", 1.53), ("muon-wsd-s1", 1.52), ("muon-lr0.03-s1", 1.535)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({
            "valid_loss": loss, "steps": 3417, "seconds": 300, "median_step_tokens_per_s": 1000, "parameters": 1}))
    args = levers.parse_args(["--runs", str(tmp_path), "--base", "muon", "--seeds", "1",
                              "--variants", "muon,muon-wsd,muon-lr0.03"])
    wsd = levers.command(args, "muon-wsd", 1)
    assert "train.optimizer=muon" in wsd and "train.schedule=wsd" in wsd
    assert "train.muon_lr=0.03" in levers.command(args, "muon-lr0.03", 1)
    decayed = levers.command(args, "muon-wd0.05", 1)    # the levers' Muon has no weight decay but where one adds it
    assert decayed.index("train.muon_weight_decay=0.05") > decayed.index("train.muon_weight_decay=0")
    assert "train.muon_weight_decay=0" in wsd
    results = levers.collect(args, [("muon", 1), ("muon-wsd", 1), ("muon-lr0.03", 1)])
    assert results["base"] == "muon" and results["summary"]["muon-wsd"]["vs_base"] == -0.01
    assert results["summary"]["muon-lr0.03"]["vs_base"] == 0.005 and results["summary"]["muon"]["vs_base"] == 0.0
    rows = {line.split(" | ")[0]: line for line in levers.table(results).splitlines()}
    assert "-0.0100" in rows["| muon-wsd"] and "+0.0000" not in rows["| muon"]   # the base has no difference


def test_runs_whose_names_hold_a_dot_keep_logs_of_their_own(tmp_path, monkeypatch):
    def fake_call(cmd, stdout, stderr):
        stdout.write(cmd[cmd.index("--out") + 1].encode())
        return 0
    monkeypatch.setattr(levers.subprocess, "call", fake_call)
    args = levers.parse_args(["--runs", str(tmp_path), "--seeds", "1"])
    for variant in ("muon-lr0.01", "muon-lr0.04"):
        levers.train(args, variant, 1)
    for variant in ("muon-lr0.01", "muon-lr0.04"):        # not both in "muon-lr0.log"
        assert (tmp_path / f"{variant}-s1.log").read_text() == str(tmp_path / f"{variant}-s1")
