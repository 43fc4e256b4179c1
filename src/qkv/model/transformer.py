"""The two Transformers: encoder-decoder (translation) and decoder-only (GPT-style language model)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from qkv.config import ModelConfig
from qkv.errors import ConfigError, ShapeError
from qkv.model.attention import KVCache, row_moves
from qkv.model.layers import DecoderLayer, Embeddings, EncoderLayer, LogitSoftCap, make_norm
from qkv.model.masks import causal_padding_mask, padding_mask
from qkv.model.record import Calls, note


@dataclass
class DecoderCache:
    """Everything incremental decoding keeps between steps.

    self_attn: one KVCache per decoder layer (grows by one position per step);
    cross_attn: one KVCache per layer holding the encoder's keys/values (computed once);
    key_mask: (B, T_past) True where the past decoder token was real (not padding).
    """

    self_attn: list[KVCache]
    cross_attn: list[KVCache] = field(default_factory=list)
    key_mask: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.key_mask is None else self.key_mask.size(1)

    def extend_keys(self, real: torch.Tensor) -> torch.Tensor:
        """Remember which new positions (B, T) are real; return the mask of all keys (B, T_past + T)."""
        self.key_mask = real if self.key_mask is None else torch.cat([self.key_mask, real], dim=1)
        return self.key_mask

    def reorder(self, index: torch.Tensor, same_sources: bool = False) -> None:
        """Keep batch rows `index` (beam search), in every layer's cache. `same_sources`: every row
        of `index` comes from a row of the same source sentence (beam search reordering its beams),
        so the cross-attention keys/values, identical across those rows, stay as they are."""
        same_size = self.key_mask is not None and index.numel() == self.key_mask.size(0)
        moves = row_moves(index) if same_size else None       # the same rows move in every layer
        for c in (*self.self_attn, *([] if same_sources else self.cross_attn)):
            c.reorder(index, moves)
        if self.key_mask is not None:
            self.key_mask = self.key_mask.index_select(0, index)


def decoder_mask(ids: torch.Tensor, pad_id: int, cache: DecoderCache | None = None) -> torch.Tensor:
    """The decoder's self-attention mask for token ids (B, T): causal and hiding padded keys,
    over the cached past when decoding incrementally: (B, 1, T, T_past + T)."""
    real = ids != pad_id                                                # (B, T)
    keys = cache.extend_keys(real) if cache is not None else real       # (B, T_past + T)
    return causal_padding_mask(keys, ids.size(1))


class Encoder(nn.Module):
    """A stack of encoder layers (plus a final LayerNorm for pre-LN)."""

    record: Calls | None = None         # see qkv.model.record

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_encoder_layers))
        self.norm = make_norm(cfg) if cfg.norm_first else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: embedded source (B, S, d_model); mask: (B, 1, 1, S) -> memory (B, S, d_model)."""
        for layer in self.layers:
            x = layer(x, mask)
        out = self.norm(x) if self.norm is not None else x
        note(self, output=out)
        return out


class Decoder(nn.Module):
    """A stack of decoder layers; `cross=False` drops cross-attention (decoder-only models)."""

    record: Calls | None = None         # see qkv.model.record

    def __init__(self, cfg: ModelConfig, cross: bool = True):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg, cross) for _ in range(cfg.n_decoder_layers))
        self.norm = make_norm(cfg) if cfg.norm_first else None
        self.cross = cross

    def new_cache(self) -> DecoderCache:
        n = len(self.layers)
        return DecoderCache([KVCache() for _ in range(n)], [KVCache() for _ in range(n)] if self.cross else [])

    def forward(
        self,
        x: torch.Tensor,
        self_mask: torch.Tensor | None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        cache: DecoderCache | None = None,
        ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: embedded target (B, T, d_model); self_mask: see `decoder_mask`; memory: the encoder
        output (B, S, d_model) with its padding mask (B, 1, 1, S); ids: the tokens (B, T), which value
        embeddings add to the values. Returns (B, T, d_model)."""
        for i, layer in enumerate(self.layers):
            x = layer(
                x, self_mask, memory, memory_mask,
                self_cache=cache.self_attn[i] if cache is not None else None,
                cross_cache=cache.cross_attn[i] if cache is not None and self.cross else None,
                ids=ids,
            )
        out = self.norm(x) if self.norm is not None else x
        note(self, output=out)
        return out


def _init_linear_weights(module: nn.Module) -> None:
    """Xavier-uniform for every matrix of the attention and feed-forward layers (as nn.Transformer)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _check_ids(ids: torch.Tensor, vocab_size: int, name: str) -> None:
    if ids.dim() != 2:
        raise ShapeError(f"{name} must be token ids of shape (B, T), got shape {tuple(ids.shape)}")
    if ids.dtype not in (torch.long, torch.int32):
        raise ShapeError(f"{name} must be an integer tensor, got {ids.dtype}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ShapeError(f"{name} holds ids outside the vocabulary [0, {vocab_size}): min {int(ids.min())}, max {int(ids.max())}")


class EncoderDecoder(nn.Module):
    """The original Transformer: an encoder reads the source, a decoder writes the target.

    logits = model(src, tgt_in): src (B, S) and tgt_in (B, T) token ids -> (B, T, V) where
    tgt_in is the target shifted right (<bos> y1 .. y_{T-1}), the input of teacher forcing.
    Padding masks are derived from pad_id.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.arch != "encoder-decoder":
            raise ConfigError(f"EncoderDecoder needs model.arch = 'encoder-decoder', got {cfg.arch!r}")
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg, cross=True)
        _init_linear_weights(self)
        self.src_embed = Embeddings(cfg.src_vocab_size, cfg)
        self.tgt_embed = self.src_embed if cfg.share_embeddings else Embeddings(cfg.tgt_vocab_size, cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.tgt_vocab_size, bias=False)
        if cfg.tie_embeddings:                                            # the paper, section 3.4
            self.lm_head.weight = self.tgt_embed.token.weight
        else:                                                             # untied: an output matrix of its own
            nn.init.normal_(self.lm_head.weight, std=cfg.d_model**-0.5)
        self.softcap = LogitSoftCap(cfg.logit_softcap) if cfg.logit_softcap > 0 else None

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S) -> memory (B, S, d_model) and its padding mask (B, 1, 1, S)."""
        _check_ids(src, self.cfg.src_vocab_size, "src")
        src_mask = padding_mask(src, self.cfg.pad_id)
        return self.encoder(self.src_embed(src), src_mask), src_mask

    def decode(
        self,
        tgt_in: torch.Tensor,
        memory: torch.Tensor | None,
        src_mask: torch.Tensor,
        cache: DecoderCache | None = None,
    ) -> torch.Tensor:
        """tgt_in (B, T) -> logits (B, T, V). With a cache, tgt_in holds only the new positions
        (and memory may be None once the cache holds the encoder's keys/values)."""
        _check_ids(tgt_in, self.cfg.tgt_vocab_size, "tgt_in")
        start = cache.length if cache is not None else 0
        self_mask = decoder_mask(tgt_in, self.cfg.pad_id, cache)          # (B, 1, T, T_past + T)
        h = self.decoder(self.tgt_embed(tgt_in, start), self_mask, memory, src_mask, cache)
        logits: torch.Tensor = self.lm_head(h)                           # (B, T, V)
        if self.softcap is not None:
            logits = self.softcap(logits)                                 # cap * tanh(logits / cap)
        return logits

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: src (B, S), tgt_in (B, T) -> logits (B, T, V)."""
        memory, src_mask = self.encode(src)
        return self.decode(tgt_in, memory, src_mask)

    def new_cache(self) -> DecoderCache:
        return self.decoder.new_cache()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class DecoderOnly(nn.Module):
    """A GPT-style language model: one causally masked stack that predicts the next token.

    logits = model(ids): (B, T) -> (B, T, V); logits[:, t] is the distribution of token t+1.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.arch != "decoder-only":
            raise ConfigError(f"DecoderOnly needs model.arch = 'decoder-only', got {cfg.arch!r}")
        self.cfg = cfg
        self.decoder = Decoder(cfg, cross=False)
        _init_linear_weights(self)
        self.embed = Embeddings(cfg.tgt_vocab_size, cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.tgt_vocab_size, bias=False)
        if cfg.tie_embeddings:                                            # the paper, section 3.4
            self.lm_head.weight = self.embed.token.weight
        else:                                                             # untied: an output matrix of its own
            nn.init.normal_(self.lm_head.weight, std=cfg.d_model**-0.5)
        self.softcap = LogitSoftCap(cfg.logit_softcap) if cfg.logit_softcap > 0 else None

    def forward(self, ids: torch.Tensor, cache: DecoderCache | None = None) -> torch.Tensor:
        """ids (B, T) -> logits (B, T, V). With a cache, ids holds only the new positions."""
        _check_ids(ids, self.cfg.tgt_vocab_size, "ids")
        start = cache.length if cache is not None else 0
        mask = decoder_mask(ids, self.cfg.pad_id, cache)                   # (B, 1, T, T_past + T)
        h = self.decoder(self.embed(ids, start), mask, cache=cache, ids=ids)
        logits: torch.Tensor = self.lm_head(h)                           # (B, T, V)
        if self.softcap is not None:
            logits = self.softcap(logits)                                 # cap * tanh(logits / cap)
        return logits

    def new_cache(self) -> DecoderCache:
        return self.decoder.new_cache()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_model(cfg: ModelConfig) -> EncoderDecoder | DecoderOnly:
    """The model class that `cfg.arch` names."""
    return EncoderDecoder(cfg) if cfg.arch == "encoder-decoder" else DecoderOnly(cfg)
