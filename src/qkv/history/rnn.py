"""Recurrent encoder-decoders that squeeze the whole source into one fixed-length vector.

Before attention, sequence-to-sequence learning (Sutskever et al., 2014; Cho et al., 2014)
worked like this: an encoder RNN reads the source one token at a time, and its *final* hidden
state c is the only thing the decoder ever learns about the source:

    h_j = RNN_enc(h_{j-1}, x_j)              j = 1..S          (memory: h_1..h_S)
    c   = h_S                                                   the fixed context vector
    s_0 = tanh(W_b c)                                           decoder's first state
    s_t = RNN_dec(s_{t-1}, y_{t-1})                             t = 1..T
    logits_t = W_o tanh(W_c [s_t; c])

However long the sentence, c has d_hidden numbers: the bottleneck that attention removed.
`Seq2Seq.context` is the one place that decides what c_t is; attention_rnn.py overrides only
that method, so the two models differ in exactly one line of maths.

The cell is nn.RNN (tanh; gradients vanish over long distances), nn.LSTM (Hochreiter &
Schmidhuber, 1997) or nn.GRU (Cho et al., 2014), all fused recurrences. The models follow qkv's
EncoderDecoder interface (`encode`, `decode` with a cache, `forward`, `new_cache`, `.cfg`), so
qkv's loss, decoding and the history lab use them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from qkv.errors import ConfigError
from qkv.model.masks import padding_mask

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

# The recurrent state: a tensor (n_layers, B, H), or (h, c) for an LSTM.
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@dataclass
class RecurrentConfig:
    """The shape of a recurrent model. Special ids and max_len mean what they mean in ModelConfig."""

    src_vocab_size: int = 0          # 0 for a language model
    tgt_vocab_size: int = 0
    cell: str = "gru"                # rnn | lstm | gru
    d_embed: int = 64
    d_hidden: int = 128
    n_layers: int = 1
    max_len: int = 1024              # RNNs have no positional table; this only caps decoding
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    unk_id: int = 3

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ConfigError(f"cell must be one of {', '.join(CELLS)}; got {self.cell!r}")
        for name in ("tgt_vocab_size", "d_embed", "d_hidden", "n_layers", "max_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")

    @property
    def vocab_size(self) -> int:
        return self.tgt_vocab_size


@dataclass
class RecurrentCache:
    """What incremental decoding keeps between steps: the recurrent state (instead of a
    Transformer's growing keys/values, a fixed-size summary) and the encoder memory."""

    state: State | None = None
    memory: torch.Tensor | None = None     # (B, S, H), kept for attention after the first step
    length: int = 0

    def reorder(self, index: torch.Tensor, same_sources: bool = False) -> None:
        """Keep batch rows `index` (beam search, finished rows); with `same_sources` (beams of
        the same sentences) the encoder states stay as they are."""
        if isinstance(self.state, tuple):
            self.state = tuple(s.index_select(1, index) for s in self.state)
        elif self.state is not None:
            self.state = self.state.index_select(1, index)
        if self.memory is not None and not same_sources:
            self.memory = self.memory.index_select(0, index)


def open_forget_gates(lstm: nn.LSTM, bias: float = 1.0) -> None:
    """Start an LSTM's forget gates mostly open: sigmoid(1) = 0.73 instead of sigmoid(0) = 0.5.

    The cell state is multiplied by the forget gate at every step, so a gate of 0.5 halves what
    (and the gradient) crosses each step at initialization. A bias of 1 is the standard remedy
    (Gers et al., 2000; Jozefowicz et al., 2015); PyTorch's default is 0. Gate order: i, f, g, o.
    """
    h = lstm.hidden_size
    with torch.no_grad():
        for name, p in lstm.named_parameters():
            if name.startswith("bias_ih"):
                p[h : 2 * h].fill_(bias)
            elif name.startswith("bias_hh"):
                p[h : 2 * h].zero_()


def final_state(memory: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
    """memory (B, S, H) and src_mask (B, 1, 1, S) -> (B, H): the output at each row's last real token.

    Sources are right-padded and the encoder reads left to right, so the output at position
    length-1 has seen exactly the real tokens.
    """
    last = src_mask.flatten(1).sum(dim=1).clamp(min=1) - 1                  # (B,)
    return memory[torch.arange(memory.size(0)), last]                       # (B, H)


class Seq2Seq(nn.Module):
    """RNN / LSTM / GRU encoder-decoder whose decoder sees only the encoder's final state."""

    def __init__(self, cfg: RecurrentConfig):
        super().__init__()
        if cfg.src_vocab_size < 1:
            raise ConfigError(f"src_vocab_size must be a positive integer, got {cfg.src_vocab_size}")
        self.cfg = cfg
        rnn = CELLS[cfg.cell]
        self.src_embed = nn.Embedding(cfg.src_vocab_size, cfg.d_embed, padding_idx=cfg.pad_id)
        self.tgt_embed = nn.Embedding(cfg.tgt_vocab_size, cfg.d_embed, padding_idx=cfg.pad_id)
        self.encoder = rnn(cfg.d_embed, cfg.d_hidden, cfg.n_layers, batch_first=True)
        self.decoder = rnn(cfg.d_embed, cfg.d_hidden, cfg.n_layers, batch_first=True)
        self.bridge = nn.Linear(cfg.d_hidden, cfg.d_hidden)                  # s_0 = tanh(W_b c)
        self.combine = nn.Linear(2 * cfg.d_hidden, cfg.d_hidden)             # W_c [s_t; c_t]
        self.lm_head = nn.Linear(cfg.d_hidden, cfg.tgt_vocab_size)           # W_o
        if cfg.cell == "lstm":
            open_forget_gates(self.encoder)
            open_forget_gates(self.decoder)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S) -> memory (B, S, H), every encoder output, and src_mask (B, 1, 1, S)."""
        memory, _ = self.encoder(self.src_embed(src))                       # (B, S, H)
        return memory, padding_mask(src, self.cfg.pad_id)

    def context(self, s: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """What the decoder knows of the source at each step: here the same c = h_S for every t.

        s (B, T, H) decoder states -> (B, T, H). Nothing but the final state is read from memory.
        """
        return final_state(memory, src_mask)[:, None, :].expand_as(s)

    def initial_state(self, memory: torch.Tensor, src_mask: torch.Tensor) -> State:
        """s_0 = tanh(W_b h_S) in every decoder layer (an LSTM's cell starts at zero)."""
        s0 = torch.tanh(self.bridge(final_state(memory, src_mask)))          # (B, H)
        h0 = s0[None].repeat(self.cfg.n_layers, 1, 1).contiguous()           # (L, B, H)
        return (h0, torch.zeros_like(h0)) if self.cfg.cell == "lstm" else h0

    def decode(
        self,
        tgt_in: torch.Tensor,
        memory: torch.Tensor | None,
        src_mask: torch.Tensor,
        cache: RecurrentCache | None = None,
    ) -> torch.Tensor:
        """tgt_in (B, T) -> logits (B, T, V). With a cache, tgt_in holds only the new positions,
        the state carries over, and memory may be None after the first call (it lives in the cache)."""
        if cache is not None and cache.memory is not None:
            memory = cache.memory
        state = cache.state if cache is not None and cache.state is not None else None
        if state is None:
            state = self.initial_state(memory, src_mask)
        s, state = self.decoder(self.tgt_embed(tgt_in), state)              # (B, T, H)
        if cache is not None:
            cache.state, cache.memory, cache.length = state, memory, cache.length + tgt_in.size(1)
        c = self.context(s, memory, src_mask)                               # (B, T, H)
        return self.lm_head(torch.tanh(self.combine(torch.cat([s, c], dim=-1))))

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        memory, src_mask = self.encode(src)
        return self.decode(tgt_in, memory, src_mask)

    def new_cache(self) -> RecurrentCache:
        return RecurrentCache()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
