"""A recurrent encoder-decoder with additive attention: the bottleneck removed.

Bahdanau, Cho & Bengio (2015) let the decoder look back at *every* encoder state instead of
only the last one. At each output step t it scores each source position j, normalises the scores
over the source, and reads a weighted average:

    e_tj = v^T tanh(W s_t + U h_j)          additive ("Bahdanau") score
    a_tj = softmax_j(e_tj)                   over real source positions only (padding gets 0)
    c_t  = sum_j a_tj h_j                    a context vector made fresh for every step

Everything else is `Seq2Seq` from rnn.py; only `context` changes. The query s_t is the decoder
state after reading y_{t-1} (the placement of Luong et al., 2015): the context does not feed back
into the recurrence, so training runs the decoder RNN over all steps in one fused call. This is
the idea the Transformer kept; it dropped the recurrence and made attention the whole model.
"""

from __future__ import annotations

import torch
from torch import nn

from qkv.history.rnn import RecurrentConfig, Seq2Seq


class AdditiveAttention(nn.Module):
    """e = v^T tanh(W s + U h), softmax over the source, context = weights @ h."""

    def __init__(self, d_query: int, d_key: int, d_attn: int):
        super().__init__()
        self.W = nn.Linear(d_query, d_attn, bias=False)
        self.U = nn.Linear(d_key, d_attn)
        self.v = nn.Linear(d_attn, 1, bias=False)

    def forward(
        self, s: torch.Tensor, h: torch.Tensor, src_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """s (B, T, Dq) queries, h (B, S, Dk) keys = values, src_mask (B, 1, 1, S) True = real.

        Returns context (B, T, Dk) and weights (B, T, S), each row summing to 1 over the source.
        """
        e = self.v(torch.tanh(self.W(s)[:, :, None, :] + self.U(h)[:, None, :, :])).squeeze(-1)  # (B, T, S)
        e = e.masked_fill(~src_mask[:, 0], float("-inf"))                  # (B, 1, S) broadcast over T
        weights = torch.softmax(e, dim=-1)                                  # (B, T, S)
        return weights @ h, weights                                         # (B, T, Dk)


class AttentionSeq2Seq(Seq2Seq):
    """`Seq2Seq` (RNN, LSTM or GRU) whose context c_t is attention over all encoder states."""

    def __init__(self, cfg: RecurrentConfig):
        super().__init__(cfg)
        self.attention = AdditiveAttention(cfg.d_hidden, cfg.d_hidden, cfg.d_hidden)

    def context(self, s: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        return self.attention(s, memory, src_mask)[0]

    def attention_weights(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """(B, T, S) where each output step looked, teacher-forced: for plots and tests."""
        memory, src_mask = self.encode(src)
        s, _ = self.decoder(self.tgt_embed(tgt_in), self.initial_state(memory, src_mask))
        return self.attention(s, memory, src_mask)[1]
