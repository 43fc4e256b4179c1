"""Corpora bigger than memory: token ids written once to memory-mapped files, read by offset.

`qkv prepare` turns the [data] section of a config (parallel files, a multi30k-style directory,
or monolingual text) into a *prepared directory*:

    meta.json                    format, kind, token dtype, per-split counts, the sample size used,
                                 each file's size and SHA-256 and the corpus fingerprint
    tokenizer.json               (or src_tokenizer.json + tgt_tokenizer.json)
    train.src.bin  train.tgt.bin token ids of every sentence, back to back (uint16 or uint32)
    train.src.idx  train.tgt.idx int64 offsets: sentence i is bin[idx[i] : idx[i + 1]]
    valid.src.bin ...            the same for the validation split
    train.bin  valid.bin         language models: one long token sequence per split (nanoGPT style)

Each (split, side) is one shard: a flat binary file plus an offset index, the layout of
fairseq's binarized data and nanoGPT's train.bin. Preparing streams: the tokenizer learns from a
bounded, seeded sample of the training data (reservoir sampling: every sentence equally likely,
`sample` of them at most), then the corpus is encoded in chunks and appended to the files, so
memory stays bounded whatever the corpus size. The directory appears atomically (written under
a temporary name, then renamed).

Why not Hugging Face `datasets` (Arrow)? It would do the job, but it is a large extra
dependency for what numpy already gives: `np.memmap` reads any sentence by offset without
loading the file, the index is 8 bytes per sentence, and the page cache is shared by every
process on the machine, so DDP ranks on one machine hold the corpus once, not once per rank.

Training reads the files in place (`PairShards`, `TokenShard`): a seq2seq epoch visits windows
of `window` consecutive sentences in a seeded random order; inside a window the sentences are
shuffled, sorted by length and cut into token-budget batches (the length bucketing of
`qkv.data.batching.plan_batches`); only a batch's own sentences are read from disk when it is
collated. A corpus of one window (up to 100k pairs by default) gets exactly the batches of the
in-memory path. A language model draws random blocks from the memory-mapped sequence.

Integrity: meta.json records every file's size and SHA-256 (hashed as it is written, at no extra
read) and a *fingerprint* of the whole corpus: one hash over the kind, dtype, counts, file sizes,
content and tokenizer hashes. Opening a prepared directory checks the file sizes and the tokenizer
hashes (a tokenizer from another corpus is refused); training records the fingerprint in
train_state.pt and `--resume` refuses a corpus prepared again at the same path from other text.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qkv.data.batching import Batch, LMBlocks, plan_batches
from qkv.errors import ConfigError, DataError, OutputError
from qkv.files import atomic_directory, atomic_write_bytes, ensure_directory, exclusive_lock
from qkv.tokenizers import BOS_ID, EOS_ID, PAD_ID

FORMAT_VERSION = 1
META_FILE = "meta.json"
SAMPLE = 1_000_000          # sentences (or lines) the tokenizer learns from, at most
CHUNK = 20_000              # sentences (or lines) encoded at once while preparing
WINDOW = 100_000            # sentences bucketed together while training (the in-memory bucket_size)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


@dataclass
class PrepareReport:
    """What `prepare_corpus` wrote."""

    out: Path
    kind: str                       # "translation" or "lm"
    counts: dict[str, int]          # sentences (translation) or tokens (lm) per split
    tokens: dict[str, int]          # tokens per split, both sides
    sampled: int                    # sentences/lines the tokenizer learned from
    seconds: float = 0.0


def reservoir_sample(items: Iterable[Any], k: int, seed: int = 0) -> list[Any]:
    """At most `k` items, each equally likely, in their original order; one pass, O(k) memory.
    With `k` or fewer items, all of them in order."""
    rng = random.Random(seed)
    kept: list[tuple[int, Any]] = []
    for n, item in enumerate(items):
        if n < k:
            kept.append((n, item))
        else:
            j = rng.randrange(n + 1)
            if j < k:
                kept[j] = (n, item)
    kept.sort(key=lambda pair: pair[0])
    return [item for _, item in kept]


def prepare_corpus(data, out: str | os.PathLike, sample: int = SAMPLE, seed: int = 0,
                   log: Callable[[str], None] | None = None) -> PrepareReport:
    """Learn the tokenizer(s) from a sample of `data` (a DataConfig) and write `out` (see module doc)."""
    import time

    start = time.perf_counter()
    out = Path(out)
    if data.kind not in ("translation", "lm"):
        raise ConfigError(f"qkv prepare writes translation or lm data; data.kind is {data.kind!r}")
    if sample < 1:
        raise ConfigError(f"--sample must be >= 1, got {sample}")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} is a file; --out names a directory for the prepared corpus, give a new path")
    if out.is_dir() and not out.is_symlink() and any(out.iterdir()):
        raise DataError(f"{out} already exists and is not empty; choose another --out or delete it")
    say = log or (lambda message: None)
    ensure_directory(out.parent, "the folder of --out")
    with _prepare_lock(out), atomic_directory(out, "prepared corpus") as tmp:   # one at a time; whole or absent
        if data.kind == "translation":
            report = _prepare_pairs(data, tmp, sample, seed, say)
        else:
            report = _prepare_text(data, tmp, sample, seed, say)
    report.out, report.seconds = out, time.perf_counter() - start
    return report


@contextlib.contextmanager
def _prepare_lock(out: Path) -> Iterator[None]:
    """Hold `.<name>.prepare-lock` beside `out` (an advisory flock the system drops when the
    process dies, even by kill -9; the file is removed when done): a second `qkv prepare` into the
    same output gets one line.
    Under the lock, temporary directories that a killed prepare left behind are removed."""
    lock = out.parent / f".{out.name}.prepare-lock"

    def busy(pid: str) -> DataError:
        return DataError(f"another qkv prepare (pid {pid}) is writing {out}; wait for it to finish or choose another --out")

    def cannot(exc: OSError) -> OutputError:
        return OutputError(f"cannot write beside {out}: {exc.strerror or exc}")

    with exclusive_lock(lock, busy, cannot) as fd:
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:                            # the holder finished and removed it as we opened it
            raise DataError(f"another qkv prepare wrote {out} just now; look at it, or choose another --out")
        for stale in [*out.parent.glob(f".{out.name}.*.tmp"), *out.parent.glob(f".{out.name}.*.old")]:
            if stale.is_dir():                  # a killed prepare's: no other one can be running
                shutil.rmtree(stale, ignore_errors=True)
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)        # still holding it: no leftover beside the output


def _pair_files(data) -> dict[str, tuple[Path, Path]]:
    from qkv.data.corpus import split_files

    if data.dir:
        if not (data.src_lang and data.tgt_lang):
            raise DataError("data.dir needs data.src_lang and data.tgt_lang (e.g. de and en)")
        return {split: split_files(data.dir, split, data.src_lang, data.tgt_lang) for split in ("train", "valid")}
    if data.train_src and data.train_tgt and data.valid_src and data.valid_tgt:
        return {"train": (Path(data.train_src), Path(data.train_tgt)),
                "valid": (Path(data.valid_src), Path(data.valid_tgt))}
    raise DataError("translation data needs data.dir (+ src_lang, tgt_lang) or all of data.train_src, "
                    "data.train_tgt, data.valid_src, data.valid_tgt")


def _prepare_pairs(data, out: Path, sample: int, seed: int, say) -> PrepareReport:
    from qkv.data.corpus import ParallelFiles
    from qkv.run import save_tokenizers
    from qkv.data.corpus import pair_tokenizers

    files = _pair_files(data)
    say(f"sampling up to {sample:,} training pairs for the tokenizer")
    pairs = reservoir_sample(ParallelFiles(*files["train"]), sample, seed)
    src_tok, tgt_tok = pair_tokenizers(data, pairs)
    sampled = len(pairs)
    del pairs
    save_tokenizers(out, src_tok, tgt_tok, record=False)          # meta.json records their hashes
    dtype = _dtype_for(max(src_tok.vocab_size, tgt_tok.vocab_size))
    counts, tokens, hashes = {}, {}, {}
    for split, (src_path, tgt_path) in files.items():
        say(f"encoding {split}: {src_path} + {tgt_path}")
        with _ShardWriter(out / f"{split}.src", dtype) as src_w, _ShardWriter(out / f"{split}.tgt", dtype) as tgt_w:
            for chunk in _chunks(ParallelFiles(src_path, tgt_path), CHUNK):
                src_w.add(_encode(src_tok, [s for s, _ in chunk]))
                tgt_w.add(_encode(tgt_tok, [t for _, t in chunk]))
        counts[split], tokens[split] = src_w.count, src_w.tokens + tgt_w.tokens
        hashes.update(src_w.hashes() | tgt_w.hashes())
    _write_meta(out, "translation", dtype, counts, tokens, sampled, data, hashes)
    return PrepareReport(out, "translation", counts, tokens, sampled)


def _prepare_text(data, out: Path, sample: int, seed: int, say) -> PrepareReport:
    """A language model's text: `valid_text`, or the last `valid_fraction` of the file's bytes
    (cut at a line break), becomes the validation split."""
    from qkv.data.corpus import iter_lines
    from qkv.run import save_tokenizers
    from qkv.tokenizers import train_tokenizer

    if not data.train_text:
        raise DataError("language-model data needs data.train_text (a UTF-8 text file)")
    say(f"sampling up to {sample:,} lines for the tokenizer")
    lines = reservoir_sample((line + "\n" for _, line in iter_lines(data.train_text)), sample, seed)
    if not any(line.strip() for line in lines):
        from qkv.data.corpus import _raise_all_blank

        _raise_all_blank(str(data.train_text), len(lines), "only spaces")
    min_freq = data.min_freq if data.tokenizer != "char" else 1
    tok = train_tokenizer(data.tokenizer, lines, data.vocab_size, min_freq)
    sampled = len(lines)
    del lines
    save_tokenizers(out, None, tok, record=False)                 # meta.json records its hash
    dtype = _dtype_for(tok.vocab_size)
    if data.valid_text:
        sources = {"train": (data.train_text, 0, None), "valid": (data.valid_text, 0, None)}
    else:
        size = Path(data.train_text).stat().st_size
        cut = int(size * (1.0 - data.valid_fraction))
        sources = {"train": (data.train_text, 0, cut), "valid": (data.train_text, cut, None)}
    counts, hashes = {}, {}
    for split, (path, first, last) in sources.items():
        say(f"encoding {split}: {path}")
        with _TokenWriter(out / f"{split}.bin", dtype) as writer:
            for chunk in _text_chunks(path, first, last):
                writer.add(_encode(tok, chunk))
        counts[split] = writer.tokens
        hashes.update(writer.hashes())
    _write_meta(out, "lm", dtype, counts, dict(counts), sampled, data, hashes)
    return PrepareReport(out, "lm", counts, dict(counts), sampled)


def _dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _text_chunks(path, first: int, last: int | None, target: int = 1 << 20) -> Iterator[list[str]]:
    """The lines of byte range [first, last) of a UTF-8 file (each with its "\\n"), as lists of
    about-`target`-byte pieces: encoding a piece of many lines at once keeps the tokenizer's
    view of the text as in the in-memory path, except at the piece boundaries."""
    from qkv.data.corpus import iter_lines

    pieces: list[str] = []
    piece: list[str] = []
    size = 0
    position = 0
    for _, line in iter_lines(path):
        length = len(line.encode("utf-8")) + 1
        if position < first:        # the train part ends at the first line break at or after the cut
            position += length
            continue
        if last is not None and position >= last:
            break
        position += length
        piece.append(line + "\n")
        size += length
        if size >= target:
            pieces.append("".join(piece))
            piece, size = [], 0
            if len(pieces) == 8:
                yield pieces
                pieces = []
    if piece:
        pieces.append("".join(piece))
    if pieces:
        yield pieces


def _encode(tok, texts: list[str]) -> list[np.ndarray]:
    """Token ids of each text; the character tokenizer goes through a numpy lookup table."""
    if getattr(tok, "kind", "") == "char":
        return [_char_ids(tok, t) for t in texts]
    return [np.asarray(ids, dtype=np.int64) for ids in tok.encode_batch(texts)]


def _char_ids(tok, text: str) -> np.ndarray:
    table = getattr(tok, "_qkv_table", None)
    if table is None:
        from qkv.tokenizers import UNK_ID

        table = np.full(0x110000, UNK_ID, dtype=np.int64)
        for i, ch in enumerate(tok.vocab):
            if len(ch) == 1 and i >= 4:
                table[ord(ch)] = i
        tok._qkv_table = table
    return table[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]


class _TokenWriter:
    """Appends token ids to one flat binary file."""

    def __init__(self, path: Path, dtype: np.dtype):
        self.path, self.dtype = path, dtype
        self.tokens = 0
        self.digest = hashlib.sha256()

    def __enter__(self) -> _TokenWriter:
        self.file = open(self.path, "wb")
        return self

    def add(self, arrays: list[np.ndarray]) -> None:
        if not arrays:
            return
        flat = np.concatenate(arrays).astype(self.dtype).tobytes()
        self.file.write(flat)
        self.digest.update(flat)
        self.tokens += len(flat) // self.dtype.itemsize

    def hashes(self) -> dict[str, str]:
        """File name -> SHA-256 of what was written."""
        return {self.path.name: self.digest.hexdigest()}

    def __exit__(self, *exc) -> None:
        self.file.close()


class _ShardWriter(_TokenWriter):
    """Token ids of sentences plus their int64 offsets (`<base>.bin`, `<base>.idx`)."""

    def __init__(self, base: Path, dtype: np.dtype):
        super().__init__(base.with_suffix(base.suffix + ".bin"), dtype)
        self.idx_path = base.with_suffix(base.suffix + ".idx")
        self.count = 0

    def __enter__(self) -> _ShardWriter:
        super().__enter__()
        self.idx = open(self.idx_path, "wb")
        self.idx_digest = hashlib.sha256()
        self._write_idx(np.zeros(1, dtype=np.int64).tobytes())
        return self

    def _write_idx(self, data: bytes) -> None:
        self.idx.write(data)
        self.idx_digest.update(data)

    def add(self, arrays: list[np.ndarray]) -> None:
        lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
        self._write_idx((self.tokens + np.cumsum(lengths)).tobytes())
        self.count += len(arrays)
        super().add(arrays)

    def hashes(self) -> dict[str, str]:
        return super().hashes() | {self.idx_path.name: self.idx_digest.hexdigest()}

    def __exit__(self, *exc) -> None:
        self.idx.close()
        super().__exit__(*exc)


def _write_meta(out: Path, kind: str, dtype: np.dtype, counts, tokens, sampled: int, data,
                hashes: dict[str, str]) -> None:
    meta = {
        "qkv_prepared": FORMAT_VERSION,
        "kind": kind,
        "dtype": dtype.name,
        "counts": counts,                    # pairs (translation) or tokens (lm) per split
        "tokens": tokens,
        "tokenizer": {"kind": data.tokenizer, "vocab_size": data.vocab_size, "min_freq": data.min_freq,
                      "shared_vocab": bool(data.shared_vocab), "sampled": sampled},
        "files": {name: {"size": (out / name).stat().st_size, "sha256": digest}
                  for name, digest in sorted(hashes.items())},
        "tokenizer_sha256": _tokenizer_hashes(out),
    }
    meta["fingerprint"] = fingerprint(meta)
    atomic_write_bytes(out / META_FILE, (json.dumps(meta, indent=1) + "\n").encode("utf-8"))


def _tokenizer_hashes(path: Path) -> dict[str, str]:
    """Tokenizer file name -> SHA-256, for the tokenizer file(s) in `path`."""
    from qkv.run import RunDir, file_digest

    return {p.name: file_digest(p.read_bytes()) for p in RunDir(path).tokenizer_files()}


def fingerprint(meta: dict[str, Any]) -> str:
    """One SHA-256 over what identifies a prepared corpus: kind, dtype, counts, every file's size
    and hash, the tokenizer hashes (whatever of these meta.json holds)."""
    keys = ("qkv_prepared", "kind", "dtype", "counts", "tokens", "files", "tokenizer_sha256")
    identity = {k: meta.get(k) for k in keys}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """An opened prepared directory: its meta.json and tokenizers."""

    path: Path
    meta: dict[str, Any]
    src_tokenizer: Any | None
    tgt_tokenizer: Any

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.meta["dtype"])

    @property
    def fingerprint(self) -> str:
        """The corpus's fingerprint: recorded in meta.json, or (a corpus prepared before
        fingerprints) computed from its counts, file sizes and tokenizer hashes."""
        recorded = self.meta.get("fingerprint")
        if isinstance(recorded, str):
            return recorded
        meta = dict(self.meta)
        shards = sorted([*self.path.glob("*.bin"), *self.path.glob("*.idx")])
        meta["files"] = {p.name: {"size": p.stat().st_size} for p in shards if p.is_file()}
        meta["tokenizer_sha256"] = _tokenizer_hashes(self.path)
        return fingerprint(meta)


def open_prepared(path: str | os.PathLike) -> Prepared:
    """Read meta.json and the tokenizer(s) of a directory written by `qkv prepare`."""
    from qkv.run import SHARED_TOKENIZER, SRC_TOKENIZER, TGT_TOKENIZER
    from qkv.tokenizers import load_tokenizer

    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise DataError(f"{path} is not a prepared corpus (no {META_FILE}); write one with `qkv prepare`")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        version, kind = meta["qkv_prepared"], meta["kind"]
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{meta_path} is corrupted; prepare the corpus again") from None
    if version != FORMAT_VERSION:
        raise DataError(f"{path} has prepared-corpus format {version!r}; this qkv reads {FORMAT_VERSION}; "
                        f"prepare the corpus again")
    _check_files(path, meta)
    if (path / SHARED_TOKENIZER).is_file():
        tgt = load_tokenizer(path / SHARED_TOKENIZER)
        src = None if kind == "lm" else tgt
    else:
        src, tgt = load_tokenizer(path / SRC_TOKENIZER), load_tokenizer(path / TGT_TOKENIZER)
    return Prepared(path, meta, src, tgt)


def _check_files(path: Path, meta: dict[str, Any]) -> None:
    """The files are those meta.json describes: each file's size, and the tokenizers' hashes (a
    tokenizer copied from another corpus is refused). Unless QKV_NO_VERIFY=1."""
    from qkv.run import verifying

    if not verifying():
        return
    files = meta.get("files")
    for name, entry in (files.items() if isinstance(files, dict) else ()):
        size = entry.get("size") if isinstance(entry, dict) else None
        actual = (path / name).stat().st_size if (path / name).is_file() else None
        if size is not None and actual != size:
            found = "missing" if actual is None else f"{actual:,} bytes"
            raise DataError(f"{path / name} is {found}, but {META_FILE} says {size:,} bytes: the prepared "
                            f"directory was changed or mixed with another; prepare the corpus again")
    recorded = meta.get("tokenizer_sha256")
    if isinstance(recorded, dict) and recorded != _tokenizer_hashes(path):
        raise DataError(f"the tokenizer in {path} is not the one its corpus was encoded with ({META_FILE} "
                        f"records another hash); copy back its own tokenizer or prepare the corpus again")


def _memmap(path: Path, dtype) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path} is missing; prepare the corpus again")
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


class Shard:
    """The sentences of one (split, side): `bin[idx[i] : idx[i + 1]]` is sentence i."""

    def __init__(self, base: Path, dtype):
        self.tokens = _memmap(base.with_suffix(base.suffix + ".bin"), dtype)
        self.offsets = _memmap(base.with_suffix(base.suffix + ".idx"), np.int64)
        if len(self.offsets) == 0 or self.offsets[-1] != len(self.tokens):
            raise DataError(f"{base}.idx does not match {base}.bin; prepare the corpus again")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self, start: int, stop: int) -> np.ndarray:
        """(stop - start,) token counts of sentences start .. stop - 1."""
        return np.diff(np.asarray(self.offsets[start : stop + 1]))

    def rows(self, indices: np.ndarray) -> list[np.ndarray]:
        """The ids of sentences `indices`, read from the file (int64 copies)."""
        offsets = self.offsets
        return [np.asarray(self.tokens[offsets[i] : offsets[i + 1]], dtype=np.int64) for i in indices]


def _padded(rows: list[np.ndarray], width: int, pad_id: int) -> np.ndarray:
    out = np.full((len(rows), width), pad_id, dtype=np.int64)
    for r, row in enumerate(rows):
        out[r, : len(row)] = row
    return out


class PairShards:
    """Training pairs read in place: the seq2seq counterpart of `Seq2SeqBatches` for a trainer.

    Pairs with an empty source, or more than `max_tokens` tokens on either side, are left out
    (as the in-memory path does). `window_batches(epoch, k)` gives the batches of the k-th window
    of an epoch; `collate(indices)` reads and pads them.
    """

    def __init__(self, prepared: Prepared, split: str, max_tokens: int, batch_tokens: int, seed: int = 0,
                 window: int | None = None, max_sentences: int | None = None):
        self.src = Shard(prepared.path / f"{split}.src", prepared.dtype)
        self.tgt = Shard(prepared.path / f"{split}.tgt", prepared.dtype)
        if len(self.src) != len(self.tgt):
            raise DataError(f"{prepared.path}: {split}.src and {split}.tgt have different sentence counts; "
                            f"prepare the corpus again")
        window = window or WINDOW
        if batch_tokens < 1 or window < 1:
            raise ConfigError("batch_tokens and the window must be >= 1")
        self.max_tokens, self.batch_tokens, self.seed = max_tokens, batch_tokens, seed
        self.window, self.max_sentences = window, max_sentences
        self.pad_id, self.bos_id, self.eos_id = PAD_ID, BOS_ID, EOS_ID
        self.windows = max(1, -(-len(self.src) // window))
        self.kept = sum(int(self._keep(k * window, min((k + 1) * window, len(self.src)))[0].size)
                        for k in range(self.windows))
        if self.kept == 0:
            raise DataError(f"no {split} pair has 1 to {max_tokens} tokens on both sides; raise data.max_tokens")

    def __len__(self) -> int:
        """The number of pairs in the split (kept or not)."""
        return len(self.src)

    def _keep(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Window [start, stop): the kept pairs (offsets into the window) and their lengths."""
        s, t = self.src.lengths(start, stop), self.tgt.lengths(start, stop)
        keep = np.flatnonzero((s > 0) & (s <= self.max_tokens) & (t <= self.max_tokens))
        return keep, s[keep], t[keep]

    def window_batches(self, epoch: int, k: int) -> list[np.ndarray]:
        """Pair indices of each batch of the k-th window visited in `epoch` (deterministic in
        (seed, epoch, k)); a single window gives exactly `Seq2SeqBatches.batches_for_epoch`."""
        if self.windows == 1:
            rng = np.random.default_rng([self.seed, epoch])
            w = 0
        else:
            w = int(np.random.default_rng([self.seed, epoch, 0]).permutation(self.windows)[k])
            rng = np.random.default_rng([self.seed, epoch, 1, k])
        start = w * self.window
        keep, s, t = self._keep(start, min(start + self.window, len(self.src)))
        lengths = np.maximum(s, t + 1)
        plan = plan_batches(lengths, self.batch_tokens, rng, max(len(keep), 1), self.max_sentences, tiebreak=(s, t))
        return [start + keep[b] for b in plan]

    def collate(self, indices: np.ndarray) -> Batch:
        """Read pairs `indices` from the files and pad them into one Batch (as Seq2SeqBatches.collate)."""
        indices = np.asarray(indices, dtype=np.int64)
        src_rows, tgt_rows = self.src.rows(indices), self.tgt.rows(indices)
        src_lengths = np.array([len(r) for r in src_rows], dtype=np.int64)
        tgt_lengths = np.array([len(r) for r in tgt_rows], dtype=np.int64)
        src = _padded(src_rows, int(src_lengths.max()), self.pad_id)
        y = _padded(tgt_rows, int(tgt_lengths.max()) + 1, self.pad_id)
        tgt_out = y.copy()
        tgt_out[np.arange(len(indices)), tgt_lengths] = self.eos_id
        tgt_in = np.concatenate([np.full((len(indices), 1), self.bos_id), y[:, :-1]], axis=1)
        return Batch(torch.from_numpy(src), torch.from_numpy(tgt_in), torch.from_numpy(tgt_out),
                     torch.from_numpy(indices), int(src_lengths.sum()), int(tgt_lengths.sum()) + len(indices))

    def read_ids(self, limit: int | None = None) -> tuple[list[list[int]], list[list[int]]]:
        """The first `limit` pairs (all by default) as id lists, e.g. for a small validation split."""
        n = len(self.src) if limit is None else min(limit, len(self.src))
        rows = np.arange(n)
        return ([r.tolist() for r in self.src.rows(rows)], [r.tolist() for r in self.tgt.rows(rows)])


class TokenShard(LMBlocks):
    """`LMBlocks` over a memory-mapped token file: blocks are read from disk as they are drawn."""

    def __init__(self, path: Path, dtype, block_size: int, seed: int = 0):
        ids = _memmap(path, dtype)
        if block_size < 1:
            raise ConfigError(f"block_size must be >= 1, got {block_size}")
        if len(ids) < block_size + 1:
            raise DataError(f"{path} holds {len(ids)} tokens, too few for blocks of {block_size}; "
                            f"use more text or a smaller data.block_size")
        self.ids = ids
        self.block_size, self.seed = block_size, seed

    def blocks(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        starts = np.asarray(starts, dtype=np.int64)
        window = np.stack([np.asarray(self.ids[s : s + self.block_size + 1], dtype=np.int64) for s in starts])
        window = torch.from_numpy(window)
        return window[:, :-1], window[:, 1:]
