"""Prepared corpora: memory-mapped token files written once, read in place by training."""

import json
import random
import shutil

import numpy as np
import pytest

from qkv.cli import main
from qkv.data import shards
from qkv.data.shards import PairShards, open_prepared, prepare_corpus, reservoir_sample
from qkv.errors import CheckpointError, DataError
from qkv.training import train
from qkv.training.inputs import MicroBatches, prepare
from qkv.training.metrics import read_metrics
from qkv.run import DataConfig

WORDS = "ein der die das hund katze mann frau kind läuft springt sitzt auf dem im park wasser rot blau".split()
TINY_MODEL = {"d_model": 16, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1, "d_ff": 32, "dropout": 0.0}
TINY_TRAIN = {"batch_tokens": 96, "precision": "fp32", "threads": 1, "log_every": 1, "eval_every": 0,
              "eval_examples": 8, "schedule": "constant", "lr": 3e-3}


def write_pairs(directory, n_train=300, n_valid=12, seed=0):
    """A parallel corpus of random word sequences (target: the source reversed, as words)."""
    rng = random.Random(seed)
    for split, n in (("train", n_train), ("val", n_valid)):
        src = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 9))) for _ in range(n)]
        (directory / f"{split}.de").write_text("".join(s + "\n" for s in src), encoding="utf-8")
        (directory / f"{split}.en").write_text("".join(" ".join(reversed(s.split())) + "\n" for s in src),
                                               encoding="utf-8")
    return directory


def translation_data(directory, **extra):
    return {"kind": "translation", "dir": str(directory), "src_lang": "de", "tgt_lang": "en",
            "tokenizer": "word", "min_freq": 1, **extra}


def losses(run_dir):
    return [r["loss"] for r in read_metrics(run_dir) if r["kind"] == "train"]


@pytest.fixture
def corpus(tmp_path):
    (tmp_path / "corpus").mkdir()
    return write_pairs(tmp_path / "corpus")


@pytest.fixture
def prepared(corpus, tmp_path):
    prepare_corpus(DataConfig(**translation_data(corpus)), tmp_path / "prepared")
    return tmp_path / "prepared"


def test_reservoir_sample_is_bounded_even_and_ordered():
    assert reservoir_sample(range(5), 10) == [0, 1, 2, 3, 4]          # everything, in order
    picked = reservoir_sample(range(1000), 50, seed=1)
    assert len(picked) == 50 and picked == sorted(picked) and picked == reservoir_sample(range(1000), 50, seed=1)
    hits = np.zeros(10)
    for seed in range(400):
        for item in reservoir_sample(range(10), 3, seed):
            hits[item] += 1
    assert hits.min() > 80 and hits.max() < 160                       # each about 120 times


def test_prepared_files_hold_the_encoded_sentences(prepared, corpus):
    p = open_prepared(prepared)
    meta = json.loads((prepared / "meta.json").read_text())
    assert meta["kind"] == "translation" and meta["counts"] == {"train": 300, "valid": 12} and meta["dtype"] == "uint16"
    train = PairShards(p, "train", max_tokens=100, batch_tokens=64)
    src_lines = (corpus / "train.de").read_text(encoding="utf-8").splitlines()
    tgt_lines = (corpus / "train.en").read_text(encoding="utf-8").splitlines()
    for i in (0, 7, 299):
        assert train.src.rows([i])[0].tolist() == p.src_tokenizer.encode(src_lines[i])
        assert train.tgt.rows([i])[0].tolist() == p.tgt_tokenizer.encode(tgt_lines[i])


def test_prepare_refuses_bad_input_with_one_line_errors(corpus, tmp_path, capsys):
    with pytest.raises(DataError, match="not empty"):
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "x").write_text("x")
        prepare_corpus(DataConfig(**translation_data(corpus)), tmp_path / "full")
    with pytest.raises(DataError, match="not a prepared corpus"):
        open_prepared(corpus)
    (tmp_path / "c.toml").write_text(f'[data]\nkind = "translation"\ndir = "{tmp_path / "nowhere"}"\n'
                                     f'src_lang = "de"\ntgt_lang = "en"\n')
    assert main(["prepare", "-c", str(tmp_path / "c.toml"), "-o", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data directory not found") and err.count("\n") == 1
    assert not (tmp_path / "p").exists() and not list(tmp_path.glob(".p.*"))   # nothing half-written is left


def test_cli_prepare_then_train(corpus, tmp_path, capsys):
    (tmp_path / "c.toml").write_text(
        "[data]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in translation_data(corpus).items()))
    assert main(["prepare", "-c", str(tmp_path / "c.toml"), "-o", str(tmp_path / "p"), "--sample", "100"]) == 0
    assert "train 300 pairs, valid 12 pairs; tokenizer from 100 sampled pairs" in capsys.readouterr().out
    sets = [f"model.{k}={v}" for k, v in TINY_MODEL.items()] + [f"train.{k}={v}" for k, v in TINY_TRAIN.items()]
    args = sum((["--set", s] for s in [*sets, "train.steps=2", f"data.prepared={tmp_path / 'p'}"]), [])
    assert main(["train", "-c", str(tmp_path / "c.toml"), "-o", str(tmp_path / "run"), "--quiet", *args]) == 0
    assert len(losses(tmp_path / "run")) == 2


def test_training_from_prepared_files_equals_the_in_memory_path(corpus, prepared, tmp_path, device):
    """One window (a small corpus): the same tokenizer, the same batches, the same losses."""
    base = {"model": TINY_MODEL, "train": dict(TINY_TRAIN, steps=4, eval_every=4, device=device.type)}
    memory = train(dict(base, data=translation_data(corpus)), tmp_path / "memory", quiet=True)
    mapped = train(dict(base, data=translation_data(corpus, prepared=str(prepared))), tmp_path / "mapped", quiet=True)
    assert losses(tmp_path / "memory") == pytest.approx(losses(tmp_path / "mapped"), rel=0 if device.type == "cpu" else 1e-5)
    assert memory.valid["loss"] == pytest.approx(mapped.valid["loss"], rel=1e-6)
    assert memory.valid["bleu"] == pytest.approx(mapped.valid["bleu"])


def test_windows_cover_every_pair_once_per_epoch_within_the_budget(prepared):
    data = PairShards(open_prepared(prepared), "train", max_tokens=6, batch_tokens=40, seed=3, window=64)
    assert data.windows == 5 and 0 < data.kept < len(data)
    for epoch in (0, 1):
        seen = []
        for k in range(data.windows):
            for batch in data.window_batches(epoch, k):
                b = data.collate(batch)
                assert b.src.numel() <= 40 and b.tgt_out.numel() <= 40
                assert len(set(batch.tolist()) & set(range(64 * k, 64 * k + 64))) in (0, len(batch))  # one window
                seen.extend(batch.tolist())
        assert len(seen) == len(set(seen)) == data.kept
    first = [b.tolist() for b in data.window_batches(0, 0)]
    assert first == [b.tolist() for b in data.window_batches(0, 0)] != [b.tolist() for b in data.window_batches(1, 0)]


def test_resume_keeps_the_exact_position_across_windows(prepared, corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "WINDOW", 40)                          # 8 windows of 40 pairs
    config = {"model": TINY_MODEL, "train": dict(TINY_TRAIN, steps=8, checkpoint_every=3),
              "data": translation_data(corpus, prepared=str(prepared))}
    train(config, tmp_path / "straight", quiet=True)
    train(dict(config, train=dict(config["train"], steps=3)), tmp_path / "resumed", quiet=True)
    train(None, tmp_path / "resumed", ["train.steps=8"], quiet=True, resume=True)
    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")


def test_language_model_from_prepared_text_equals_the_in_memory_path(tmp_path):
    rng = random.Random(0)
    for name, n in (("train.txt", 300), ("valid.txt", 40)):
        (tmp_path / name).write_text("".join(" ".join(rng.choice(WORDS) for _ in range(6)) + "\n" for _ in range(n)))
    data = {"kind": "lm", "train_text": str(tmp_path / "train.txt"), "valid_text": str(tmp_path / "valid.txt"),
            "tokenizer": "char", "block_size": 16}
    report = prepare_corpus(DataConfig(**data), tmp_path / "p")
    assert report.counts["train"] == len((tmp_path / "train.txt").read_text())
    base = {"model": TINY_MODEL, "train": dict(TINY_TRAIN, steps=3, eval_every=3)}
    a = train(dict(base, data=data), tmp_path / "memory", quiet=True)
    b = train(dict(base, data=dict(data, prepared=str(tmp_path / "p"))), tmp_path / "mapped", quiet=True)
    assert losses(tmp_path / "memory") == losses(tmp_path / "mapped") and a.valid["loss"] == b.valid["loss"]


def test_language_model_valid_split_is_the_tail_of_the_file(tmp_path):
    (tmp_path / "t.txt").write_text("".join(f"line {i:03d}\n" for i in range(100)))
    prepare_corpus(DataConfig(kind="lm", train_text=str(tmp_path / "t.txt"), tokenizer="char", valid_fraction=0.2),
                   tmp_path / "p")
    p = open_prepared(tmp_path / "p")
    train_ids = np.fromfile(tmp_path / "p" / "train.bin", dtype=np.uint16)
    valid_ids = np.fromfile(tmp_path / "p" / "valid.bin", dtype=np.uint16)
    assert p.tgt_tokenizer.decode(train_ids.tolist()).endswith("line 079\n")
    assert p.tgt_tokenizer.decode(valid_ids.tolist()).startswith("line 080\n")


def test_ranks_take_disjoint_batches_of_one_stream(prepared, monkeypatch):
    monkeypatch.setattr(shards, "WINDOW", 50)
    inputs = prepare(DataConfig(**translation_data("", prepared=str(prepared))), 64, 0, 64)
    one = MicroBatches(inputs, 0, 1, 1)
    ranks = [MicroBatches(inputs, r, 2, 1) for r in range(2)]
    single = [one.next().indices.tolist() for _ in range(12)]
    pairs = [[rank.next().indices.tolist() for rank in ranks] for _ in range(6)]
    assert [b for pair in pairs for b in pair] == single                  # rank r takes items r, r+2, ...
    assert ranks[0].state() == ranks[1].state() == one.state()
    assert ranks[0].state()["window"] > 0 and ranks[0].state()["epoch"] == 0


def _shuffled_copy(corpus, out):
    """The same sentences in another order: the same vocabulary, sizes and counts, other content."""
    out.mkdir()
    for split in ("train", "val"):
        pairs = list(zip((corpus / f"{split}.de").read_text(encoding="utf-8").splitlines(),
                         (corpus / f"{split}.en").read_text(encoding="utf-8").splitlines()))
        random.Random(5).shuffle(pairs)
        (out / f"{split}.de").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
        (out / f"{split}.en").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    return out


def test_resume_refuses_a_corpus_prepared_again_from_other_text(prepared, corpus, tmp_path, monkeypatch):
    config = {"model": TINY_MODEL, "train": dict(TINY_TRAIN, steps=2, checkpoint_every=2),
              "data": translation_data(corpus, prepared=str(prepared))}
    train(config, tmp_path / "run", quiet=True)
    before = json.loads((prepared / "meta.json").read_text())
    shutil.rmtree(prepared)
    prepare_corpus(DataConfig(**translation_data(_shuffled_copy(corpus, tmp_path / "other"))), prepared)
    after = json.loads((prepared / "meta.json").read_text())
    assert after["tokenizer_sha256"] == before["tokenizer_sha256"] and after["counts"] == before["counts"]
    assert after["fingerprint"] != before["fingerprint"]
    with pytest.raises(CheckpointError, match="QKV_NO_VERIFY=1"):
        train(None, tmp_path / "run", ["train.steps=3"], quiet=True, resume=True)
    monkeypatch.setenv("QKV_NO_VERIFY", "1")                           # on purpose: continue on this one
    assert train(None, tmp_path / "run", ["train.steps=3"], quiet=True, resume=True).steps == 3


def test_a_prepared_directory_with_another_corpus_tokenizer_is_refused(prepared, tmp_path):
    (tmp_path / "other_corpus").mkdir()
    write_pairs(tmp_path / "other_corpus", seed=1)
    prepare_corpus(DataConfig(**dict(translation_data(tmp_path / "other_corpus"), tokenizer="char")), tmp_path / "other")
    for tokenizer in tmp_path.joinpath("other").glob("*tokenizer.json"):
        shutil.copy(tokenizer, prepared / tokenizer.name)
    with pytest.raises(DataError, match="not the one its corpus was encoded with"):
        open_prepared(prepared)
    (prepared / "train.src.bin").write_bytes((prepared / "train.src.bin").read_bytes()[:-2])
    with pytest.raises(DataError, match="meta.json says"):
        open_prepared(prepared)


def test_prepare_to_a_file_or_a_full_disk_is_one_line_and_leaves_nothing(corpus, tmp_path, monkeypatch):
    from qkv.errors import OutputError

    (tmp_path / "file").write_text("mine")
    with pytest.raises(OutputError, match="is a file"):
        prepare_corpus(DataConfig(**translation_data(corpus)), tmp_path / "file")
    assert (tmp_path / "file").read_text() == "mine"

    def full(self, arrays):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shards._TokenWriter, "add", full)
    with pytest.raises(OutputError, match="No space left on device; free some space"):
        prepare_corpus(DataConfig(**translation_data(corpus)), tmp_path / "p")
    assert not (tmp_path / "p").exists() and not list(tmp_path.glob(".p.*"))


def test_prepare_out_that_is_a_file_is_one_line(corpus, tmp_path, capsys):
    from qkv.errors import OutputError

    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="is a file; --out names a directory"):
        prepare_corpus(DataConfig(**translation_data(corpus)), tmp_path / "afile")
    with pytest.raises(OutputError, match="is a file"):
        prepare_corpus(DataConfig(**translation_data(corpus)), tmp_path / "afile" / "sub")


def test_a_second_prepare_into_one_output_is_refused_and_a_killed_ones_leftovers_are_removed(corpus, tmp_path):
    data = DataConfig(**translation_data(corpus))
    out = tmp_path / "p"
    with shards._prepare_lock(out):            # what a prepare running in another process holds
        with pytest.raises(DataError, match=r"another qkv prepare \(pid \d+\) is writing"):
            prepare_corpus(data, out)
    stale = tmp_path / ".p.prepare-k1ll3d.tmp"     # the temporary directory of a prepare killed by -9
    stale.mkdir()
    (stale / "train.src.bin").write_bytes(b"\0" * 8)
    prepare_corpus(data, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "p"]
