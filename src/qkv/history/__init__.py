"""The history lab: the models the Transformer replaced, and an experiment that shows why.

    rnn.py            RNN / LSTM / GRU encoder-decoders with one fixed context vector
    attention_rnn.py  the same with additive (Bahdanau) attention
    lm.py             a fixed-window feed-forward LM (Bengio 2003) and an LSTM LM
    lab.py            `qkv history`: train each model for the same time, measure, write a report
"""

from qkv.history.attention_rnn import AdditiveAttention, AttentionSeq2Seq
from qkv.history.lm import FeedForwardLM, LSTMLM
from qkv.history.rnn import RecurrentCache, RecurrentConfig, Seq2Seq

__all__ = [
    "AdditiveAttention",
    "AttentionSeq2Seq",
    "FeedForwardLM",
    "LSTMLM",
    "RecurrentCache",
    "RecurrentConfig",
    "Seq2Seq",
]
