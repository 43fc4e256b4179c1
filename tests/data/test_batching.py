"""Batching: teacher-forcing shift, token budgets, determinism, resume, eval order, LM blocks."""

from pathlib import Path

import numpy as np
import pytest
import torch

from qkv.data.batching import Batch, LMBlocks, Seq2SeqBatches, plan_batches, restore_order, split_by_position
from qkv.data.corpus import load_split
from qkv.errors import DataError
from qkv.tokenizers import BOS_ID, EOS_ID, PAD_ID, CharTokenizer

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def random_pairs(n: int, seed: int = 0, max_len: int = 30) -> tuple[list[list[int]], list[list[int]]]:
    rng = np.random.default_rng(seed)
    src_lengths = rng.integers(1, max_len, size=n)
    tgt_lengths = np.maximum(src_lengths + rng.integers(-3, 4, size=n), 0)  # related, as in translation
    src = [rng.integers(4, 50, size=k).tolist() for k in src_lengths]
    tgt = [rng.integers(4, 50, size=k).tolist() for k in tgt_lengths]
    return src, tgt


def unpad(row: torch.Tensor) -> list[int]:
    return [int(t) for t in row if t != PAD_ID]


def test_collate_builds_shifted_teacher_forcing_pair():
    src = [[5, 6, 7], [8]]
    tgt = [[9, 10], [11, 12, 13, 14]]
    batch = Seq2SeqBatches(src, tgt).collate(np.array([0, 1]))
    assert batch.src.tolist() == [[5, 6, 7], [8, PAD_ID, PAD_ID]]
    assert batch.tgt_in.tolist() == [[BOS_ID, 9, 10, PAD_ID, PAD_ID], [BOS_ID, 11, 12, 13, 14]]
    assert batch.tgt_out.tolist() == [[9, 10, EOS_ID, PAD_ID, PAD_ID], [11, 12, 13, 14, EOS_ID]]
    assert batch.src.dtype == batch.tgt_in.dtype == batch.tgt_out.dtype == torch.long
    assert batch.n_src_tokens == 4 and batch.n_tgt_tokens == 8
    assert batch.indices.tolist() == [0, 1]


def test_shift_holds_for_every_row_of_every_batch():
    src, tgt = random_pairs(300)
    data = Seq2SeqBatches(src, tgt, max_tokens=256)
    for batch in data.epoch(0):
        for r, i in enumerate(batch.indices.tolist()):
            y = tgt[i]
            real = len(y) + 1
            assert batch.tgt_in[r, 0] == BOS_ID
            assert batch.tgt_in[r, 1:real].tolist() == batch.tgt_out[r, : real - 1].tolist() == y
            assert batch.tgt_out[r, real - 1] == EOS_ID
            assert (batch.tgt_out[r, real:] == PAD_ID).all() and (batch.tgt_in[r, real:] == PAD_ID).all()
            assert unpad(batch.src[r]) == src[i]
        assert batch.n_tgt_tokens == int((batch.tgt_out != PAD_ID).sum())
        assert batch.n_src_tokens == int((batch.src != PAD_ID).sum())


def test_batches_respect_budget_and_cover_each_example_once():
    src, tgt = random_pairs(1000)
    data = Seq2SeqBatches(src, tgt, max_tokens=300)
    seen = []
    for batch in data.epoch(3):
        assert len(batch) * max(batch.src.size(1), batch.tgt_in.size(1)) <= 300
        seen += batch.indices.tolist()
    assert sorted(seen) == list(range(1000))


def test_an_example_longer_than_the_budget_gets_its_own_batch():
    batches = plan_batches(np.array([3, 50, 4, 2]), max_tokens=10)
    assert [b.tolist() for b in batches] == [[3, 0], [2], [1]]
    capped = plan_batches(np.ones(10, dtype=np.int64), max_tokens=100, max_sentences=4)
    assert [len(b) for b in capped] == [4, 4, 2]


def padding_fraction(batches: list[Batch]) -> float:
    real = sum(b.n_src_tokens + b.n_tgt_tokens for b in batches)
    return 1 - real / sum(b.padded_tokens for b in batches)


def test_bucketing_cuts_padding():
    src, tgt = random_pairs(2000, max_len=60)
    data = Seq2SeqBatches(src, tgt, max_tokens=1000)
    bucketed = list(data.epoch(0))
    sizes = np.cumsum([len(b) for b in bucketed])[:-1]
    shuffled = [data.collate(i) for i in np.split(np.random.default_rng(0).permutation(2000), sizes)]
    assert padding_fraction(bucketed) < 0.1 < 0.3 < padding_fraction(shuffled)


def test_shuffling_is_deterministic_by_seed_and_epoch():
    src, tgt = random_pairs(500)
    data = Seq2SeqBatches(src, tgt, max_tokens=200, seed=1)
    same = Seq2SeqBatches(src, tgt, max_tokens=200, seed=1)

    def plan(d: Seq2SeqBatches, epoch: int) -> list[list[int]]:
        return [b.tolist() for b in d.batches_for_epoch(epoch)]

    assert plan(data, 0) == plan(same, 0)
    assert plan(data, 0) != plan(data, 1)
    assert plan(data, 0) != plan(Seq2SeqBatches(src, tgt, max_tokens=200, seed=2), 0)


def test_resume_mid_epoch_gives_the_same_batches():
    src, tgt = random_pairs(400)
    data = Seq2SeqBatches(src, tgt, max_tokens=200)
    full = list(data.epoch(2))
    resumed = list(data.epoch(2, start=5))
    assert len(resumed) == len(full) - 5
    for a, b in zip(full[5:], resumed):
        assert torch.equal(a.src, b.src) and torch.equal(a.tgt_out, b.tgt_out)


def test_eval_batches_are_sorted_and_restore_the_original_order():
    src, tgt = random_pairs(300)
    data = Seq2SeqBatches(src, None, max_tokens=128)
    batches = list(data.eval_batches())
    assert all(b.tgt_in is None and b.tgt_out is None for b in batches)
    widths = [b.src.size(1) for b in batches]
    assert widths == sorted(widths)
    indices = torch.cat([b.indices for b in batches])
    rows = [unpad(row) for b in batches for row in b.src]
    assert restore_order(indices, rows) == src
    with pytest.raises(DataError, match="exactly once"):
        restore_order([0, 0], ["a", "b"])


def test_bad_inputs_are_data_errors():
    with pytest.raises(DataError, match="example 1 .* empty source"):
        Seq2SeqBatches([[5], [], [6]], [[5], [5], [5]])
    with pytest.raises(DataError, match="3 sources but 2 targets"):
        Seq2SeqBatches([[5], [6], [7]], [[5], [5]])


def test_multi30k_char_batches_have_little_padding():
    root = DATA / "multi30k"
    if not (root / "train.de").is_file():
        pytest.skip("shared/data/multi30k is not available")
    data = load_split(root, "train", "de", "en")
    tok = CharTokenizer.train(data.src + data.tgt)
    batches = list(Seq2SeqBatches(tok.encode_batch(data.src), tok.encode_batch(data.tgt)).epoch(0))
    assert padding_fraction(batches) < 0.1


# --- language modelling ------------------------------------------------------------------------


def test_split_by_position_and_blocks_never_cross():
    ids = torch.arange(1000)
    train, valid = split_by_position(ids, valid_fraction=0.1)
    assert len(train) == 900 and valid[0] == 900 and valid[-1] == 999
    blocks = LMBlocks(train, block_size=16, seed=0)
    for step in range(20):
        x, y = blocks.batch(step, batch_size=8)
        assert x.shape == y.shape == (8, 16)
        assert torch.equal(y, x + 1)  # next-token targets
        assert int(y.max()) < 900  # never reaches the validation part
    x_valid, _ = next(LMBlocks(valid, block_size=16).eval_batches(4))
    assert int(x_valid.min()) >= 900


def test_lm_batches_are_deterministic_and_eval_covers_the_split():
    ids = torch.arange(101)
    blocks = LMBlocks(ids, block_size=10, seed=3)
    assert torch.equal(blocks.batch(5, 4)[0], blocks.batch(5, 4)[0])
    assert not torch.equal(blocks.batch(5, 4)[0], blocks.batch(6, 4)[0])
    xs = torch.cat([x for x, _ in blocks.eval_batches(batch_size=3)])
    assert len(blocks) == 10 and xs.shape == (10, 10)
    assert xs.flatten().tolist() == list(range(100))


def test_lm_blocks_need_enough_tokens():
    with pytest.raises(DataError, match="too few"):
        LMBlocks(torch.arange(10), block_size=10)
    with pytest.raises(DataError, match="1-D"):
        LMBlocks(torch.zeros(2, 50, dtype=torch.long), block_size=4)
