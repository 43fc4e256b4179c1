"""Search: from a model and token ids to output token ids (greedy, beam search, sampling, streaming).

The decoder is autoregressive: it predicts token t+1 from tokens 0..t. Decoding feeds one token
at a time and chooses the next from the predicted distribution:

- greedy: the most probable token at every step (fast, short-sighted);
- beam search: keep the K best partial hypotheses, expand each by every token, keep the K best of
  the K*V candidates; finished hypotheses are ranked by log p / lp with the GNMT length penalty
  lp = ((5 + len) / 6) ** alpha, so longer outputs are not punished merely for being long;
- sampling: draw from softmax(logits / temperature), optionally only among the top-k tokens or
  the smallest set whose probability reaches top-p (nucleus sampling), with a seeded generator.

Every mode runs on `StepDecoder`, which feeds only the new token per step and keeps the decoder's
self-attention keys/values in the model's cache (`model.new_cache()`); the encoder's keys/values
for cross-attention are computed at the first step and reused. The cached steps run through the
fast layer (`qkv.fast.decoding`), proven equal to the paper path by the tests. `use_cache=False` recomputes the
whole prefix at every step instead: the same numbers, much slower; it exists for tests and for
the benchmark.

This package works on ids only; text in and text out (tokenizing, the over-long rule, warnings,
scores) is `qkv.text`, for a loaded run. Backends: the paper path (`StepDecoder(fast=False)`), the
fast layer (`qkv.fast.decoding`, the default), and CTranslate2 (`qkv.search.ct2`).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from dataclasses import dataclass
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from qkv.config import check_ranges
from qkv.errors import ConfigError, QkvError, ShapeError
from qkv.fast.decoding import CachedSteps


@dataclass
class DecodeConfig:
    """How to decode. `beam_size=1` and `sample=False` is greedy search."""

    beam_size: int = 1
    n_best: int = 1                  # hypotheses returned per sentence (<= beam_size)
    length_penalty: float = 0.6      # alpha of lp = ((5 + len) / 6) ** alpha; 0 = raw log-probability
    sample: bool = False             # draw tokens instead of searching
    temperature: float = 1.0
    top_k: int = 0                   # 0 = no top-k filter
    top_p: float = 1.0               # 1.0 = no nucleus filter
    seed: int | None = None
    max_len_a: float = 1.5           # at most a * source_length + b new tokens (and the model's max_len)
    max_len_b: int = 10
    min_len: int = 0                 # <eos> is forbidden before this many new tokens
    use_cache: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_ranges("", self, {"seed": f"[0, {2**63 - 1}]", "length_penalty": "[-10, 10]"})
        if self.beam_size < 1:
            raise ConfigError(f"beam size must be >= 1, got {self.beam_size}")
        if not 1 <= self.n_best <= self.beam_size:
            raise ConfigError(f"n-best must be between 1 and the beam size ({self.beam_size}), got {self.n_best}")
        if self.sample and self.beam_size > 1:
            raise ConfigError("sampling and beam search exclude each other; use --beam 1 with --sample")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"top-k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top-p must be in (0, 1], got {self.top_p}")
        if self.max_len_a < 0 or self.max_len_b < 0 or self.max_len_a * 1000 + self.max_len_b < 1:
            raise ConfigError(f"max length a * src_len + b must be positive, got a={self.max_len_a}, b={self.max_len_b}")
        if self.min_len < 0:
            raise ConfigError(f"min length must be >= 0, got {self.min_len}")


@dataclass
class Hypothesis:
    """One output: token ids (no <bos>/<eos>), its ranking score and its total log-probability."""

    tokens: list[int]
    score: float       # beam search: log_prob / lp(len); greedy and sampling: log_prob
    log_prob: float    # sum of log p(token | prefix), <eos> included when it was produced


class DecodingStopped(QkvError):
    """Decoding was stopped from outside (e.g. the server's client went away)."""


_should_stop: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar("should_stop", default=None)


@contextlib.contextmanager
def stoppable(should_stop: Callable[[], bool]) -> Iterator[None]:
    """Inside the block, every decoding step first asks `should_stop()` and, if it says True,
    raises DecodingStopped (the server stops decoding for a client that went away)."""
    token = _should_stop.set(should_stop)
    try:
        yield
    finally:
        _should_stop.reset(token)


def check_stop() -> None:
    """Raise DecodingStopped if the enclosing `stoppable` block asks to stop."""
    should_stop = _should_stop.get()
    if should_stop is not None and should_stop():
        raise DecodingStopped("decoding was stopped: nobody waits for its result any more")


def length_penalty(length: int | torch.Tensor, alpha: float) -> float | torch.Tensor:
    """GNMT length penalty lp = ((5 + length) / 6) ** alpha (Wu et al., 2016)."""
    return ((5 + length) / 6) ** alpha


class StepDecoder:
    """Runs a model one decoding step at a time over a batch of rows.

    Encoder-decoder: pass the encoder output `memory` (B, S, d_model) and `src_mask` (B, 1, 1, S).
    Decoder-only: pass neither. `step(ids)` feeds new tokens (B, T_new) and returns the logits of
    the last position (B, V); `reorder(index)` keeps rows `index` (beam search, finished rows).

    With the cache, a Transformer's steps run through `qkv.fast.decoding.CachedSteps` (the model's
    own modules, minus masks that hide nothing, with the output layer in a faster layout;
    `fast=False` runs the paper path's `decode(ids, memory, src_mask, cache)` instead); without
    the cache, every step is the full forward over the whole prefix.
    """

    def __init__(self, model, memory: torch.Tensor | None = None, src_mask: torch.Tensor | None = None,
                 use_cache: bool = True, fast: bool = True):
        self.model = model
        self.memory, self.src_mask = memory, src_mask
        self.steps = CachedSteps(model) if use_cache and fast and CachedSteps.supports(model) else None
        self.cache = model.new_cache() if use_cache and self.steps is None else None
        self.prefix: torch.Tensor | None = None      # without a cache: every token fed so far (B, T)

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """New token ids (B, T_new) -> logits of the last position (B, V)."""
        check_stop()
        if self.steps is not None:
            logits = self.steps(ids, self.memory, self.src_mask)                   # (B, V)
            self.memory = None           # cross-attention keys/values now live in the cache
            return logits
        if self.cache is None:
            self.prefix = ids if self.prefix is None else torch.cat([self.prefix, ids], dim=1)
            ids = self.prefix
        if self.src_mask is None:
            logits = self.model(ids, self.cache)                                   # (B, T, V)
        else:
            logits = self.model.decode(ids, self.memory, self.src_mask, self.cache)
            if self.cache is not None:
                self.memory = None
        return logits[:, -1]

    def reorder(self, index: torch.Tensor, same_sources: bool = False) -> None:
        """Keep rows `index`. `same_sources`: each kept row replaces a row of the same source
        sentence (beams of one sentence), so the encoder side (memory, mask, cross-attention
        cache) needs no copy."""
        if self.steps is not None:
            self.steps.reorder(index, same_sources)
        if self.cache is not None:
            self.cache.reorder(index, same_sources)
        if self.prefix is not None:
            self.prefix = self.prefix.index_select(0, index)
        if same_sources:
            return
        if self.memory is not None:
            self.memory = self.memory.index_select(0, index)
        if self.src_mask is not None:
            self.src_mask = self.src_mask.index_select(0, index)


class Sampler:
    """Chooses the next token from log-probabilities (B, V): argmax, or a draw with
    temperature, top-k and top-p filtering from a seeded torch.Generator."""

    def __init__(self, sample: bool = False, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 seed: int | None = None):
        self.sample, self.temperature, self.top_k, self.top_p = sample, temperature, top_k, top_p
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)

    @classmethod
    def from_config(cls, dcfg: DecodeConfig) -> Sampler:
        return cls(dcfg.sample, dcfg.temperature, dcfg.top_k, dcfg.top_p, dcfg.seed)

    def __call__(self, logp: torch.Tensor) -> torch.Tensor:
        """(B, V) log-probabilities -> (B,) token ids."""
        if not self.sample:
            return logp.argmax(dim=-1)
        logits = logp / self.temperature
        if self.top_k > 0 and self.top_k < logits.size(-1):
            kth = logits.topk(self.top_k, dim=-1).values[:, -1:]                # (B, 1)
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p < 1.0:
            logits = _nucleus(logits, self.top_p)
        probs = torch.softmax(logits, dim=-1).cpu()                            # the generator lives on the CPU
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(1).to(logp.device)


def _nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most probable tokens whose total probability reaches top_p."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = probs.cumsum(dim=-1) - probs            # probability of the tokens ranked above
    sorted_logits = sorted_logits.masked_fill(before >= top_p, float("-inf"))   # the best one always stays
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def output_limits(src_lengths: list[int], dcfg: DecodeConfig, model_max_len: int) -> list[int]:
    """The output length limit of each sentence: a * src_len + b new tokens, at least 1, capped by
    the model's max_len (generating n tokens feeds <bos> and n - 1 tokens, n positions)."""
    return [min(model_max_len, max(1, math.floor(dcfg.max_len_a * n + dcfg.max_len_b))) for n in src_lengths]


def max_new_tokens(src: torch.Tensor, dcfg: DecodeConfig, pad_id: int, model_max_len: int) -> torch.Tensor:
    """(B,) `output_limits` of a padded batch of sources (B, S)."""
    lengths = (src != pad_id).sum(dim=1).tolist()
    return torch.tensor(output_limits(lengths, dcfg, model_max_len), dtype=torch.long, device=src.device)


def _encode(model, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not hasattr(model, "encode"):
        raise ConfigError("this is a decoder-only language model; generate text from a prompt instead of translating")
    if src.dim() != 2 or src.size(0) == 0:
        raise ShapeError(f"source ids must have shape (B, S) with B >= 1, got {tuple(src.shape)}")
    return model.encode(src)


# --- encoder-decoder: greedy and sampling -----------------------------------------------------


@torch.inference_mode()
def sample_search(model, src: torch.Tensor, dcfg: DecodeConfig) -> list[list[Hypothesis]]:
    """Greedy search (`dcfg.sample=False`) or sampling for a batch of sources (B, S).

    Returns one hypothesis per sentence. Rows leave the batch as soon as they produce <eos> or
    reach their length limit, so a batch costs as many steps as its longest output.
    """
    cfg = model.cfg
    memory, src_mask = _encode(model, src)
    stepper = StepDecoder(model, memory, src_mask, dcfg.use_cache)
    choose = Sampler.from_config(dcfg)
    limit = max_new_tokens(src, dcfg, cfg.pad_id, cfg.max_len)                 # (B,)
    b, steps, device = src.size(0), int(limit.max()), src.device
    out = torch.full((b, steps), cfg.pad_id, dtype=torch.long, device=device)
    log_prob = torch.zeros(b, dtype=torch.float64, device=device)
    length = limit.clone()
    rows = torch.arange(b, device=device)                                       # live row -> sentence
    ids = torch.full((b, 1), cfg.bos_id, dtype=torch.long, device=device)
    for t in range(steps):
        logp = F.log_softmax(stepper.step(ids).float(), dim=-1)                # (b, V)
        if t < dcfg.min_len:
            logp[:, cfg.eos_id] = float("-inf")
        token = choose(logp)                                                    # (b,)
        out[rows, t] = token
        log_prob[rows] += logp.gather(1, token[:, None]).squeeze(1).double()
        done = (token == cfg.eos_id) | (t + 1 >= limit[rows])
        if bool(done.any()):
            length[rows[done]] = t + 1
            keep = (~done).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            stepper.reorder(keep)
            rows, token = rows[keep], token[keep]
        ids = token[:, None]
    return [[_finished(out[i, : length[i]].tolist(), float(log_prob[i]), cfg.eos_id)] for i in range(b)]


def _finished(tokens: list[int], log_prob: float, eos_id: int) -> Hypothesis:
    if tokens and tokens[-1] == eos_id:
        tokens = tokens[:-1]
    return Hypothesis(tokens, log_prob, log_prob)


# --- encoder-decoder: beam search -------------------------------------------------------------


@torch.inference_mode()
def beam_search(model, src: torch.Tensor, dcfg: DecodeConfig) -> list[list[Hypothesis]]:
    """Beam search over a batch of sources (B, S), all sentences and beams in one (B*K) batch.

    Returns the `n_best` best finished hypotheses of each sentence, best first. A sentence is done
    when its n_best-th finished hypothesis scores at least as well as the best alive beam could
    ever score (its log-probability can only fall; the length penalty is taken at its most
    favourable length) or when it reaches its length limit; done sentences leave the batch.
    """
    cfg, k, alpha, eos = model.cfg, dcfg.beam_size, dcfg.length_penalty, model.cfg.eos_id
    memory, src_mask = _encode(model, src)
    b, device = src.size(0), src.device
    stepper = StepDecoder(model, memory.repeat_interleave(k, 0), src_mask.repeat_interleave(k, 0), dcfg.use_cache)
    limit = max_new_tokens(src, dcfg, cfg.pad_id, cfg.max_len)                 # (B,)
    sent = torch.arange(b, device=device)                                       # live sentence -> input index
    scores = torch.full((b, k), float("-inf"), device=device)                   # (b, K) log p of alive beams
    scores[:, 0] = 0.0                                                          # all beams start equal: keep one
    history = torch.empty(b * k, 0, dtype=torch.long, device=device)            # (b*K, t) tokens so far
    finished: list[list[Hypothesis]] = [[] for _ in range(b)]
    nth_best = torch.full((b,), float("-inf"), device=device)                   # score to beat to matter
    ids = torch.full((b * k, 1), cfg.bos_id, dtype=torch.long, device=device)
    for t in range(int(limit.max())):
        logp = F.log_softmax(stepper.step(ids).float(), dim=-1)                # (b*K, V)
        if t < dcfg.min_len:
            logp[:, eos] = float("-inf")
        v = logp.size(-1)
        cand = (scores[:, :, None] + logp.view(-1, k, v)).view(-1, k * v)     # (b, K*V)
        top_scores, top_idx = cand.topk(min(2 * k, k * v), dim=1)              # (b, 2K) best first
        token = top_idx % v
        rows = torch.arange(len(sent), device=device)[:, None] * k + top_idx // v   # (b, 2K) parent row
        is_eos = token == eos
        at_limit = t + 1 >= limit[sent]                                         # (b,)
        # A candidate ends a hypothesis if it is <eos> among the best K, or anything at the limit.
        ends = (is_eos | at_limit[:, None]) & (top_scores > float("-inf"))
        ends[:, k:] = False
        if bool(ends.any()):
            _collect(ends, top_scores, token, rows, history, sent, t + 1, dcfg, eos, finished, nth_best)
        # The K best candidates that do not end in <eos> stay alive (in score order).
        rank = is_eos.long() * top_idx.size(1) + torch.arange(top_idx.size(1), device=device)
        pick = rank.topk(k, dim=1, largest=False).indices                      # (b, K)
        scores = top_scores.gather(1, pick)
        rows, token = rows.gather(1, pick), token.gather(1, pick)
        most_favourable = length_penalty(limit[sent].float(), alpha).clamp(min=length_penalty(t + 2, alpha))
        best_possible = scores[:, 0] / most_favourable                         # (b,)
        done = at_limit | (best_possible <= nth_best) | (scores[:, 0] == float("-inf"))
        if bool(done.all()):
            break
        dropped = bool(done.any())
        if dropped:
            keep = (~done).nonzero().squeeze(1)
            sent, scores, nth_best = sent[keep], scores[keep], nth_best[keep]
            rows, token = rows[keep], token[keep]
        rows = rows.reshape(-1)
        history = torch.cat([history.index_select(0, rows), token.reshape(-1, 1)], dim=1)
        stepper.reorder(rows, same_sources=not dropped)      # the encoder side moves only when sentences leave
        ids = token.reshape(-1, 1)
    return [sorted(f, key=lambda h: -h.score)[: dcfg.n_best] for f in finished]


def _collect(ends, top_scores, token, rows, history, sent, length, dcfg, eos, finished, nth_best) -> None:
    """Move the candidates marked in `ends` (b, 2K) to their sentence's finished list."""
    lp = length_penalty(length, dcfg.length_penalty)
    for i, j in ends.nonzero().tolist():
        tokens = history[rows[i, j]].tolist()
        if int(token[i, j]) != eos:
            tokens.append(int(token[i, j]))
        log_prob = float(top_scores[i, j])
        hyps = finished[int(sent[i])]
        hyps.append(Hypothesis(tokens, log_prob / lp, log_prob))
        hyps.sort(key=lambda h: -h.score)
        del hyps[dcfg.beam_size:]
        if len(hyps) >= dcfg.n_best:
            nth_best[i] = hyps[dcfg.n_best - 1].score


def translate_ids(model, src: torch.Tensor, dcfg: DecodeConfig) -> list[list[Hypothesis]]:
    """Decode a batch of source ids (B, S) with the search that `dcfg` names."""
    if dcfg.beam_size > 1:
        return beam_search(model, src, dcfg)
    return sample_search(model, src, dcfg)


# --- decoder-only: streaming generation -------------------------------------------------------


@torch.inference_mode()
def generate_stream(model, prompt: list[int], max_new_tokens: int, sampler: Sampler | None = None,
                    use_cache: bool = True, min_new_tokens: int = 0, window: int = 0) -> Iterator[int]:
    """Continue `prompt` (token ids) with a decoder-only model, yielding each new token id as it comes.

    The prompt is processed in one forward pass, then one token per step. Stops at <eos> (not
    yielded), after `max_new_tokens`, or when the model's positions (max_len) run out; <pad> and
    <bos> are never generated. An empty prompt starts from <bos>. Prompts are generated one at a
    time: batching prompts of different lengths would need left padding, which shifts the
    absolute positions of the shorter prompts.

    `window` > 0 lets the text run past max_len (as nanoGPT crops its context): when the next
    token would not fit, decoding starts again on the last `window` tokens (one forward pass
    over them, a fresh cache), then goes on one token per step.
    """
    cfg = model.cfg
    if hasattr(model, "encode"):
        raise ConfigError("this is a translation (encoder-decoder) model; translate a source text instead of generating")
    device = next(model.parameters()).device
    ids = torch.tensor([prompt or [cfg.bos_id]], dtype=torch.long, device=device)   # (1, P)
    if ids.size(1) > cfg.max_len:
        raise ShapeError(f"prompt has {ids.size(1)} tokens but the model holds at most max_len={cfg.max_len}; shorten it")
    if window and not 0 < window < cfg.max_len:
        raise ConfigError(f"window must be between 1 and max_len - 1 = {cfg.max_len - 1}, got {window}")
    sampler = sampler or Sampler()
    stepper = StepDecoder(model, use_cache=use_cache)
    context, used = ids[0].tolist(), 0                                          # tokens so far, positions fed
    n = max_new_tokens if window else min(max_new_tokens, cfg.max_len - ids.size(1) + 1)   # the last token is never fed
    for t in range(n):
        logp = F.log_softmax(stepper.step(ids).float(), dim=-1)                # (1, V)
        used += ids.size(1)
        logp[:, [cfg.pad_id, cfg.bos_id]] = float("-inf")                      # never a continuation
        if t < min_new_tokens:
            logp[:, cfg.eos_id] = float("-inf")
        token = sampler(logp)                                                   # (1,)
        if int(token) == cfg.eos_id:
            return
        yield int(token)
        context.append(int(token))
        ids = token[:, None]
        if window and used == cfg.max_len:                                      # no position left: slide
            stepper = StepDecoder(model, use_cache=use_cache)
            ids, used = torch.tensor([context[-window:]], dtype=torch.long, device=device), 0


def generate(model, prompt: list[int], max_new_tokens: int, **kwargs) -> list[int]:
    """`generate_stream` collected into a list."""
    return list(generate_stream(model, prompt, max_new_tokens, **kwargs))
