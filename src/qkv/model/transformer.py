"""The two Transformers: encoder-decoder (translation) and decoder-only (GPT-style language model)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from qkv.config import ModelConfig
from qkv.errors import ConfigError, ShapeError
from qkv.model.attention import KVCache, row_moves
from qkv.model.layers import DecoderLayer, Embeddings, EncoderLayer
from qkv.model.masks import Packing, causal_mask, padding_mask


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
    source_unpadded: bool | None = None    # no source padding (set at the first step): no cross-attention mask
    output_weight_t: torch.Tensor | None = None   # (d_model, V) copy of the output layer, made at the first step

    @property
    def length(self) -> int:
        return 0 if self.key_mask is None else self.key_mask.size(1)

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


class Encoder(nn.Module):
    """A stack of encoder layers (plus a final LayerNorm for pre-LN)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_encoder_layers))
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps) if cfg.norm_first else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor, packing: Packing | None = None) -> torch.Tensor:
        """x: embedded source (B, S, d_model), or its (N, d_model) real-token rows with `packing`."""
        for layer in self.layers:
            x = layer(x, mask, packing)
        return self.norm(x) if self.norm is not None else x


class Decoder(nn.Module):
    """A stack of decoder layers; `cross=False` drops cross-attention (decoder-only models)."""

    def __init__(self, cfg: ModelConfig, cross: bool = True):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg, cross) for _ in range(cfg.n_decoder_layers))
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps) if cfg.norm_first else None
        self.cross = cross

    def new_cache(self) -> DecoderCache:
        n = len(self.layers)
        return DecoderCache([KVCache() for _ in range(n)], [KVCache() for _ in range(n)] if self.cross else [])

    def forward(
        self,
        x: torch.Tensor,
        ids: torch.Tensor,
        pad_id: int,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        cache: DecoderCache | None = None,
        packing: Packing | None = None,
        memory_packing: Packing | None = None,
    ) -> torch.Tensor:
        """x: embedded target (B, T, d_model) for token ids (B, T). Builds the causal & padding mask,
        extending it over the cached past when decoding incrementally. With `packing` /
        `memory_packing`, x / memory are (N, d_model) rows of real tokens (teacher forcing)."""
        key_mask = ids != pad_id                                            # (B, T)
        if cache is not None:
            if cache.key_mask is not None:
                key_mask = torch.cat([cache.key_mask, key_mask], dim=1)     # (B, T_past + T)
            cache.key_mask = key_mask
        t, t_all = ids.size(1), key_mask.size(1)
        if t == 1 and cache is not None and bool(key_mask.all()):
            self_mask = None        # one new query, every cached key real: nothing to hide (the fast path)
        else:
            self_mask = causal_mask(t, t_all, x.device) & key_mask[:, None, None, :]   # (B, 1, T, T_all)
        for i, layer in enumerate(self.layers):
            x = layer(
                x, self_mask, memory, memory_mask,
                self_cache=cache.self_attn[i] if cache is not None else None,
                cross_cache=cache.cross_attn[i] if cache is not None and self.cross else None,
                packing=packing, memory_packing=memory_packing,
            )
        return self.norm(x) if self.norm is not None else x


def _init_linear_weights(module: nn.Module) -> None:
    """Xavier-uniform for every matrix of the attention and feed-forward layers (as nn.Transformer)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _kept(h: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """(B, T, d_model) -> (N, d_model): the rows where `keep` (B, T) is True; all rows if None."""
    if keep is None:
        return h
    _check_keep(keep, h.shape[:2])
    return h[keep]


def _project(lm_head: nn.Linear, h: torch.Tensor, cache: DecoderCache | None) -> torch.Tensor:
    """The output layer: (..., d_model) -> (..., V) logits. Incremental decoding multiplies by a
    (d_model, V) copy of the weight made once per cache: a step at batch 1 is a vector-matrix
    product, which runs about 1.15x faster on a CPU in this layout than with the (V, d_model) one.
    (With gradients on, the layer itself, so that they reach its weight.)"""
    if cache is None or torch.is_grad_enabled():
        return lm_head(h)
    if cache.output_weight_t is None:
        cache.output_weight_t = lm_head.weight.detach().t().contiguous()
    return h @ cache.output_weight_t


def _check_keep(keep: torch.Tensor, shape: tuple[int, ...]) -> None:
    if keep.dtype != torch.bool or keep.shape != shape:
        raise ShapeError(f"keep must be a boolean mask of shape {tuple(shape)}, got {keep.dtype} {tuple(keep.shape)}")


def _packing(ids: torch.Tensor, pad_id: int, keep: torch.Tensor) -> Packing | None:
    """The Packing of the decoder positions that teacher forcing with `keep` needs: the real tokens
    (keys of later positions) and the `keep` positions (None: run padded)."""
    _check_keep(keep, tuple(ids.shape))
    return Packing.of((ids != pad_id) | keep)


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
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tgt_embed.token.weight
        else:
            nn.init.normal_(self.lm_head.weight, std=cfg.d_model**-0.5)

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
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tgt_in (B, T) -> logits (B, T, V). With a cache, tgt_in holds only the new positions
        (and memory may be None once the cache holds the encoder's keys/values).
        With `keep` (boolean (B, T)), only the logits of the True positions: (N, V)."""
        _check_ids(tgt_in, self.cfg.tgt_vocab_size, "tgt_in")
        start = cache.length if cache is not None else 0
        if cache is not None:
            if cache.source_unpadded is None:        # decided once; rows leaving the batch cannot add padding
                cache.source_unpadded = bool(src_mask.all())
            if cache.source_unpadded:
                src_mask = None                      # attention's unmasked fused kernel: one sentence, equal lengths
        x = self.tgt_embed(tgt_in, start)
        h = self.decoder(x, tgt_in, self.cfg.pad_id, memory, src_mask, cache)
        return _project(self.lm_head, _kept(h, keep), cache)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing. `keep` (boolean (B, T), optional) asks for the logits of the True positions
        only, (N, V): training passes the real target tokens, so the output layer (a large share of
        the FLOPs at vocabulary 8000) and the loss skip padding. Batches with padding run packed (see
        Packing): every layer but attention sees only the real source tokens and, with `keep`, only the
        real target tokens (without `keep` every target position gets its logits, as before)."""
        pad = self.cfg.pad_id
        _check_ids(src, self.cfg.src_vocab_size, "src")
        _check_ids(tgt_in, self.cfg.tgt_vocab_size, "tgt_in")
        src_pack = Packing.of(src != pad)
        tgt_pack = _packing(tgt_in, pad, keep) if keep is not None else None
        src_mask = padding_mask(src, pad)
        x = self.src_embed(src)
        memory = self.encoder(src_pack.pack(x) if src_pack else x, src_mask, src_pack)
        y = self.tgt_embed(tgt_in)
        h = self.decoder(tgt_pack.pack(y) if tgt_pack else y, tgt_in, pad, memory, src_mask,
                         packing=tgt_pack, memory_packing=src_pack)
        return self.lm_head(tgt_pack.select(h, keep) if tgt_pack else _kept(h, keep))

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
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.token.weight
        else:
            nn.init.normal_(self.lm_head.weight, std=cfg.d_model**-0.5)

    def forward(self, ids: torch.Tensor, cache: DecoderCache | None = None,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, T) -> logits (B, T, V). With a cache, ids holds only the new positions.
        With `keep` (boolean (B, T)), only the logits of the True positions: (N, V)."""
        _check_ids(ids, self.cfg.tgt_vocab_size, "ids")
        start = cache.length if cache is not None else 0
        pack = _packing(ids, self.cfg.pad_id, keep) if keep is not None and cache is None else None
        if pack is None:
            h = self.decoder(self.embed(ids, start), ids, self.cfg.pad_id, cache=cache)
            return _project(self.lm_head, _kept(h, keep), cache)
        h = self.decoder(pack.pack(self.embed(ids)), ids, self.cfg.pad_id, packing=pack)   # padded batch: packed
        return self.lm_head(pack.select(h, keep))

    def new_cache(self) -> DecoderCache:
        return self.decoder.new_cache()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_model(cfg: ModelConfig) -> EncoderDecoder | DecoderOnly:
    """The model class that `cfg.arch` names."""
    return EncoderDecoder(cfg) if cfg.arch == "encoder-decoder" else DecoderOnly(cfg)
