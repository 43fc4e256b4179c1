"""Explain a text with a loaded run: the model writes its output, then one forward pass is traced.

    e = explain_text(run, "Ein Hund läuft.")       # e.trace, e.output, e.first_step, e.warnings

`qkv explain`, `qkv viz attention`, the server's /v1/explain and `import qkv` all call this, so a
text means the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from qkv.errors import DataError
from qkv.explain.trace import Trace, trace
from qkv.search import DecodeConfig, generate, output_limits
from qkv.text import prompt_ids, source_ids, translate_sources


@dataclass
class Explained:
    """What `explain_text` traced."""

    trace: Trace
    output: list[int]       # the explained output's ids: `target`, or the model's own greedy output
    first_step: int         # the trace step that predicts the output's first token
    warnings: list[str]     # about the input, by qkv.text's rules (cut, unknown tokens)
    own_output: bool        # True when the output is the model's own (no target was given)


def explain_text(run, text: str, target: str | None = None, max_new_tokens: int | None = None,
                 name: str = "the text", backend=None) -> Explained:
    """Trace `text` and an output through a loaded run (`qkv.run.load_run`).

    One meaning for both model shapes: `text` is the model's input and the output explained is
    what the model writes after it, teacher-forced in one traced forward pass:
    - a translation model reads `text` as the source and writes its translation;
    - a language model reads `text` as a prompt (<bos> when it is empty) and writes its
      continuation; the trace covers prompt + continuation, so it shows both the predictions
      inside the prompt and those that chose each new token (from `first_step` on).
    Without `target` the output is the model's own greedy one, at most `max_new_tokens` tokens
    (None: `qkv translate`'s limit, 1.5 x input tokens + 10), cut to what the model's max_len
    leaves room for; with `target` that text is explained instead (what the model "should" write).
    The input goes through qkv.text (one tokenization, OVER_LONG_RULE, its warnings named `name`);
    a source with no tokens is refused. A translation is written by `backend` (a search backend of
    `qkv.text.translation_backend`, such as CTranslate2; None: the run's own PyTorch search); the
    PyTorch weights are traced whatever engine translates.
    """
    warnings: list[str] = []
    dcfg = DecodeConfig() if max_new_tokens is None else DecodeConfig(max_len_a=0.0, max_len_b=max_new_tokens)
    max_len = run.cfg.max_len
    target_ids = None if target is None else run.tgt_tokenizer.encode(target)
    if run.cfg.arch == "decoder-only":
        prompt = prompt_ids(run, text, warnings.append) or [run.cfg.bos_id]
        if target_ids is None:
            target_ids = generate(run.model, prompt, output_limits([len(prompt)], dcfg, max_len)[0])[: max_len - len(prompt)]
        tr = trace(run.model, prompt + target_ids, None, None, run.tgt_tokenizer)
        return Explained(tr, target_ids, len(prompt) - 1, warnings, target is None)
    src = source_ids(run, text, name, warnings.append)
    if not src:
        raise DataError(f"{name} has no tokens; give some text")
    if target_ids is None:
        target_ids = translate_sources(run, [src], dcfg, backend=backend)[0][0].tokens[: max_len - 1]   # room for <bos>
    tr = trace(run.model, src, target_ids, run.src_tokenizer, run.tgt_tokenizer)
    return Explained(tr, target_ids, 0, warnings, target is None)
