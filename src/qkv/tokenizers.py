"""Tokenizers: text <-> integer ids, three kinds behind one interface.

- `CharTokenizer`: one id per character (the built-in tasks, Tiny Shakespeare).
- `WordTokenizer`: words and punctuation marks, rare words become `<unk>`.
- `BPETokenizer`: byte-level BPE trained with Hugging Face `tokenizers`; every Unicode string
  round-trips exactly (spaces, newlines, emoji), so it never needs `<unk>`.

Every kind reserves the same four special tokens at the same ids, the defaults of `ModelConfig`:
`<pad>=0 <bos>=1 <eos>=2 <unk>=3`. `encode` never adds `<bos>`/`<eos>`: the batching code adds
them where the model needs them (`tgt_in = <bos> y`, `tgt_out = y <eos>`). `decode` skips them.

A tokenizer is saved as one JSON file (`{"qkv_tokenizer": 1, "kind": ..., ...}`) and loaded with
`load_tokenizer(path)`, which reads the kind from the file.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from qkv.files import atomic_write_bytes
from qkv.errors import ConfigError, DataError, QkvWarning

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
FORMAT_VERSION = 1


class Tokenizer(ABC):
    """What every tokenizer offers. Subclasses say how text splits into tokens."""

    kind: ClassVar[str]

    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """The ids of `text`, without `<bos>`/`<eos>`."""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`; special ids (pad, bos, eos, unk) are skipped."""

    @abstractmethod
    def tokens(self, text: str) -> list[str]:
        """Readable strings, one per id of `encode(text)`, for display."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, special tokens included: ids run from 0 to vocab_size - 1."""

    @abstractmethod
    def id_to_token(self, i: int) -> str:
        """The token string of id `i` (raises DataError when `i` is out of range)."""

    @abstractmethod
    def token_to_id(self, token: str) -> int | None:
        """The id of `token`, or None when it is not in the vocabulary."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready content of the saved file, without the common header."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict[str, Any], origin: str) -> Tokenizer:
        """Rebuild from `to_dict` output; `origin` names the file in error messages."""

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` for many texts at once (BPE runs them in parallel)."""
        return [self.encode(t) for t in texts]

    def to_bytes(self) -> bytes:
        """The tokenizer's JSON file, as `save` writes it (`load_tokenizer` reads it)."""
        data = {"qkv_tokenizer": FORMAT_VERSION, "kind": self.kind, **self.to_dict()}
        return json.dumps(data, ensure_ascii=False).encode("utf-8")

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as one JSON file, atomically."""
        atomic_write_bytes(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Load a saved tokenizer; on a subclass, also check that the file holds that kind."""
        tok = load_tokenizer(path)
        if not isinstance(tok, cls):
            raise DataError(f"{path} holds a {tok.kind} tokenizer, not {cls.kind}; use load_tokenizer()")
        return tok

    def _check_id(self, i: int) -> None:
        if not 0 <= i < self.vocab_size:
            raise DataError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


def checked_text(text: str, where: str = "the text") -> str:
    """`text` itself if it is valid Unicode (encodable as UTF-8), else one DataError.

    Python keeps undecodable bytes of a command-line argument or a file read with
    errors="surrogateescape" as lone surrogates (\\udc80-\\udcff); every tokenizer refuses them the
    same way, instead of mapping them to <unk> (char, word) or failing deep inside (BPE).
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(f"{where} is not valid UTF-8: character {exc.start} is {text[exc.start]!r} "
                        f"(an undecodable byte or lone surrogate); convert the input to UTF-8") from None
    except AttributeError:
        raise DataError(f"{where} must be a string, got {type(text).__name__}") from None
    return text


class VocabTokenizer(Tokenizer):
    """A tokenizer with an explicit list of tokens: id i is `vocab[i]`; the first four are special."""

    def __init__(self, vocab: Sequence[str]):
        vocab = list(vocab)
        if tuple(vocab[:4]) != SPECIAL_TOKENS:
            raise DataError(f"a vocabulary must start with {', '.join(SPECIAL_TOKENS)}; got {vocab[:4]}")
        if len(set(vocab)) != len(vocab):
            dupes = [t for t, c in Counter(vocab).items() if c > 1]
            raise DataError(f"the vocabulary repeats tokens {dupes[:5]}; every token must be unique")
        self.vocab = vocab
        self._ids = {t: i for i, t in enumerate(vocab)}

    @staticmethod
    @abstractmethod
    def split(text: str) -> list[str]:
        """Cut `text` into token strings (before the vocabulary lookup)."""

    @staticmethod
    @abstractmethod
    def join(tokens: list[str]) -> str:
        """Put token strings back together into text."""

    def encode(self, text: str) -> list[int]:
        get = self._ids.get
        return [get(t, UNK_ID) for t in self.split(checked_text(text))]

    def decode(self, ids: Iterable[int]) -> str:
        ids = list(ids)
        if ids and not 0 <= min(ids) <= max(ids) < len(self.vocab):
            self._check_id(min(ids) if min(ids) < 0 else max(ids))
        vocab = self.vocab
        return self.join([vocab[i] for i in ids if i >= len(SPECIAL_TOKENS)])

    def tokens(self, text: str) -> list[str]:
        return [self.vocab[i] for i in self.encode(text)]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def id_to_token(self, i: int) -> str:
        self._check_id(i)
        return self.vocab[i]

    def token_to_id(self, token: str) -> int | None:
        return self._ids.get(token)

    def to_dict(self) -> dict[str, Any]:
        return {"vocab": self.vocab}

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str) -> VocabTokenizer:
        vocab = data.get("vocab")
        if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
            raise DataError(f"{origin}: 'vocab' must be a list of strings; re-save the tokenizer")
        return cls(vocab)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int | None = None, min_freq: int = 1) -> VocabTokenizer:
        """Keep the tokens seen at least `min_freq` times, most frequent first, at most `vocab_size`
        ids in all (special tokens included); ties are broken alphabetically so training is
        deterministic."""
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(cls.split(checked_text(text, "training text")))
        kept = sorted((t for t, c in counts.items() if c >= min_freq and t not in SPECIAL_TOKENS),
                      key=lambda t: (-counts[t], t))
        if vocab_size is not None:
            kept = kept[: max(vocab_size - len(SPECIAL_TOKENS), 0)]
        if not kept:
            raise DataError(f"no {cls.kind} token occurs {min_freq} or more times; "
                            f"give more text or lower min_freq")
        return cls([*SPECIAL_TOKENS, *kept])


class CharTokenizer(VocabTokenizer):
    """One id per Unicode character; characters outside the training alphabet become `<unk>`."""

    kind = "char"

    @staticmethod
    def split(text: str) -> list[str]:
        return list(text)

    @staticmethod
    def join(tokens: list[str]) -> str:
        return "".join(tokens)

    @classmethod
    def from_alphabet(cls, alphabet: Iterable[str]) -> CharTokenizer:
        """A tokenizer for a known alphabet (e.g. a built-in task's), in sorted order."""
        chars = sorted(set(alphabet))
        if any(len(c) != 1 for c in chars):
            raise DataError("an alphabet must be single characters; pass a string such as 'abc'")
        return cls([*SPECIAL_TOKENS, *chars])


_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class WordTokenizer(VocabTokenizer):
    """Words (runs of letters/digits) and single punctuation marks, split on whitespace.

    Decoding joins tokens with one space, so the original spacing is not restored exactly
    ("Hello, world!" decodes to "Hello , world !"). Use BPE where exact text matters.
    """

    kind = "word"

    @staticmethod
    def split(text: str) -> list[str]:
        return _WORD.findall(text)

    @staticmethod
    def join(tokens: list[str]) -> str:
        return " ".join(tokens)


# The largest BPE vocabulary trained here: 4x the largest in use (about 256k). The trainer of
# `tokenizers` allocates for the whole vocabulary up front and aborts the process when it cannot.
MAX_BPE_VOCAB = 1_000_000
# BPE training time grows with the square of a word's length inside the tokenizers library (a
# 100,000-character word: ~10 s; 1,000,000: minutes; 50 MB: the process aborts), so longer
# training lines never reach it: they are skipped with one warning (docs/training.md).
MAX_TRAIN_LINE_CHARS = 100_000


def _short_lines(texts: Iterable[str], limit: int | None = None) -> Iterator[str]:
    """The training texts of at most `limit` characters (default MAX_TRAIN_LINE_CHARS), each
    checked as Unicode; one QkvWarning at the end names how many longer ones were skipped."""
    limit = MAX_TRAIN_LINE_CHARS if limit is None else limit
    skipped, longest = 0, 0
    for text in texts:
        if isinstance(text, str) and len(text) > limit:
            skipped, longest = skipped + 1, max(longest, len(text))
            continue
        yield checked_text(text, "training text")
    if skipped:
        warnings.warn(f"skipped {skipped:,} tokenizer training line{'s' if skipped > 1 else ''} longer than "
                      f"{limit:,} characters (the longest {longest:,}); BPE cannot learn from such lines: "
                      f"split them at sentence or paragraph ends", QkvWarning, stacklevel=2)


class BPETokenizer(Tokenizer):
    """Byte-level BPE (as in GPT-2), trained and run by the Hugging Face `tokenizers` library.

    Text is read as UTF-8 bytes, so any string round-trips: `decode(encode(x)) == x`. Special
    token strings typed in the text (a literal "<eos>") are encoded as ordinary text.
    """

    kind = "bpe"

    def __init__(self, hf: HFTokenizer):
        for i, token in enumerate(SPECIAL_TOKENS):
            if hf.token_to_id(token) != i:
                raise DataError(f"BPE tokenizer must have {token} at id {i}; retrain it with qkv")
        hf.encode_special_tokens = True  # "<eos>" typed in the text is text, not the eos id
        self.hf = hf
        self._byte_of = {c: b for b, c in _bytes_to_unicode().items()}

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8000, min_freq: int = 2) -> BPETokenizer:
        """Learn merges until `vocab_size` ids (special tokens and the 256 bytes included) or
        until no pair occurs `min_freq` times."""
        if not len(SPECIAL_TOKENS) + 256 <= vocab_size <= MAX_BPE_VOCAB:
            raise ConfigError(f"a byte-level BPE vocabulary needs 260 to {MAX_BPE_VOCAB:,} ids, got {vocab_size:,}")
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_freq,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator(_short_lines(texts), trainer)
        return cls(hf)

    def encode(self, text: str) -> list[int]:
        if len(text) > MAX_TRAIN_LINE_CHARS:
            return self.encode_batch([text])[0]
        return self.hf.encode(checked_text(text)).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text; a text over MAX_TRAIN_LINE_CHARS goes to the library in pieces cut
        before a space (the byte-level pre-tokenizer starts a word there, so the ids are the same
        unless a piece has no space to cut at), which keeps its time and memory linear."""
        if all(len(t) <= MAX_TRAIN_LINE_CHARS for t in texts):
            return [e.ids for e in self.hf.encode_batch([checked_text(t) for t in texts])]
        out = []
        for text in texts:
            pieces = _pieces(checked_text(text), MAX_TRAIN_LINE_CHARS)
            ids: list[int] = []
            for k in range(0, len(pieces), 8):  # the library's Encoding objects are large: a few at once
                ids.extend(i for e in self.hf.encode_batch(pieces[k:k + 8]) for i in e.ids)
            out.append(ids)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=True)

    def tokens(self, text: str) -> list[str]:
        """The text each token covers. A token holding part of a multi-byte character (emoji,
        Korean) shows its bytes as `\\xNN` escapes."""
        return [self.display(t) for t in self.hf.encode(checked_text(text)).tokens]

    def display(self, token: str) -> str:
        """A byte-level token string ("Ġcat") as readable text (" cat")."""
        if token in SPECIAL_TOKENS:
            return token
        raw = bytes(self._byte_of[c] for c in token)
        return raw.decode("utf-8", errors="backslashreplace")

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def id_to_token(self, i: int) -> str:
        self._check_id(i)
        return self.hf.id_to_token(i)

    def token_to_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    def to_dict(self) -> dict[str, Any]:
        return {"hf": json.loads(self.hf.to_str())}

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str) -> BPETokenizer:
        try:
            hf = HFTokenizer.from_str(json.dumps(data["hf"]))
        except Exception as exc:  # a missing key, or the Rust parser's plain Exception
            raise DataError(f"{origin}: the BPE model cannot be read ({_first_line(exc)}); "
                            f"retrain and save the tokenizer") from None
        return cls(hf)


def _pieces(text: str, limit: int) -> list[str]:
    """`text` cut into pieces of at most `limit` characters, each cut just before a space in the
    second half of the window where there is one."""
    pieces, start = [], 0
    while len(text) - start > limit:
        cut = text.rfind(" ", start + limit // 2, start + limit)
        cut = cut if cut > start else start + limit
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (the alphabet of byte-level BPE)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


KINDS: dict[str, type[Tokenizer]] = {"char": CharTokenizer, "word": WordTokenizer, "bpe": BPETokenizer}


def train_tokenizer(
    kind: str, texts: Iterable[str], vocab_size: int | None = None, min_freq: int | None = None
) -> Tokenizer:
    """Train a tokenizer of `kind` ("char", "word" or "bpe") on `texts`.

    vocab_size: the most ids in all, special tokens included (BPE default 8000; char/word: no cap).
    min_freq: how often a token (char/word, default 1) or a merged pair (BPE, default 2) must occur.
    """
    cls = tokenizer_class(kind)
    kwargs: dict[str, int] = {}
    if vocab_size is not None:
        kwargs["vocab_size"] = vocab_size
    if min_freq is not None:
        kwargs["min_freq"] = min_freq
    return cls.train(texts, **kwargs)  # type: ignore[attr-defined]


def tokenizer_class(kind: str) -> type[Tokenizer]:
    """The class of tokenizer `kind`, or a ConfigError naming the valid kinds."""
    try:
        return KINDS[kind]
    except KeyError:
        raise ConfigError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}") from None


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer saved by `Tokenizer.save`, of whichever kind the file says."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"tokenizer file not found: {path}")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except RecursionError:
        raise DataError(f"{path} is not a tokenizer JSON file (nested too deeply); "
                        f"give the file written by Tokenizer.save or `qkv tokenize --save`") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DataError(f"{path} is not a tokenizer JSON file (not valid JSON); "
                        f"give the file written by Tokenizer.save or `qkv tokenize --save`") from None
    if not isinstance(data, dict) or "qkv_tokenizer" not in data:
        raise DataError(f"{path} is JSON but not a qkv tokenizer (no 'qkv_tokenizer' key); "
                        f"give the file written by Tokenizer.save")
    if data["qkv_tokenizer"] != FORMAT_VERSION:
        raise DataError(f"{path} has tokenizer format {data['qkv_tokenizer']!r}; this qkv reads "
                        f"format {FORMAT_VERSION}; retrain the tokenizer")
    kind = data.get("kind")
    if kind not in KINDS:
        raise DataError(f"{path} has unknown tokenizer kind {kind!r}; expected one of {', '.join(KINDS)}")
    return KINDS[kind].from_dict(data, str(path))
