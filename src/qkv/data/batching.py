"""Batching: token-budget batches of similar lengths for seq2seq, and blocks for language models.

Seq2seq (`Seq2SeqBatches`)
--------------------------
A batch holds as many sentence pairs as fit in `max_tokens`, counted as the *padded* size

    rows * max(longest source, longest target + 1)

(target + 1 because the decoder sees `<bos> y` and predicts `y <eos>`). The tensors of a batch
are therefore never larger than the budget, which bounds memory and makes steps take similar
time. To keep padding low, pairs of similar length go together ("length bucketing"): each epoch
shuffles the data with a generator seeded by (seed, epoch), cuts it into large chunks of
`bucket_size` pairs, sorts each chunk by length, cuts it greedily into batches, and finally
shuffles the order of the batches. The same (seed, epoch) always gives the same batches, so a
trainer that stopped after batch i of an epoch resumes with `epoch(e, start=i + 1)`.

Collating pads every row to the batch's longest sequence with `pad_id` and builds the
teacher-forcing pair ("shifted right"):

    y        =  a  b  c
    tgt_in   = <bos> a  b  c          what the decoder reads
    tgt_out  =  a  b  c <eos>         what it must predict at each position

Source sentences get no special tokens. For evaluation and translation, `eval_batches()` sorts
all sentences by length (less padding, no shuffling); `Batch.indices` gives each row's position
in the data, and `restore_order` puts results back in the original order.

Language modelling (`LMBlocks`)
-------------------------------
A decoder-only model reads contiguous blocks of one long token sequence: x = ids[i : i+T],
y = ids[i+1 : i+T+1]. `split_by_position` cuts the sequence into train and validation parts
first, so no block ever spans both.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np
import torch

from qkv.errors import ConfigError, DataError
from qkv.tokenizers import BOS_ID, EOS_ID, PAD_ID

T = TypeVar("T")


@dataclass
class Batch:
    """One padded seq2seq batch. Row r is example `indices[r]` of the data.

    src:     (B, S) source ids, padded with pad_id
    tgt_in:  (B, T) `<bos> y`, the decoder input (None when the data has no targets)
    tgt_out: (B, T) `y <eos>`, the next token at each decoder position (None likewise)
    n_src_tokens / n_tgt_tokens: real tokens, without padding (targets count the `<eos>`, i.e.
    the positions a loss averages over)
    """

    src: torch.Tensor
    tgt_in: torch.Tensor | None
    tgt_out: torch.Tensor | None
    indices: torch.Tensor
    n_src_tokens: int
    n_tgt_tokens: int

    def __len__(self) -> int:
        return self.src.size(0)

    @property
    def padded_tokens(self) -> int:
        """Positions in the tensors, padding included (src plus tgt_out)."""
        return self.src.numel() + (self.tgt_out.numel() if self.tgt_out is not None else 0)

    def to(self, device: torch.device | str) -> Batch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return replace(self, src=move(self.src), tgt_in=move(self.tgt_in), tgt_out=move(self.tgt_out))


class Ragged:
    """Many id sequences of different lengths in one flat array, padded on demand with numpy."""

    def __init__(self, seqs: Sequence[Sequence[int]]):
        self.lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        total = int(self.lengths.sum())
        flat = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=total)
        self.flat = np.append(flat, 0)  # one spare slot, so clipped positions stay in range

    def __len__(self) -> int:
        return len(self.lengths)

    def padded(self, rows: np.ndarray, width: int, pad_id: int) -> np.ndarray:
        """(len(rows), width) array: sequence `rows[r]` left-aligned, then `pad_id`."""
        cols = np.arange(width)
        lengths = self.lengths[rows][:, None]
        positions = np.minimum(self.offsets[rows][:, None] + cols, len(self.flat) - 1)
        return np.where(cols < lengths, self.flat[positions], pad_id)


def plan_batches(
    lengths: np.ndarray,
    max_tokens: int,
    rng: np.random.Generator | None = None,
    bucket_size: int = 100_000,
    max_sentences: int | None = None,
    tiebreak: Sequence[np.ndarray] = (),
) -> list[np.ndarray]:
    """Group example indices into batches of at most `max_tokens` padded positions.

    lengths: (N,) the padded length each example needs, e.g. max(len(src), len(tgt) + 1).
    rng: shuffle examples before bucketing and batches after; None keeps a fixed order sorted
         by length (evaluation).
    bucket_size: examples sorted together; smaller chunks give more varied batches, more padding.
    tiebreak: further (N,) sort keys for examples of equal length, e.g. (source, target length):
         on Multi30k they cut padding from about 7% to about 4%.
    An example longer than `max_tokens` gets a batch of its own.
    """
    if max_tokens < 1:
        raise ConfigError(f"max_tokens must be >= 1, got {max_tokens}")
    order = rng.permutation(len(lengths)) if rng is not None else np.arange(len(lengths))
    batches: list[np.ndarray] = []
    chunk_size = max(bucket_size if rng is not None else len(order), 1)
    for start in range(0, len(order), chunk_size):
        chunk = order[start : start + chunk_size]
        keys = [key[chunk] for key in reversed(tiebreak)]
        chunk = chunk[np.lexsort((*keys, lengths[chunk]))]  # stable: equal keys keep shuffled order
        batches.extend(_cut(chunk, lengths[chunk], max_tokens, max_sentences or max_tokens))
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def _cut(indices: np.ndarray, lengths: np.ndarray, max_tokens: int, max_rows: int) -> list[np.ndarray]:
    """Cut length-sorted `indices` greedily into batches whose rows * longest <= max_tokens."""
    batches = []
    i = 0
    while i < len(indices):
        window = lengths[i : i + max_rows]
        padded_size = np.maximum.accumulate(window) * np.arange(1, len(window) + 1)
        rows = max(int(np.searchsorted(padded_size, max_tokens, side="right")), 1)
        batches.append(indices[i : i + rows])
        i += rows
    return batches


class Seq2SeqBatches:
    """Token-budget, length-bucketed batches over encoded sentence pairs.

    src_ids / tgt_ids: token ids per example, without special tokens (e.g. `encode_batch`
    output); tgt_ids may be None for source-only data (translation input).
    """

    def __init__(
        self,
        src_ids: Sequence[Sequence[int]],
        tgt_ids: Sequence[Sequence[int]] | None = None,
        max_tokens: int = 4096,
        seed: int = 0,
        *,
        bucket_size: int = 100_000,
        max_sentences: int | None = None,
        pad_id: int = PAD_ID,
        bos_id: int = BOS_ID,
        eos_id: int = EOS_ID,
    ):
        if tgt_ids is not None and len(tgt_ids) != len(src_ids):
            raise DataError(f"{len(src_ids)} sources but {len(tgt_ids)} targets; give one target per source")
        self.src = Ragged(src_ids)
        self.tgt = Ragged(tgt_ids) if tgt_ids is not None else None
        empty = np.flatnonzero(self.src.lengths == 0)
        if len(empty):
            raise DataError(f"example {empty[0]} (and {len(empty) - 1} more) has an empty source; "
                            f"drop empty sentences before batching")
        self.max_tokens, self.seed = max_tokens, seed
        self.bucket_size, self.max_sentences = bucket_size, max_sentences
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        tgt_lengths = self.tgt.lengths + 1 if self.tgt is not None else 0
        self.lengths = np.maximum(self.src.lengths, tgt_lengths)  # padded length of each example
        self._tiebreak = (self.src.lengths, *([self.tgt.lengths] if self.tgt is not None else []))

    def __len__(self) -> int:
        """The number of examples."""
        return len(self.src)

    def batches_for_epoch(self, epoch: int) -> list[np.ndarray]:
        """Example indices of each batch of `epoch`: shuffled, deterministic in (seed, epoch)."""
        rng = np.random.default_rng([self.seed, epoch])
        return plan_batches(self.lengths, self.max_tokens, rng, self.bucket_size, self.max_sentences,
                            tiebreak=self._tiebreak)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """The batches of training epoch `epoch`, from batch number `start` (to resume)."""
        for indices in self.batches_for_epoch(epoch)[start:]:
            yield self.collate(indices)

    def eval_batches(self) -> Iterator[Batch]:
        """Every example once, shortest first, in fixed order; see `restore_order`."""
        plan = plan_batches(self.lengths, self.max_tokens, None, max_sentences=self.max_sentences,
                            tiebreak=self._tiebreak)
        for indices in plan:
            yield self.collate(indices)

    def collate(self, indices: np.ndarray) -> Batch:
        """Pad examples `indices` into one Batch (tgt_in/tgt_out as in the module docstring)."""
        indices = np.asarray(indices, dtype=np.int64)
        src_lengths = self.src.lengths[indices]
        src = self.src.padded(indices, int(src_lengths.max()), self.pad_id)
        tgt_in = tgt_out = None
        n_tgt = 0
        if self.tgt is not None:
            tgt_lengths = self.tgt.lengths[indices]
            width = int(tgt_lengths.max())
            y = self.tgt.padded(indices, width + 1, self.pad_id)       # y, then padding
            tgt_out = y.copy()
            tgt_out[np.arange(len(indices)), tgt_lengths] = self.eos_id  # y <eos>
            tgt_in = np.concatenate([np.full((len(indices), 1), self.bos_id), y[:, :-1]], axis=1)  # <bos> y
            tgt_in, tgt_out = torch.from_numpy(tgt_in), torch.from_numpy(tgt_out)
            n_tgt = int(tgt_lengths.sum()) + len(indices)
        return Batch(torch.from_numpy(src), tgt_in, tgt_out, torch.from_numpy(indices),
                     int(src_lengths.sum()), n_tgt)


def restore_order(indices: Sequence[int] | np.ndarray | torch.Tensor, items: Sequence[T]) -> list[T]:
    """Put `items` back in data order: items[k] belongs to example indices[k].

    Typical use: concatenate `batch.indices` over `eval_batches()` and the per-row outputs.
    """
    indices = [int(i) for i in indices]
    if len(indices) != len(items) or sorted(indices) != list(range(len(items))):
        raise DataError(f"restore_order needs each index 0..{len(items) - 1} exactly once, "
                        f"got {len(indices)} indices for {len(items)} items")
    out: list[T] = [None] * len(items)  # type: ignore[list-item]
    for i, item in zip(indices, items):
        out[i] = item
    return out


# --- language modelling ----------------------------------------------------------------------


def split_by_position(ids: torch.Tensor, valid_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a 1-D token sequence into (train, valid): the first part and the last `valid_fraction`."""
    if ids.dim() != 1:
        raise DataError(f"a language-model corpus must be a 1-D tensor of ids, got shape {tuple(ids.shape)}")
    if not 0.0 < valid_fraction < 1.0:
        raise ConfigError(f"valid_fraction must be between 0 and 1, got {valid_fraction}")
    n_train = int(len(ids) * (1.0 - valid_fraction))
    return ids[:n_train], ids[n_train:]


class LMBlocks:
    """Blocks of `block_size` consecutive tokens with next-token targets, from one split.

    `batch(step, batch_size)` draws random blocks, deterministic in (seed, step), so training
    resumes exactly at any step; `eval_batches` covers the split once with non-overlapping blocks.
    """

    def __init__(self, ids: torch.Tensor, block_size: int, seed: int = 0):
        if ids.dim() != 1:
            raise DataError(f"LMBlocks needs a 1-D tensor of ids, got shape {tuple(ids.shape)}")
        if block_size < 1:
            raise ConfigError(f"block_size must be >= 1, got {block_size}")
        if len(ids) < block_size + 1:
            raise DataError(f"{len(ids)} tokens are too few for blocks of {block_size} (need "
                            f"{block_size + 1}); use more text or a smaller block_size")
        self.ids = ids.long()
        self.block_size, self.seed = block_size, seed

    def __len__(self) -> int:
        """The number of non-overlapping blocks (what `eval_batches` covers)."""
        return (len(self.ids) - 1) // self.block_size

    def blocks(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y), each (len(starts), block_size): x = ids[s : s+T], y = ids[s+1 : s+T+1]."""
        window = self.ids[starts[:, None] + torch.arange(self.block_size + 1)]
        return window[:, :-1], window[:, 1:]

    def batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`batch_size` blocks at random positions, the same for the same (seed, step)."""
        rng = np.random.default_rng([self.seed, step])
        starts = rng.integers(0, len(self.ids) - self.block_size, size=batch_size)
        return self.blocks(torch.from_numpy(starts))

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive non-overlapping blocks from the start; a last partial block is left out."""
        starts = torch.arange(len(self)) * self.block_size
        for chunk in starts.split(batch_size):
            yield self.blocks(chunk)
