"""Configuration dataclasses, validated on construction, stored as TOML.

A config is plain data: `ModelConfig` says what the network is; the training and decoding
configs (defined next to the code that uses them) say how it is trained and run. Unknown keys
are errors that name the nearest valid key, so a typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from qkv.errors import ConfigError

T = TypeVar("T")

ARCHS = ("encoder-decoder", "decoder-only")
POSITIONALS = ("sinusoidal", "learned", "rope")
ACTIVATIONS = ("relu", "gelu", "swiglu")
NORMS = ("layernorm", "rmsnorm")


@dataclass
class ModelConfig:
    """The shape of a Transformer. Defaults are the paper's base model (Vaswani et al., 2017)."""

    src_vocab_size: int = 0          # 0 for a decoder-only model
    tgt_vocab_size: int = 0          # the output vocabulary (the only one for decoder-only)
    arch: str = "encoder-decoder"    # or "decoder-only" (GPT-style)
    d_model: int = 512
    n_heads: int = 8
    n_encoder_layers: int = 6
    n_decoder_layers: int = 6
    d_ff: int = 2048
    dropout: float = 0.1             # on embeddings, attention outputs and FFN outputs
    attention_dropout: float = 0.0   # on the softmax weights
    activation: str = "relu"         # position-wise feed-forward non-linearity; "swiglu": gated, 2/3 d_ff wide
    norm_first: bool = False         # False: post-LN (the paper); True: pre-LN (GPT-2 and most since)
    positional: str = "sinusoidal"   # or "learned", or "rope" (rotary: rotates q and k in attention)
    max_len: int = 512               # longest sequence the positional encoding covers
    tie_embeddings: bool = True      # output projection shares the target embedding matrix
    share_embeddings: bool = False   # source and target share one embedding (needs one vocabulary)
    scale_embeddings: bool = True    # multiply token embeddings by sqrt(d_model), as in the paper
    layer_norm_eps: float = 1e-5
    bias: bool = True                # biases in every linear layer (q, k, v, out, FFN); LayerNorm keeps its own
    norm: str = "layernorm"          # or "rmsnorm" (no centring, no bias; Llama and most since)
    n_kv_heads: int = 0              # key/value heads; 0 = n_heads (multi-head), 1 = multi-query, else grouped
    rope_theta: float = 10000.0      # base of RoPE's wavelengths (the paper's 10000)
    qk_norm: bool = False            # RMSNorm on each head's queries and keys before Q K^T (QK-norm)
    logit_softcap: float = 0.0       # > 0: output logits = cap * tanh(logits / cap) (Gemma 2); 0 = off
    value_embeddings: bool = False   # decoder-only: each layer adds a learned vector per token to its values
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    unk_id: int = 3

    def __post_init__(self) -> None:
        self.validate()

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        """Heads of keys and values: n_heads unless grouped-query / multi-query attention."""
        return self.n_kv_heads or self.n_heads

    @property
    def vocab_size(self) -> int:
        """The output vocabulary size (the only vocabulary of a decoder-only model)."""
        return self.tgt_vocab_size

    def validate(self) -> None:
        check_ranges("model", self, MODEL_RANGES)
        check_choices("model", self, {"arch": ARCHS, "positional": POSITIONALS, "activation": ACTIVATIONS,
                                      "norm": NORMS})
        for name in ("d_model", "n_heads", "d_ff", "max_len", "tgt_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"model.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads != 0:
            raise ConfigError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_heads "
                f"({self.n_heads}); try n_heads in {_divisors(self.d_model)}"
            )
        if self.positional == "sinusoidal" and self.d_model % 2 != 0:
            raise ConfigError(f"sinusoidal positions need an even model.d_model, got {self.d_model}")
        if self.positional == "rope" and self.d_head % 2 != 0:
            raise ConfigError(f"rope rotates pairs of dimensions: d_model/n_heads must be even, got {self.d_head}")
        if self.n_kv_heads < 0 or self.n_kv_heads > self.n_heads or self.n_heads % self.kv_heads != 0:
            raise ConfigError(
                f"model.n_kv_heads ({self.n_kv_heads}) must divide model.n_heads ({self.n_heads}); "
                f"try one of {_divisors(self.n_heads)} (or 0 for n_heads)"
            )
        if self.arch == "encoder-decoder":
            if self.n_encoder_layers < 1:
                raise ConfigError(f"model.n_encoder_layers must be >= 1, got {self.n_encoder_layers}")
            if self.src_vocab_size < 1:
                raise ConfigError(
                    f"model.src_vocab_size must be a positive integer for an encoder-decoder, "
                    f"got {self.src_vocab_size}"
                )
            if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
                raise ConfigError(
                    f"model.share_embeddings needs one vocabulary, but src_vocab_size="
                    f"{self.src_vocab_size} and tgt_vocab_size={self.tgt_vocab_size}"
                )
        if self.value_embeddings and self.arch != "decoder-only":
            raise ConfigError("model.value_embeddings is for decoder-only models (the values of a causal stack "
                              "over one vocabulary); set it to false for an encoder-decoder")
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {value}")
        ids = {"pad_id": self.pad_id, "bos_id": self.bos_id, "eos_id": self.eos_id, "unk_id": self.unk_id}
        for name, value in ids.items():
            if not 0 <= value < self.tgt_vocab_size:
                raise ConfigError(
                    f"model.{name}={value} is outside the vocabulary (size {self.tgt_vocab_size})"
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], section: str = "model") -> ModelConfig:
        return from_dict(cls, data, section)


# Numeric [model] options beyond the positive sizes checked in validate (interval notation; every
# float must also be finite). Whether a model of that size fits the machine: qkv.run.fits.check_model_fits.
MODEL_RANGES = {
    "src_vocab_size": "[0, inf)", "n_kv_heads": "[0, inf)", "layer_norm_eps": "(0, 1)", "rope_theta": "(1, inf)",
    "logit_softcap": "[0, inf)",                                          # 0: no cap
    "n_encoder_layers": "[0, 1024]", "n_decoder_layers": "[1, 1024]",    # deeper than any trained Transformer
}


def check_choices(section: str, obj: Any, choices: dict[str, tuple[str, ...]]) -> None:
    """Each field named in `choices` holds one of its listed values, or one ConfigError line."""
    for name, valid in choices.items():
        value = getattr(obj, name)
        if value not in valid:
            raise ConfigError(f"{section}.{name} must be one of {', '.join(valid)}; got {value!r}")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, min(n, 64) + 1) if n % d == 0]


def from_dict(cls: type[T], data: dict[str, Any], section: str) -> T:
    """Build dataclass `cls` from `data`, naming the nearest valid key for any unknown one."""
    if not isinstance(data, dict):
        raise ConfigError(f"[{section}] must be a table of key = value pairs, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in known:
            raise ConfigError(unknown_key_message(f"{section}.{key}", key, list(known), section))
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(f"{section}.{key}", value, known[key])
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - dataclass signature mismatch
        raise ConfigError(f"[{section}]: {exc}") from None


def unknown_key_message(full: str, key: str, valid: list[str], section: str) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {section}.{close[0]}?" if close else f"; valid keys: {', '.join(sorted(valid))}"
    return f"unknown config key {full!r}{hint}"


def _coerce(name: str, value: Any, field: dataclasses.Field) -> Any:
    """Check a TOML value against the field's declared type (ints may stand for floats)."""
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    kind = kind.replace(" ", "")
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value}")
    elif kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# Ranges: every option's valid values, declared next to its dataclass and checked here
# ---------------------------------------------------------------------------------------------

INT64_MAX = 2**63 - 1


def check_ranges(section: str, obj: Any, ranges: dict[str, str]) -> None:
    """Check the fields of dataclass `obj` against interval rules; one ConfigError for the first miss.

    ranges: field name -> an interval in maths notation, e.g. "(0, inf)", "[0, 1)", "[1, inf)".
    Every float field must also be finite (NaN and infinity are never a meaningful option), and
    every int field must fit in 64 bits (what seeds and counters are stored in).

        check_ranges("train", cfg, {"lr": "(0, inf)", "beta2": "[0, 1)"})
    """
    for f in fields(obj):
        value = getattr(obj, f.name)
        name = f"{section}.{f.name}" if section else f.name
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value}")
        if isinstance(value, int) and abs(value) > INT64_MAX:
            raise ConfigError(f"{name} must fit in 64 bits (|x| <= {INT64_MAX}), got {value}")
        rule = ranges.get(f.name)
        if rule is not None and not _in_interval(value, rule):
            raise ConfigError(f"{name} must be in {rule}, got {value}")


def _in_interval(value: float, rule: str) -> bool:
    low_open, high_open = rule[0] == "(", rule[-1] == ")"
    low, high = (float(x) for x in rule[1:-1].split(","))
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    return above and below


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse a command-line override `section.key=value` (value in TOML syntax, bare strings ok)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. model.d_model=256")
    path, raw = text.split("=", 1)
    keys = [k.strip() for k in path.strip().split(".") if k.strip()]
    if not keys:
        raise ConfigError(f"override {text!r} has no key before '='")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word such as model.activation=gelu
    except RecursionError:
        raise ConfigError(f"override {path.strip()}=... nests arrays or tables too deeply; give a plain value") from None
    return keys, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of nested dict `data` with `section.key=value` overrides applied."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {k} is not a section")
        node[keys[-1]] = value
    return out


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    except RecursionError:
        raise ConfigError(f"{path} nests arrays or tables too deeply to be a config; a qkv config has "
                          f"[model], [train] and [data] sections of plain values") from None
