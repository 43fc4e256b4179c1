"""Two language models from before the Transformer, with qkv's DecoderOnly interface.

`FeedForwardLM` is the neural probabilistic language model of Bengio et al. (2003): the next
token depends on a fixed window of the n previous ones, whose embeddings are concatenated:

    x = [e(w_{t-n+1}); ...; e(w_t)]                       (n * d_embed numbers)
    logits(w_{t+1}) = b + W x + U tanh(d + H x)           (W x: the paper's direct connections)

It cannot see anything older than n tokens, and it has no notion of order beyond "which slot of
the window a token sits in". `LSTMLM` reads the whole history through a recurrent state instead.

Both follow `forward(ids, cache=None) -> logits (B, T, V)`, logits[:, t] predicting token t+1;
with a cache, `ids` holds only the new tokens (one step at a time when generating).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from qkv.errors import ConfigError
from qkv.history.rnn import RecurrentCache, RecurrentConfig, open_forget_gates


@dataclass
class WindowCache:
    """The last n-1 tokens seen: all a fixed-window model needs to continue."""

    tokens: torch.Tensor | None = None     # (B, n-1)
    length: int = 0

    def reorder(self, index: torch.Tensor, same_sources: bool = False) -> None:
        if self.tokens is not None:
            self.tokens = self.tokens.index_select(0, index)


class FeedForwardLM(nn.Module):
    """Bengio et al. (2003): an MLP over the embeddings of the last `window` tokens.

    Positions before the start of the text are <pad> (a zero embedding).
    """

    def __init__(self, cfg: RecurrentConfig, window: int = 4):
        super().__init__()
        if window < 1:
            raise ConfigError(f"the context window must be at least 1 token, got {window}")
        self.cfg, self.window = cfg, window
        d_in = window * cfg.d_embed
        self.embed = nn.Embedding(cfg.tgt_vocab_size, cfg.d_embed, padding_idx=cfg.pad_id)
        self.hidden = nn.Linear(d_in, cfg.d_hidden)                           # d + H x
        self.lm_head = nn.Linear(cfg.d_hidden, cfg.tgt_vocab_size)            # b + U tanh(.)
        self.direct = nn.Linear(d_in, cfg.tgt_vocab_size, bias=False)         # W x

    def forward(self, ids: torch.Tensor, cache: WindowCache | None = None) -> torch.Tensor:
        """ids (B, T) -> logits (B, T, V)."""
        b, n = ids.size(0), self.window
        past = cache.tokens if cache is not None and cache.tokens is not None else None
        if past is None:
            past = ids.new_full((b, n - 1), self.cfg.pad_id)                  # (B, n-1)
        full = torch.cat([past, ids], dim=1)                                  # (B, n-1+T)
        windows = full.unfold(1, n, 1)                                        # (B, T, n)
        x = self.embed(windows).flatten(2)                                    # (B, T, n*d_embed)
        if cache is not None:
            cache.tokens, cache.length = full[:, full.size(1) - (n - 1):], cache.length + ids.size(1)
        return self.lm_head(torch.tanh(self.hidden(x))) + self.direct(x)

    def new_cache(self) -> WindowCache:
        return WindowCache()


class LSTMLM(nn.Module):
    """An LSTM language model: embedding -> LSTM -> linear; the state carries all of the past."""

    def __init__(self, cfg: RecurrentConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.tgt_vocab_size, cfg.d_embed, padding_idx=cfg.pad_id)
        self.lstm = nn.LSTM(cfg.d_embed, cfg.d_hidden, cfg.n_layers, batch_first=True)
        open_forget_gates(self.lstm)
        self.lm_head = nn.Linear(cfg.d_hidden, cfg.tgt_vocab_size)

    def forward(self, ids: torch.Tensor, cache: RecurrentCache | None = None) -> torch.Tensor:
        """ids (B, T) -> logits (B, T, V)."""
        state = cache.state if cache is not None else None
        h, state = self.lstm(self.embed(ids), state)                          # (B, T, H)
        if cache is not None:
            cache.state, cache.length = state, cache.length + ids.size(1)
        return self.lm_head(h)

    def new_cache(self) -> RecurrentCache:
        return RecurrentCache()
