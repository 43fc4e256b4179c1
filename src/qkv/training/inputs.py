"""Turn the [data] section into tokenizers and batch streams for the trainer.

Three kinds of data, one result (`Inputs`):

    task         a built-in synthetic task (qkv.data.tasks), character tokenizer from its alphabet
    translation  parallel files or a multi30k-style directory (qkv.data.corpus), char/word/BPE
    lm           monolingual text cut into blocks (qkv.data.batching.LMBlocks)

With data.prepared (a directory written by `qkv prepare`, qkv.data.shards) the training split
of a translation or lm corpus is read in place from memory-mapped token files instead; the
tokenizer comes from that directory.

Training reads one global stream of micro-batches; with DDP, rank r takes items r, r+W, ... so
W processes see exactly what one process with W-fold gradient accumulation would see. The
stream's position is part of train_state.pt, so a resumed run reads the same batches next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from qkv.data.batching import Batch, LMBlocks, Seq2SeqBatches, split_by_position
from qkv.errors import ConfigError, DataError
from qkv.data.corpus import pair_tokenizers
from qkv.run import DataConfig


@dataclass
class Inputs:
    """Everything the trainer needs from the data."""

    kind: str                                   # "seq2seq" or "lm"
    src_tokenizer: Any | None                   # None for a language model
    tgt_tokenizer: Any
    train: Seq2SeqBatches | LMBlocks
    valid: Seq2SeqBatches | LMBlocks
    valid_pairs: list[tuple[str, str]]          # seq2seq: raw (source, reference) for decoding
    dropped: int = 0                            # training pairs left out as too long
    fingerprint: str | None = None              # a prepared corpus's fingerprint (qkv.data.shards)

    @property
    def is_lm(self) -> bool:
        return self.kind == "lm"


def prepare(data: DataConfig, batch_tokens: int, seed: int, model_max_len: int, tokenizers=None) -> Inputs:
    """Read the data, build (or reuse, on resume) the tokenizers, encode and batch."""
    if data.prepared:
        return _prepared_inputs(data, batch_tokens, seed, model_max_len, tokenizers)
    if data.kind == "task":
        return _task_inputs(data, batch_tokens, seed, model_max_len, tokenizers)
    if data.kind == "translation":
        return _translation_inputs(data, batch_tokens, seed, model_max_len, tokenizers)
    return _lm_inputs(data, seed, tokenizers)


# --- seq2seq ---------------------------------------------------------------------------------


def _task_inputs(data: DataConfig, batch_tokens: int, seed: int, model_max_len: int, tokenizers) -> Inputs:
    from qkv.data.tasks import get_task, make_task
    from qkv.tokenizers import CharTokenizer

    task = get_task(data.task)
    lengths = {"min_len": data.min_len or None, "max_len": data.max_len or None}
    longest = data.max_len or task.max_len        # the longest inputs have at least this many characters
    if task.length_unit is not None and longest > model_max_len:
        raise ConfigError(
            f"task {task.name!r} draws inputs of up to {longest} {task.length_unit}, more than the model "
            f"has positions for (model.max_len={model_max_len}); raise model.max_len or lower data.max_len"
        )
    train = make_task(task.name, data.train_size, seed, "train", **lengths)
    valid = make_task(task.name, data.valid_size, seed, "valid", **lengths)
    tok = tokenizers[1] if tokenizers else CharTokenizer.from_alphabet(task.alphabet)
    return _seq2seq(train, valid, tok, tok, batch_tokens, seed, max_tokens=10**9)


def _translation_inputs(data: DataConfig, batch_tokens: int, seed: int, model_max_len: int, tokenizers) -> Inputs:
    from qkv.data.corpus import load_split, read_parallel

    if data.dir:
        if not (data.src_lang and data.tgt_lang):
            raise DataError("data.dir needs data.src_lang and data.tgt_lang (e.g. de and en)")
        train = load_split(data.dir, "train", data.src_lang, data.tgt_lang).pairs()
        valid = load_split(data.dir, "valid", data.src_lang, data.tgt_lang).pairs()
    elif data.train_src and data.train_tgt and data.valid_src and data.valid_tgt:
        train = read_parallel(data.train_src, data.train_tgt).pairs()
        valid = read_parallel(data.valid_src, data.valid_tgt).pairs()
    else:
        raise DataError("translation data needs data.dir (+ src_lang, tgt_lang) or all of data.train_src, "
                        "data.train_tgt, data.valid_src, data.valid_tgt")
    src_tok, tgt_tok = tokenizers if tokenizers else pair_tokenizers(data, train)
    limit = min(data.max_tokens, model_max_len - 1)
    return _seq2seq(train, valid, src_tok, tgt_tok, batch_tokens, seed, limit, model_max_len - 1)


def _seq2seq(train, valid, src_tok, tgt_tok, batch_tokens: int, seed: int, max_tokens: int,
             valid_max: int | None = None) -> Inputs:
    """Encode pairs, drop over-long training pairs, build the batchers."""
    src_ids, tgt_ids = src_tok.encode_batch([s for s, _ in train]), tgt_tok.encode_batch([t for _, t in train])
    keep = [i for i, (s, t) in enumerate(zip(src_ids, tgt_ids)) if 0 < len(s) <= max_tokens and len(t) <= max_tokens]
    if not keep:
        raise DataError(f"no training pair has 1 to {max_tokens} tokens on both sides; raise data.max_tokens")
    v_src, v_tgt = src_tok.encode_batch([s for s, _ in valid]), tgt_tok.encode_batch([t for _, t in valid])
    v_keep = [i for i, (s, t) in enumerate(zip(v_src, v_tgt)) if 0 < len(s) and max(len(s), len(t)) <= (valid_max or 10**9)]
    if not v_keep:
        raise DataError("the validation set is empty (after dropping empty or over-long pairs)")
    return Inputs(
        kind="seq2seq",
        src_tokenizer=src_tok,
        tgt_tokenizer=tgt_tok,
        train=Seq2SeqBatches([src_ids[i] for i in keep], [tgt_ids[i] for i in keep], batch_tokens, seed),
        valid=Seq2SeqBatches([v_src[i] for i in v_keep], [v_tgt[i] for i in v_keep], batch_tokens, seed),
        valid_pairs=[valid[i] for i in v_keep],
        dropped=len(train) - len(keep),
    )


# --- language models -------------------------------------------------------------------------


def _lm_inputs(data: DataConfig, seed: int, tokenizers) -> Inputs:
    from qkv.data.corpus import read_text
    from qkv.tokenizers import train_tokenizer

    if not data.train_text:
        raise DataError("language-model data needs data.train_text (a UTF-8 text file)")
    text = read_text(data.train_text)
    tok = tokenizers[1] if tokenizers else train_tokenizer(data.tokenizer, text.splitlines(keepends=True),
                                                          data.vocab_size, data.min_freq if data.tokenizer != "char" else 1)
    ids = torch.tensor(tok.encode(text), dtype=torch.long)
    if data.valid_text:
        train_ids, valid_ids = ids, torch.tensor(tok.encode(read_text(data.valid_text)), dtype=torch.long)
    else:
        train_ids, valid_ids = split_by_position(ids, data.valid_fraction)
    return Inputs(
        kind="lm",
        src_tokenizer=None,
        tgt_tokenizer=tok,
        train=LMBlocks(train_ids, data.block_size, seed),
        valid=LMBlocks(valid_ids, data.block_size, seed),
        valid_pairs=[],
    )


# --- prepared (memory-mapped) corpora --------------------------------------------------------


def _prepared_inputs(data: DataConfig, batch_tokens: int, seed: int, model_max_len: int, tokenizers) -> Inputs:
    """Training batches read in place from a prepared directory; the (small) validation split in
    memory, as the in-memory path has it."""
    from qkv.data.shards import PairShards, TokenShard, open_prepared

    prepared = open_prepared(data.prepared)
    if prepared.kind != data.kind:
        raise DataError(f"{data.prepared} holds {prepared.kind} data but data.kind is {data.kind!r}; "
                        f"set data.kind={prepared.kind}")
    src_tok, tgt_tok = prepared.src_tokenizer, prepared.tgt_tokenizer
    if tokenizers and any(a is not None and a.to_dict() != b.to_dict()
                          for a, b in zip(tokenizers, (src_tok, tgt_tok))):
        raise DataError(f"the run's tokenizer differs from the one in {data.prepared}; resume with the "
                        f"prepared corpus the run was trained on")
    if prepared.kind == "lm":
        return Inputs(
            kind="lm", src_tokenizer=None, tgt_tokenizer=tgt_tok,
            train=TokenShard(prepared.path / "train.bin", prepared.dtype, data.block_size, seed),
            valid=TokenShard(prepared.path / "valid.bin", prepared.dtype, data.block_size, seed),
            valid_pairs=[], fingerprint=prepared.fingerprint,
        )
    limit = min(data.max_tokens, model_max_len - 1)
    train = PairShards(prepared, "train", limit, batch_tokens, seed)
    v_src, v_tgt = PairShards(prepared, "valid", model_max_len - 1, batch_tokens, seed).read_ids()
    v_keep = [i for i, (s, t) in enumerate(zip(v_src, v_tgt)) if 0 < len(s) and max(len(s), len(t)) <= model_max_len - 1]
    if not v_keep:
        raise DataError("the validation set is empty (after dropping empty or over-long pairs)")
    return Inputs(
        kind="seq2seq", src_tokenizer=src_tok, tgt_tokenizer=tgt_tok, train=train,
        valid=Seq2SeqBatches([v_src[i] for i in v_keep], [v_tgt[i] for i in v_keep], batch_tokens, seed),
        valid_pairs=[(src_tok.decode(v_src[i]), tgt_tok.decode(v_tgt[i])) for i in v_keep],
        dropped=len(train) - train.kept, fingerprint=prepared.fingerprint,
    )


# --- the global micro-batch stream -----------------------------------------------------------


class MicroBatches:
    """Micro-batch number `position`, `position + 1`, ... of one global stream; this rank gets
    every `world`-th of them, starting at its `rank`.

    seq2seq: the stream runs through epochs of shuffled, length-bucketed batches; the state is
    (epoch, window, batch index), where a prepared corpus plans one window of pairs at a time
    and the in-memory data is one window. lm: micro-batch m is `lm_batch_size` random blocks
    seeded by m.
    """

    def __init__(self, inputs: Inputs, rank: int, world: int, lm_batch_size: int):
        self.inputs, self.rank, self.world = inputs, rank, world
        self.lm_batch_size = lm_batch_size
        self.epoch, self.window, self.index, self.position = 0, 0, 0, 0
        self._plan: tuple[tuple[int, int], list] | None = None

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "window": self.window, "index": self.index, "position": self.position}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.index, self.position = state["epoch"], state["index"], state["position"]
        self.window = state.get("window", 0)

    def next(self) -> Batch | tuple[torch.Tensor, torch.Tensor]:
        """This rank's next micro-batch (and the stream moves past the other ranks' ones)."""
        mine = None
        for r in range(self.world):
            item = self._take() if r == self.rank else self._skip()
            mine = item if r == self.rank else mine
        return mine

    def _take(self):
        if self.inputs.is_lm:
            batch = self.inputs.train.batch(self.position, self.lm_batch_size)
        else:
            batch = self.inputs.train.collate(self._current_plan()[self.index])
        self._skip()
        return batch

    def _skip(self) -> None:
        self.position += 1
        if not self.inputs.is_lm:
            self.index += 1
            while self.index >= len(self._current_plan()):    # a window may have no batch at all
                self.window, self.index = self.window + 1, 0
                if self.window >= getattr(self.inputs.train, "windows", 1):
                    self.epoch, self.window = self.epoch + 1, 0

    def _current_plan(self) -> list:
        key = (self.epoch, self.window)
        if self._plan is None or self._plan[0] != key:
            train = self.inputs.train
            plan = (train.window_batches(*key) if hasattr(train, "window_batches")
                    else train.batches_for_epoch(self.epoch))
            self._plan = (key, plan)
        return self._plan[1]
