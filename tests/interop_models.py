"""Small qkv models for the interop parity tests: trained for a few seconds so their outputs are
not degenerate (a random network tends to repeat one token, which would let a broken export pass)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F

from qkv import DecoderOnly, EncoderDecoder, ModelConfig
from tests.tiny import tiny_config

V = 24          # 4 special tokens + 20 symbols
PAD, BOS, EOS = 0, 1, 2


def model_config(**kw) -> ModelConfig:
    return tiny_config(V, **{"max_len": 48, **kw})


def reverse_batch(gen: torch.Generator, batch: int = 32, max_len: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """Random symbol strings (padded sources) and their reversals followed by <eos>."""
    lengths = torch.randint(3, max_len + 1, (batch,), generator=gen)
    src = torch.full((batch, max_len), PAD)
    tgt = torch.full((batch, max_len + 1), PAD)
    for i, n in enumerate(lengths.tolist()):
        seq = torch.randint(4, V, (n,), generator=gen)
        src[i, :n] = seq
        tgt[i, :n] = seq.flip(0)
        tgt[i, n] = EOS
    return src, tgt


def _fit(model, make_batch, steps: int, seed: int):
    """Adam on cross-entropy; make_batch(gen) -> (model inputs, next-token targets)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        inputs, targets = make_batch(gen)
        loss = F.cross_entropy(model(*inputs).reshape(-1, V), targets.reshape(-1), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _reverse_example(gen: torch.Generator):
    src, tgt = reverse_batch(gen)
    tgt_in = torch.cat([torch.full((len(tgt), 1), BOS), tgt[:, :-1]], dim=1)
    return (src, tgt_in), tgt


def _counting_example(gen: torch.Generator):
    start = torch.randint(0, V - 4, (32, 1), generator=gen)
    ids = 4 + (start + torch.arange(17)) % (V - 4)
    return (ids[:, :-1],), ids[:, 1:]


def train_reverse(cfg: ModelConfig, steps: int = 250, seed: int = 0) -> EncoderDecoder:
    """An encoder-decoder that has learnt (mostly) to reverse its input."""
    torch.manual_seed(seed)
    return _fit(EncoderDecoder(cfg), _reverse_example, steps, seed)


def train_lm(cfg: ModelConfig, steps: int = 150, seed: int = 0) -> DecoderOnly:
    """A decoder-only model trained on counting sequences (a, a+1, ...), so it continues prompts."""
    torch.manual_seed(seed)
    return _fit(DecoderOnly(cfg), _counting_example, steps, seed)


def with_one_thread(fn):
    """Run `fn` on one thread: tiny models train several times faster than on contended cores."""
    def wrapped(*args, **kwargs):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
    return wrapped


ALPHABET = "abcdefghijklmnopqrst"    # 20 symbols: ids 4..23 of a CharTokenizer


def reverse_run(tmp_root: str) -> str:
    """A run directory (char tokenizer, post-LN model trained to reverse); the tests share one, the
    session fixture `trained_reverse_run` of conftest.py."""
    from qkv.tokenizers import CharTokenizer
    from qkv.run import save_run

    model = with_one_thread(train_reverse)(model_config(), steps=200)
    tok = CharTokenizer.from_alphabet(ALPHABET)
    return str(save_run(Path(tmp_root) / "reverse", model, {}, tok, tok))


@functools.cache
def counting_lm() -> DecoderOnly:
    return with_one_thread(train_lm)(model_config(arch="decoder-only", src_vocab_size=0, norm_first=True))


def sample_sources(n: int = 8, seed: int = 99) -> torch.Tensor:
    """A padded batch of sources of different lengths."""
    return reverse_batch(torch.Generator().manual_seed(seed), n)[0]


def strip(ids: list[int]) -> list[int]:
    """Generated ids without <bos>, cut at <eos>, without padding."""
    ids = ids[1:] if ids and ids[0] == BOS else ids
    ids = ids[: ids.index(EOS)] if EOS in ids else ids
    return [i for i in ids if i != PAD]


def assert_not_degenerate(outputs: list[list[int]]) -> None:
    """Outputs that differ between sentences and within them, so a broken export cannot pass by luck."""
    assert len({tuple(o) for o in outputs}) == len(outputs)
    assert all(len(set(o)) >= 3 for o in outputs)
