"""Language models end to end: training on text, the train/validation split, cached generation,
and the Tiny Shakespeare recipe script."""

from __future__ import annotations

import importlib.util
import json
import math
import random
from pathlib import Path

import pytest
import torch

from qkv import ConfigError, ModelConfig, build_model
from qkv.data.batching import LMBlocks, split_by_position
from qkv.search import Sampler, generate
from qkv.training import train
from qkv.run import load_run
from qkv.training.inputs import prepare
from qkv.run import DataConfig

ROOT = Path(__file__).resolve().parents[2]
WORDS = ("the", "king", "queen", "sword", "crown", "speaks", "falls", "rises")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """12,000 characters of sentences drawn from eight words: within a word every letter is certain."""
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) + "." for _ in range(500)]
    path = tmp_path_factory.mktemp("text") / "input.txt"
    path.write_text("\n".join(lines)[:12_000] + "\n", encoding="utf-8")
    return path


def tiny_config(text: Path, steps: int = 80) -> dict:
    return {
        "model": dict(d_model=48, n_heads=4, n_decoder_layers=2, d_ff=128, dropout=0.0, norm_first=True,
                      positional="learned", activation="gelu", bias=False),
        "train": dict(steps=steps, batch_tokens=1024, schedule="cosine", lr=3e-3, warmup_steps=10,
                      label_smoothing=0.0, eval_every=0, checkpoint_every=0, eval_examples=100000, threads=1),
        "data": dict(kind="lm", train_text=str(text), tokenizer="char", block_size=32),
    }


def test_char_lm_learns_the_corpus_and_resumes(corpus, tmp_path):
    # A uniform guess over the 26 ids costs ln(26) = 3.3 nats per character; only the choice of the
    # next word is uncertain (about 0.4 nats per character). 80 steps measured 0.79.
    out = tmp_path / "lm"
    result = train(tiny_config(corpus, steps=80), out, quiet=True)
    assert result.metric == "loss" and result.valid["loss"] < 1.0
    assert result.valid["bpc"] == pytest.approx(result.valid["loss"] / math.log(2))
    assert {"config.toml", "tokenizer.json", "model.safetensors", "train_state.pt", "metrics.jsonl",
            "training.png"} <= {p.name for p in out.iterdir()}
    more = train(None, out, overrides=["train.steps=90"], quiet=True, resume=True)
    assert more.steps == 90 and more.valid["loss"] < 1.0


def test_blocks_never_cross_the_train_valid_boundary():
    ids = torch.arange(1000)                       # every token names its own position
    train_ids, valid_ids = split_by_position(ids, 0.1)
    assert len(train_ids) == 900 and int(valid_ids[0]) == 900
    train_blocks, valid_blocks = LMBlocks(train_ids, 64, seed=3), LMBlocks(valid_ids, 64)
    for step in range(50):
        x, y = train_blocks.batch(step, 16)
        assert int(y.max()) < 900 and torch.equal(y[:, :-1], x[:, 1:])   # y is x shifted by one
    seen = torch.cat([torch.cat([x, y[:, -1:]], dim=1).flatten() for x, y in valid_blocks.eval_batches(4)])
    assert int(seen.min()) >= 900


def test_prepared_text_splits_at_90_percent_of_the_characters(corpus):
    inputs = prepare(DataConfig(kind="lm", train_text=str(corpus), tokenizer="char", block_size=32), 1024, 0, 32)
    text = corpus.read_text(encoding="utf-8")
    n_train = int(len(text) * 0.9)
    tok = inputs.tgt_tokenizer
    assert tok.decode(inputs.train.ids.tolist()) == text[:n_train]
    assert tok.decode(inputs.valid.ids.tolist()) == text[n_train:]


def test_generation_with_and_without_the_cache_is_the_same_text():
    torch.manual_seed(0)
    cfg = ModelConfig(arch="decoder-only", tgt_vocab_size=30, d_model=32, n_heads=4, n_decoder_layers=2, d_ff=64,
                      dropout=0.0, max_len=16, norm_first=True, positional="learned", tie_embeddings=False)
    model = build_model(cfg).eval()
    runs = [generate(model, [5, 6, 7], 40, sampler=Sampler(True, temperature=0.8, top_k=10, seed=7),
                     use_cache=cache, min_new_tokens=40, window=12) for cache in (True, False)]
    assert runs[0] == runs[1] and len(runs[0]) == 40       # past max_len=16: the context slides
    again = generate(model, [5, 6, 7], 40, sampler=Sampler(True, temperature=0.8, top_k=10, seed=7),
                     min_new_tokens=40, window=12)
    assert again == runs[0]                                # the seed fixes the text


def load_recipe():
    spec = importlib.util.spec_from_file_location("shakespeare_recipe", ROOT / "recipes" / "shakespeare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipe_names_the_missing_data_file(tmp_path, capsys):
    assert load_recipe().main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Tiny Shakespeare not found" in err
    assert str((tmp_path / "nowhere" / "input.txt").resolve()) in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["shakespeare_char.toml", "shakespeare_char_long.toml", "llama_char.toml"])
def test_recipe_configs_are_valid(name):
    from qkv.config import load_toml
    from qkv.run import parse_config

    config = parse_config(load_toml(ROOT / "recipes" / name))
    assert config["data"]["kind"] == "lm" and config["data"]["tokenizer"] == "char"
    assert config["data"]["valid_fraction"] == 0.1 and config["train"]["label_smoothing"] == 0.0


def test_llama_recipe_is_a_llama_sized_like_the_5_minute_recipe():
    from qkv.run import RunConfig
    from qkv.run.targets import check_llama, export_targets

    path = load_recipe().config_file("llama")                  # python recipes/shakespeare.py --config llama
    assert path == ROOT / "recipes" / "llama_char.toml"
    config, short = RunConfig.parse(path), RunConfig.parse(ROOT / "recipes" / "shakespeare_char.toml")
    assert config.data == short.data and config.train == short.train
    model = {**config.model, "arch": "decoder-only", "src_vocab_size": 0, "tgt_vocab_size": 65}
    cfg = ModelConfig.from_dict(model)
    check_llama(cfg)
    assert export_targets(cfg)["hf"] is None and cfg.kv_heads == 2 < cfg.n_heads
    assert cfg.d_model == short.model["d_model"] and cfg.n_decoder_layers == short.model["n_decoder_layers"]
    assert 0.9 < build_model(cfg).num_parameters() / build_model(ModelConfig.from_dict(
        {**short.model, "arch": "decoder-only", "src_vocab_size": 0, "tgt_vocab_size": 65})).num_parameters() <= 1.0


def test_recipe_runs_and_writes_results(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    tiny = [f"model.{k}={v}" for k, v in dict(d_model=32, n_heads=2, n_decoder_layers=1, d_ff=64).items()]
    args = ["--data", str(corpus), "--out", str(out), "--samples", "2", "--sample-tokens", "40",
            "--set", "train.steps=6", "--set", "train.warmup_steps=2", "--set", "train.threads=1", *sum((["--set", s] for s in tiny), [])]
    assert load_recipe().main(["--processes", "1", *args]) == 0
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["steps"] == 6 and results["valid_loss"] > 0 and results["valid_bpc"] > 0
    assert results["speed_probe"]["used"] is False                     # train.steps given: a fixed run
    assert results["machine"]["torch"] == torch.__version__ and results["machine"]["cores"] >= 1
    assert results["machine"]["torch_threads"] == 1 and results["machine"]["processes"] == 1   # the training's
    assert [s["prompt"] for s in results["samples"]] == ["ROMEO:", "KING HENRY:\nMy lord,"]
    assert all(len(s["text"]) > len(s["prompt"]) for s in results["samples"])
    assert json.loads(capsys.readouterr().out)["valid_loss"] == results["valid_loss"]
    assert load_run(out).cfg.arch == "decoder-only"


def test_recipe_launches_ranks_with_a_share_of_the_batch(tmp_path):
    recipe = load_recipe()
    argv = ["--set", "train.steps=3"]
    command = recipe.launch_command(2, recipe.parse_args(argv), argv)
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    assert command[5].endswith("shakespeare.py")
    assert command[6:] == ["--set", "train.steps=3", "--set", "train.batch_tokens=512"]   # the config's 1024 / 2
    argv = ["--set", "train.batch_tokens=1000"]                                          # the user's global batch
    assert recipe.launch_command(4, recipe.parse_args(argv), argv)[-1] == "train.batch_tokens=250"
    args = recipe.parse_args([])
    with pytest.raises(ConfigError, match="--processes must be at least 1"):
        recipe.launch_command(0, args, [])


def test_recipe_in_two_processes(corpus, tmp_path, capsys):
    # the default on a 2-core CPU: torchrun, 2 DDP ranks over gloo, rank 0 writes the results; the
    # speed probe times the two ranks' steps and fits the steps to the budget (here 1.2 s)
    out = tmp_path / "run"
    tiny = [f"model.{k}={v}" for k, v in dict(d_model=32, n_heads=2, n_decoder_layers=1, d_ff=64).items()]
    args = ["--processes", "2", "--data", str(corpus), "--out", str(out), "--samples", "1", "--sample-tokens", "20",
            "--set", "train.max_minutes=0.02", "--set", "train.warmup_steps=1", "--set", "train.batch_tokens=512",
            *sum((["--set", s] for s in tiny), [])]
    assert load_recipe().main(args) == 0
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    probe = results["speed_probe"]
    assert results["processes"] == 2 == probe["processes"] and probe["used"] and probe["budget_s"] == pytest.approx(1.2)
    chosen = probe["refit"]["steps"] if "refit" in probe else probe["steps"]     # after the run's second look
    assert 1 <= results["steps"] <= chosen and probe["steps"] != 2950 and probe["steps_per_s"] > 0 and probe["cpu"]
    assert results["train_tokens"] == results["steps"] * 512     # batch_tokens stays the global batch: 256 per rank


@pytest.mark.parametrize("args, says", [
    (["--processes", "100000"], "--processes must be between 1 and"),
    (["--processes", "0"], "--processes must be between 1 and"),
])
def test_recipe_refuses_impossible_process_counts(args, says, tmp_path, capsys):
    assert load_recipe().main([*args, "--out", str(tmp_path / "run")]) == 2
    assert says in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_recipe_bounds_its_samples(capsys):
    with pytest.raises(SystemExit):
        load_recipe().parse_args(["--sample-tokens", str(10**11)])
    assert "must be between 1 and 100000" in capsys.readouterr().err
