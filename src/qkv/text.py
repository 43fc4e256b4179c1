"""The one text pipeline: text -> ids -> search -> text, for a loaded run.

`qkv translate/evaluate/generate`, the server, `qkv explain` and `import qkv` all go through
here, so they share one tokenization, one rule for over-long input (OVER_LONG_RULE), the same
warnings and the same checks of the run's architecture. The search itself (greedy, beam,
sampling) works on ids in `qkv.search`, with its backends: `backend=None` is the run's own
PyTorch model (`qkv.search.translate_ids`), or a backend object with the same contract on source
id lists, such as CTranslate2's (`qkv.search.ct2.Ct2Translator`, built by `translation_backend`).
Whatever the backend, the text around the search is the same: one tokenization, one over-long
rule, one unknown-token warning, one NaN check, one architecture check.
"""

from __future__ import annotations

import math
import os
from typing import Protocol
from collections.abc import Callable, Iterator

import torch

from qkv.errors import ConfigError, DataError
from qkv.search import DecodeConfig, Hypothesis, Sampler, generate_stream, translate_ids


# --- text in, text out: the one text pipeline of `qkv translate/evaluate/generate`, the server ---
# --- and `qkv explain` (text -> ids -> search -> text) -----------------------------------------


def require_arch(run, arch: str) -> None:
    """Refuse a run of the wrong kind with a one-line error that names the right command."""
    if run.cfg.arch == arch:
        return
    if run.cfg.arch == "decoder-only":
        raise ConfigError(f"{run.path} is a language model; continue a prompt with "
                          f"`qkv generate --model {run.path} --prompt \"...\"`")
    raise ConfigError(f"{run.path} is a translation model; translate with `qkv translate --model {run.path} \"...\"`")


OVER_LONG_RULE = (
    "Input longer than the model reads is cut, never refused: a source keeps its first max_len "
    "tokens, a prompt its last max_len - 1 (room for the next token), and a warning says so."
)


def source_ids(run, text: str, name: str = "the text", warn: Callable[[str], None] | None = None) -> list[int]:
    """Source text -> token ids, cut to the model's max_len by the one rule (OVER_LONG_RULE)."""
    ids = run.src_tokenizer.encode(text) if text.strip() else []
    unknown = sum(i == run.cfg.unk_id for i in ids)
    if ids and unknown * 2 > len(ids) and warn is not None:
        warn(f"{name}: {unknown} of its {len(ids)} tokens are unknown to the model (<unk>); "
             f"is it in the language and script the model was trained on?")
    limit = run.cfg.max_len
    if len(ids) > limit:
        if warn is not None:
            warn(f"{name} has {len(ids)} tokens; the model reads at most {limit}, so the rest was cut")
        ids = ids[:limit]
    return ids


def prompt_ids(run, prompt: str, warn: Callable[[str], None] | None = None) -> list[int]:
    """Prompt text -> token ids, keeping the last max_len - 1 by the one rule (OVER_LONG_RULE)."""
    ids = run.tgt_tokenizer.encode(prompt) if prompt else []
    limit = run.cfg.max_len - 1
    if len(ids) > limit:
        if warn is not None:
            warn(f"the prompt has {len(ids)} tokens; kept the last {limit} (the model's max_len is {limit + 1})")
        ids = ids[-limit:]
    return ids


class SearchBackend(Protocol):
    """What translates source ids when it is not the run's own PyTorch model: the contract of
    `qkv.search.translate_ids` on lists of source ids (no padding), limits from `dcfg`."""

    def translate_ids(self, src: list[list[int]], dcfg: DecodeConfig, batch_size: int = 0) -> list[list[Hypothesis]]: ...


ENGINES = ("qkv", "ct2")


def check_engine(engine: str, ct2_model: str | os.PathLike | None) -> None:
    """`--engine` and `--ct2-model` go together: a one-line ConfigError when they do not."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "qkv" and ct2_model is not None:
        raise ConfigError("--ct2-model is used with --engine ct2 only")
    if engine == "ct2" and ct2_model is None:
        raise ConfigError("--engine ct2 needs --ct2-model DIR; write DIR with `qkv export --model RUN --format ct2 --out DIR`")


def translation_backend(run, engine: str = "qkv", ct2_model: str | os.PathLike | None = None) -> SearchBackend | None:
    """The search backend that `--engine` names for a translation run: None for qkv (the run's own
    PyTorch model), or a CTranslate2 translator over `ct2_model` (this run exported by
    `qkv export --format ct2`; its vocabularies and weights must be the run's). A language-model run is
    refused as by `translate_texts`."""
    check_engine(engine, ct2_model)
    require_arch(run, "encoder-decoder")
    if engine == "qkv":
        return None
    from qkv.search.ct2 import Ct2Translator, vocabulary

    return Ct2Translator(ct2_model, vocabulary(run.src_tokenizer), vocabulary(run.tgt_tokenizer), run.cfg.max_len,
                         weights_digest=getattr(run, "weights_digest", None))


def translate_texts(run, texts: list[str], dcfg: DecodeConfig, batch_size: int = 32,
                    warn: Callable[[str], None] | None = None,
                    name: Callable[[int], str] = lambda i: f"line {i + 1}",
                    backend: SearchBackend | None = None) -> list[list[Hypothesis]]:
    """Translate `texts` with a loaded run: each text's n-best hypotheses (token ids and scores).
    An over-long text is cut (OVER_LONG_RULE), `warn` getting a message that names it with
    `name(index)`; then `translate_sources` (on `backend`, if given)."""
    require_arch(run, "encoder-decoder")
    ids = [source_ids(run, text, name(i), warn) for i, text in enumerate(texts)]
    return translate_sources(run, ids, dcfg, batch_size, name, backend)


def translate_sources(run, ids: list[list[int]], dcfg: DecodeConfig, batch_size: int = 32,
                      name: Callable[[int], str] = lambda i: f"line {i + 1}",
                      backend: SearchBackend | None = None) -> list[list[Hypothesis]]:
    """Translate source token lists (from `source_ids`) with a loaded run: each one's n-best
    hypotheses, `batch_size` sentences decoded together; an empty one gets one empty hypothesis.
    `backend=None` searches with the run's own model: sources sorted by length, decoded
    `batch_size` at a time (little padding), then put back in order; a backend (such as
    `translation_backend(run, "ct2", DIR)`) does its own batching. NaN scores are refused."""
    require_arch(run, "encoder-decoder")
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    results = _search(run, ids, dcfg, batch_size) if backend is None else backend.translate_ids(ids, dcfg, batch_size)
    for i, hyps in enumerate(results):
        if not hyps or math.isnan(hyps[0].score):
            raise DataError(f"{name(i)}: the model's scores are NaN, so its output means nothing; "
                            f"the weights are broken or overflow ({run.path}); retrain or use another checkpoint")
    return results


def _search(run, ids: list[list[int]], dcfg: DecodeConfig, batch_size: int) -> list[list[Hypothesis]]:
    """`translate_ids` with the run's own model, `batch_size` sources of similar length at a time."""
    results: list[list[Hypothesis]] = [[Hypothesis([], 0.0, 0.0)] for _ in ids]
    order = sorted((i for i, x in enumerate(ids) if x), key=lambda i: -len(ids[i]))
    device = next(run.model.parameters()).device
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        src = _pad([ids[i] for i in chunk], run.cfg.pad_id).to(device)
        for i, hyps in zip(chunk, translate_ids(run.model, src, dcfg)):
            results[i] = hyps
    return results


def translate_lines(run, lines: list[str], dcfg: DecodeConfig, batch_size: int = 32,
                    warn: Callable[[str], None] | None = None,
                    backend: SearchBackend | None = None) -> list[list[tuple[str, float]]]:
    """`translate_texts` as text: each line's n-best list of (text, score)."""
    return [[(run.tgt_tokenizer.decode(h.tokens), h.score) for h in hyps]
            for hyps in translate_texts(run, lines, dcfg, batch_size, warn, backend=backend)]


def _pad(rows: list[list[int]], pad_id: int) -> torch.Tensor:
    """Right-pad token lists into one (B, S) tensor."""
    width = max(len(r) for r in rows)
    return torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], dtype=torch.long)


def evaluate(run, sources: list[str], references: list[str], dcfg: DecodeConfig, batch_size: int = 32,
             warn: Callable[[str], None] | None = None, backend: SearchBackend | None = None) -> dict:
    """Translate `sources` (on `backend`, if given) and score the 1-best outputs against `references`.

    The run's recorded data kind picks the headline score, named by "metric": a built-in task's
    run is scored by exact match ("exact_match" the fraction, "exact_matches" the count; BLEU
    means nothing there), any other run by sacreBLEU BLEU. chrF comes with both. Scores come with
    their sacreBLEU signatures (which say exactly how they were computed), the number of
    sentences and the hypotheses.
    """
    from sacrebleu.metrics import BLEU, CHRF

    from qkv.training.metrics import bleu_applies, exact_matches, run_kind

    if len(sources) != len(references):
        raise DataError(f"{len(sources)} source lines but {len(references)} reference lines; "
                         f"the files must be line-aligned")
    hyps = [nbest[0][0] for nbest in translate_lines(run, sources, dcfg, batch_size, warn, backend)]
    result: dict
    if bleu_applies(run_kind(run.config)):
        bleu = BLEU()
        result = dict(metric="bleu", bleu=round(bleu.corpus_score(hyps, [references]).score, 2),
                      bleu_signature=str(bleu.get_signature()))
    else:
        exact = exact_matches(hyps, references)
        result = dict(metric="exact_match", exact_match=exact / max(len(hyps), 1), exact_matches=exact)
    chrf = CHRF()
    result.update(chrf=round(chrf.corpus_score(hyps, [references]).score, 2),
                  chrf_signature=str(chrf.get_signature()))
    return {**result, "sentences": len(hyps), "beam_size": dcfg.beam_size, "hypotheses": hyps}


def generate_text(run, prompt: str, max_new_tokens: int, sampler: Sampler,
                  warn: Callable[[str], None] | None = None, use_cache: bool = True) -> Iterator[str]:
    """Continue `prompt` with a language-model run: an iterator of text pieces as the tokens come
    (the run and prompt are checked at once, before the first token).

    Each piece is the growth of decode(prompt + new tokens), so multi-byte characters and
    tokenizers that join words with spaces come out right. A prompt that leaves no room in the
    model's max_len keeps its last tokens (OVER_LONG_RULE), and `warn` is called. use_cache=False
    runs the model over the whole context at every step (the baseline the cache is measured against).
    """
    require_arch(run, "decoder-only")
    tok, ids = run.tgt_tokenizer, prompt_ids(run, prompt, warn)
    window = run.cfg.max_len * 3 // 4            # past max_len, go on from the last 3/4 of the context
    return _text_pieces(tok, ids, generate_stream(run.model, ids, max_new_tokens, sampler, use_cache,
                                                      window=window))


def _text_pieces(tok, prompt_ids: list[int], tokens: Iterator[int]) -> Iterator[str]:
    shown, new = tok.decode(prompt_ids), []
    for token in tokens:
        new.append(token)
        text = tok.decode(prompt_ids + new)
        if text.startswith(shown) and not text.endswith("\ufffd"):      # not half a character
            yield text[len(shown):]
            shown = text


def read_input_lines(text: str | None, input_path: str | None, stdin=None) -> list[str]:
    """The lines to translate: TEXT, the lines of --input, or stdin when it is piped."""
    import sys

    from qkv.data.corpus import iter_lines

    stdin = sys.stdin if stdin is None else stdin
    if text is not None and input_path is not None:
        raise ConfigError("give either TEXT or --input FILE, not both")
    if text is not None:
        return [text]
    if input_path is not None:
        return [line for _, line in iter_lines(input_path)]
    if stdin is None or getattr(stdin, "closed", False):     # started with stdin closed (0<&-)
        raise ConfigError("nothing to translate: stdin is closed; give TEXT, --input FILE, or pipe lines on stdin")
    if stdin.isatty():
        raise ConfigError("nothing to translate: give TEXT, --input FILE, or pipe lines on stdin")
    if hasattr(stdin, "buffer"):                 # the bytes, decoded by the same rule as --input
        from qkv.data.corpus import iter_byte_lines

        return [line for _, line in iter_byte_lines(stdin.buffer, "stdin")]
    return [line.rstrip("\n").removesuffix("\r") for line in stdin]


def format_translations(results: list[list[tuple[str, float]]], n_best: int) -> str:
    """One translation per line; with n_best > 1, `line ||| text ||| score` rows (Moses n-best style)."""
    if n_best == 1:
        return "".join(nbest[0][0] + "\n" for nbest in results)
    return "".join(f"{i} ||| {text} ||| {score:.4f}\n" for i, nbest in enumerate(results) for text, score in nbest)
