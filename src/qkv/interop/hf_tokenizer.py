"""qkv tokenizers as Hugging Face fast tokenizers (`PreTrainedTokenizerFast`), the same ids.

- bpe:  qkv's BPE already is a Hugging Face `tokenizers` model; it is saved as it is.
- char: a WordLevel model over the characters, splitting the text into single characters and
        joining them back with nothing in between.
- word: a WordLevel model over the words, splitting on whitespace, then into runs of letters
        and digits and single punctuation marks; decoding joins tokens with one space, as qkv does.

Sources get no special tokens (qkv feeds the source as it is); `generate()` starts the target
from <bos> by itself. When source and target use different tokenizers, the export directory holds
the source tokenizer (what `AutoTokenizer.from_pretrained(DIR)` loads, to encode inputs) and the
target tokenizer in `DIR/target_tokenizer` (to decode outputs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qkv.config import ModelConfig
from qkv.errors import ConfigError
from qkv.interop.common import require_transformers

TARGET_TOKENIZER_DIR = "target_tokenizer"
_WORD_PATTERN = r"\w+|[^\w\s]"


def hf_tokenizer_model(tokenizer: Any) -> Any:
    """A `tokenizers.Tokenizer` that encodes and decodes like the qkv `tokenizer`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    if tokenizer.kind == "bpe":
        return Tokenizer.from_str(tokenizer.hf.to_str())
    vocab = {token: i for i, token in enumerate(tokenizer.vocab)}
    hf = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    if tokenizer.kind == "char":
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        hf.decoder = decoders.Fuse()
    elif tokenizer.kind == "word":
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(_WORD_PATTERN), behavior="isolated")]
        )
    else:
        raise ConfigError(f"tokenizer kind {tokenizer.kind!r} has no Hugging Face export; use bpe, char or word")
    hf.add_special_tokens(["<pad>", "<bos>", "<eos>", "<unk>"])
    return hf


def to_hf_tokenizer(tokenizer: Any, cfg: ModelConfig) -> Any:
    """The `PreTrainedTokenizerFast` for a qkv tokenizer, with qkv's special tokens named."""
    transformers = require_transformers()
    names = {cfg.pad_id: "pad_token", cfg.bos_id: "bos_token", cfg.eos_id: "eos_token", cfg.unk_id: "unk_token"}
    specials = {name: tokenizer.id_to_token(i) for i, name in names.items()}
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=hf_tokenizer_model(tokenizer), split_special_tokens=True, **specials
    )


def save_hf_tokenizers(out: Path, src_tokenizer: Any | None, tgt_tokenizer: Any, cfg: ModelConfig) -> None:
    """Write the tokenizer(s) of a run next to the exported model (see the module docstring)."""
    first = src_tokenizer if src_tokenizer is not None else tgt_tokenizer
    to_hf_tokenizer(first, cfg).save_pretrained(out)
    if src_tokenizer is not None and src_tokenizer is not tgt_tokenizer:
        to_hf_tokenizer(tgt_tokenizer, cfg).save_pretrained(out / TARGET_TOKENIZER_DIR)
