"""Reading text corpora: parallel files, TSV pairs and monolingual text.

Three layouts, one set of rules:

- parallel: two line-aligned files, line i of `train.de` translates line i of `train.en`;
- TSV: one file, `source<TAB>target` per line;
- monolingual: one file of running text, for language modelling.

Files are read line by line (a large corpus is never loaded just to be checked) as UTF-8
(a leading byte-order mark is dropped, "\\r\\n" is accepted). Anything unusable raises a one-line
DataError naming the file and the line: a missing or empty file, invalid UTF-8, parallel files
of different lengths (with both counts), a TSV line without exactly two columns. Empty lines
(blank or only whitespace) are skipped pair-wise and counted in `skipped`, or raise an error
with `empty="error"`.

`load_split(directory, split, src_lang, tgt_lang)` reads a directory laid out like Multi30k
(`train.de`/`train.en`, `val.de`/`val.en`, `test_2016_flickr.de`/...) with the same code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from qkv.errors import ConfigError, DataError
from qkv.run.config import DataConfig

EmptyPolicy = Literal["skip", "error"]
SPLIT_ALIASES = {"valid": ("valid", "val", "dev"), "val": ("val", "valid", "dev"), "dev": ("dev", "val", "valid")}


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield (line number from 1, text without the line break) of a UTF-8 file, lazily."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a text file; give one of its files (for a directory of "
                        f"<split>.<lang> files such as Multi30k, set data.dir with data.src_lang and data.tgt_lang)")
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    n = 0
    with path.open("rb") as f:
        for n, line in iter_byte_lines(f, str(path)):
            yield n, line
    if n == 0:
        raise DataError(f"{path} is empty; give a file with one sentence per line")


def iter_byte_lines(stream, name: str) -> Iterator[tuple[int, str]]:
    """(line number from 1, text) of a binary stream (a file, stdin's buffer) decoded as strict
    UTF-8: one rule for files and pipes, an invalid byte is an error naming the line."""
    for n, raw in enumerate(stream, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{name}:{n}: invalid UTF-8 at byte {exc.start} of the line; "
                            f"convert the input to UTF-8 (e.g. iconv -t UTF-8)") from None
        if n == 1:
            line = line.removeprefix("\ufeff")
        line = line.rstrip("\n").removesuffix("\r")
        if n == 1 and "\r" in line:
            raise DataError(f"{name}:1: the line holds carriage returns (\\r) inside it: the input seems to end "
                            f"its lines with \\r alone (old Mac style), so it reads as one line; convert the line "
                            f"ends to \\n (e.g. tr '\\r' '\\n' < IN > OUT)")
        yield n, line


def _check_empty(text: str, empty: EmptyPolicy, where: str) -> bool:
    """True when the line is blank and should be skipped; raises when blanks are errors."""
    if text.strip():
        return False
    if empty == "error":
        raise DataError(f"{where}: empty line; remove it or read with empty='skip'")
    return True


def _pair_is_empty(src: str, tgt: str, empty: EmptyPolicy, src_where: str, tgt_where: str) -> bool:
    """True when either side of a pair is blank (both sides are checked, for the error message)."""
    src_blank = _check_empty(src, empty, src_where)
    tgt_blank = _check_empty(tgt, empty, tgt_where)
    return src_blank or tgt_blank


def _check_policy(empty: str) -> None:
    if empty not in ("skip", "error"):
        raise ConfigError(f"empty must be 'skip' or 'error', got {empty!r}")


def _raise_all_blank(where: str, lines: int, what: str) -> None:
    raise DataError(f"{where}: all {lines:,} lines are blank ({what}); the file holds no text: "
                    f"check that it is the right file and was fully written (min_freq or vocab_size will not help)")


@dataclass
class ParallelText:
    """Source and target sentences, aligned by position; `skipped` counts dropped empty pairs."""

    src: list[str]
    tgt: list[str]
    skipped: int = 0
    origin: str = ""

    def __len__(self) -> int:
        return len(self.src)

    def pairs(self) -> list[tuple[str, str]]:
        return list(zip(self.src, self.tgt))


@dataclass
class ParallelFiles:
    """Two line-aligned files (`src_path` line i translates `tgt_path` line i), read lazily.

    Iterating yields (src, tgt) pairs; afterwards `skipped` holds the number of empty pairs
    left out. A pair is empty when either side is blank.
    """

    src_path: Path
    tgt_path: Path
    empty: EmptyPolicy = "skip"
    skipped: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.src_path, self.tgt_path = Path(self.src_path), Path(self.tgt_path)
        _check_policy(self.empty)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        self.skipped = 0
        src_lines, tgt_lines = iter_lines(self.src_path), iter_lines(self.tgt_path)
        n = 0
        for n, src in src_lines:
            tgt_line = next(tgt_lines, None)
            if tgt_line is None:
                self._raise_mismatch(n - 1, n + sum(1 for _ in src_lines), shorter=self.tgt_path)
            tgt = tgt_line[1]
            if _pair_is_empty(src, tgt, self.empty, f"{self.src_path}:{n}", f"{self.tgt_path}:{n}"):
                self.skipped += 1
                continue
            yield src, tgt
        extra = sum(1 for _ in tgt_lines)
        if extra:
            self._raise_mismatch(n, n + extra, shorter=self.src_path)
        if self.skipped == n:
            _raise_all_blank(f"{self.src_path} + {self.tgt_path}", n, "pair has an empty side")

    def _raise_mismatch(self, short_count: int, long_count: int, shorter: Path) -> None:
        src_count, tgt_count = (short_count, long_count) if shorter == self.src_path else (long_count, short_count)
        raise DataError(
            f"{self.src_path} has {src_count} lines but {self.tgt_path} has {tgt_count}; "
            f"parallel files must have one line per sentence pair"
        )

    def read(self) -> ParallelText:
        """All pairs as lists (fine for corpora that fit in memory, such as Multi30k)."""
        src, tgt = [], []
        for s, t in self:
            src.append(s)
            tgt.append(t)
        return ParallelText(src, tgt, self.skipped, origin=f"{self.src_path} + {self.tgt_path}")


@dataclass
class TsvFile:
    """One file of `source<TAB>target` lines, read lazily; see ParallelFiles for `skipped`."""

    path: Path
    empty: EmptyPolicy = "skip"
    skipped: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        _check_policy(self.empty)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        self.skipped = 0
        n = 0
        for n, line in iter_lines(self.path):
            columns = line.split("\t")
            if len(columns) == 1 and not line.strip():
                columns = ["", ""]  # a blank line is an empty pair, not a column error
            if len(columns) != 2:
                raise DataError(f"{self.path}:{n}: expected 2 tab-separated columns (source, target), "
                                f"found {len(columns)}")
            src, tgt = columns
            if _pair_is_empty(src, tgt, self.empty, f"{self.path}:{n} (source)", f"{self.path}:{n} (target)"):
                self.skipped += 1
                continue
            yield src, tgt
        if self.skipped == n:
            _raise_all_blank(str(self.path), n, "pair has an empty side")

    def read(self) -> ParallelText:
        pairs = list(self)
        return ParallelText([s for s, _ in pairs], [t for _, t in pairs], self.skipped, origin=str(self.path))


def read_parallel(src_path: str | os.PathLike, tgt_path: str | os.PathLike,
                  empty: EmptyPolicy = "skip") -> ParallelText:
    """Read two line-aligned files into memory."""
    return ParallelFiles(Path(src_path), Path(tgt_path), empty).read()


def read_tsv(path: str | os.PathLike, empty: EmptyPolicy = "skip") -> ParallelText:
    """Read a `source<TAB>target` file into memory."""
    return TsvFile(Path(path), empty).read()


def iter_text_lines(path: str | os.PathLike, empty: EmptyPolicy = "skip") -> Iterator[str]:
    """The non-empty lines of a monolingual file, lazily (e.g. to train a tokenizer)."""
    _check_policy(empty)
    kept = n = 0
    for n, line in iter_lines(path):
        if not _check_empty(line, empty, f"{path}:{n}"):
            kept += 1
            yield line
    if not kept:
        _raise_all_blank(str(path), n, "only spaces")


def read_text(path: str | os.PathLike) -> str:
    """A whole monolingual file as one string, newlines kept (the input of a language model)."""
    lines = [line for _, line in iter_lines(path)]
    if not any(line.strip() for line in lines):
        _raise_all_blank(str(path), len(lines), "only spaces")
    return "".join(line + "\n" for line in lines)


def split_files(directory: str | os.PathLike, split: str, src_lang: str, tgt_lang: str) -> tuple[Path, Path]:
    """The source and target files of `split` in a directory of `<split>.<lang>` files.

    `split` is a file prefix ("train", "val", "test_2016_flickr"); "valid"/"val"/"dev" stand for
    one another, and "test" also finds a single `test*.<lang>` file such as `test_2016_flickr.de`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"data directory not found: {directory}")
    for prefix in SPLIT_ALIASES.get(split, (split,)):
        src, tgt = directory / f"{prefix}.{src_lang}", directory / f"{prefix}.{tgt_lang}"
        if src.is_file() or tgt.is_file():
            return src, tgt
    if split == "test":
        found = sorted(p.name.removesuffix(f".{src_lang}") for p in directory.glob(f"test*.{src_lang}"))
        if len(found) == 1:
            return directory / f"{found[0]}.{src_lang}", directory / f"{found[0]}.{tgt_lang}"
        if found:
            raise DataError(f"{directory} has several test sets ({', '.join(found)}); name one as the split")
    available = sorted({p.stem for p in directory.glob(f"*.{src_lang}")})
    raise DataError(f"no {split}.{src_lang} in {directory}; splits there for {src_lang!r}: "
                    f"{', '.join(available) or 'none'}")


def load_split(directory: str | os.PathLike, split: str, src_lang: str, tgt_lang: str,
               empty: EmptyPolicy = "skip") -> ParallelText:
    """Read split `split` of a directory such as Multi30k: `load_split(d, "train", "de", "en")`."""
    return read_parallel(*split_files(directory, split, src_lang, tgt_lang), empty=empty)


def pair_tokenizers(data: DataConfig, pairs: list[tuple[str, str]]):
    """Source and target tokenizers learned from (source, target) pairs: one shared vocabulary
    when data.shared_vocab, else one per side."""
    from qkv.tokenizers import train_tokenizer

    if data.shared_vocab:
        tok = train_tokenizer(data.tokenizer, [t for pair in pairs for t in pair], data.vocab_size, data.min_freq)
        return tok, tok
    return (train_tokenizer(data.tokenizer, [s for s, _ in pairs], data.vocab_size, data.min_freq),
            train_tokenizer(data.tokenizer, [t for _, t in pairs], data.vocab_size, data.min_freq))
