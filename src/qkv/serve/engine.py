"""The model behind the server: tokenize, check the limits, decode, detokenize (qkv.text, the one text pipeline).

`Engine` does the model's work for each endpoint synchronously; `qkv.serve.worker` decides
when (one call at a time, in a worker thread, compatible requests batched together).
"""

from __future__ import annotations

import time
from typing import Any

from qkv.search import DecodeConfig, Sampler, generate
from qkv.text import prompt_ids, source_ids, translate_sources, translation_backend
from qkv.errors import QkvError
from qkv.explain.text import explain_text
from qkv.explain.trace import display_token
from qkv.serve import explain_view
from qkv.serve.schemas import MAX_BATCH, MAX_NEW_TOKENS, MAX_TEXT_CHARS, GenerateRequest, TranslateRequest

TRANSLATION, LANGUAGE_MODEL = "translation", "language-model"


class ServeError(QkvError):
    """A request the model cannot serve; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


class Engine:
    """Serves one loaded run (`qkv.run.Run`). With `ct2_model` (the run exported by
    `qkv export --format ct2`) translations run on CTranslate2; explain stays on the PyTorch weights."""

    def __init__(self, run: Any, ct2_model: Any = None):
        self.run = run
        self.model = run.model.eval()
        self.cfg = run.cfg
        self.kind = LANGUAGE_MODEL if self.cfg.arch == "decoder-only" else TRANSLATION
        self.tgt = run.tgt_tokenizer
        self.src = run.src_tokenizer
        self.engine = "qkv" if ct2_model is None else "ct2"
        if ct2_model is not None and self.kind != TRANSLATION:
            raise ServeError("--engine ct2 serves translation models; this run is a language model", 400)
        self.backend = None if ct2_model is None else translation_backend(run, "ct2", ct2_model)

    # --- what the model is ---------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "engine": self.engine,
            "path": str(self.run.path),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "src_vocab_size": None if self.src is None else self.src.vocab_size,
            "tgt_vocab_size": self.tgt.vocab_size,
            "config": self.cfg.to_dict(),
            "limits": {
                "max_text_chars": MAX_TEXT_CHARS,
                "max_batch": MAX_BATCH,
                "max_new_tokens": MAX_NEW_TOKENS,
                "max_len": self.cfg.max_len,
                "max_source_tokens": self.cfg.max_len,         # longer texts are cut (qkv.text.OVER_LONG_RULE)
            },
        }

    def require(self, kind: str) -> None:
        """Refuse an endpoint that does not fit the model (translate on a language model...)."""
        if kind == self.kind:
            return
        if self.kind == LANGUAGE_MODEL:
            raise ServeError("this server holds a language model; use POST /v1/generate with a prompt", 400)
        raise ServeError("this server holds a translation model; use POST /v1/translate with texts", 400)

    # --- translation ---------------------------------------------------------------------

    def translate(self, req: TranslateRequest) -> list[dict[str, Any]]:
        """`Translation` dicts for `req.texts`, in order, decoded as one batch (the one text
        pipeline of qkv.text: an over-long text is cut, with a warning)."""
        self.require(TRANSLATION)
        sources = [self.check_source(text, f"text {i}") for i, text in enumerate(req.texts)]
        hyps = self.search([ids for ids, _ in sources], decode_config(req))
        return [
            {"source": text, "text": self.tgt.decode(h[0].tokens), "hypotheses": [self.hypothesis(x) for x in h],
             "warnings": w}
            for text, h, (_, w) in zip(req.texts, hyps, sources)
        ]

    def check_source(self, text: str, name: str) -> tuple[list[int], list[str]]:
        """The text's source ids by the over-long rule, with its warnings; a text with no tokens is refused."""
        warnings: list[str] = []
        ids = source_ids(self.run, text, name, warnings.append)
        if not ids:
            raise ServeError(f"{name} has no tokens after tokenization; send some text")
        return ids, warnings

    def search(self, ids: list[list[int]], dcfg: DecodeConfig) -> list[list[Any]]:
        """n-best hypotheses of each source: qkv's own search, or CTranslate2's (same tokens)."""
        return translate_sources(self.run, ids, dcfg, batch_size=len(ids), name=lambda i: f"text {i}",
                                 backend=self.backend)

    def hypothesis(self, h: Any) -> dict[str, Any]:
        return {"text": self.tgt.decode(h.tokens), "tokens": self.labels(h.tokens), "score": h.score,
                "log_prob": h.log_prob}

    def labels(self, ids: list[int]) -> list[str]:
        """Readable token strings of target ids (BPE's byte-level "Ġcat" shown as "␣cat")."""
        return [display_token(self.tgt, i) for i in ids]

    # --- language model ------------------------------------------------------------------

    def generate(self, req: GenerateRequest) -> dict[str, Any]:
        self.require(LANGUAGE_MODEL)
        warnings: list[str] = []
        prompt = prompt_ids(self.run, req.prompt, warnings.append)
        sampler = Sampler(req.sample, req.temperature, req.top_k, req.top_p, req.seed)
        new = generate(self.model, prompt, req.max_new_tokens, sampler=sampler)
        return {"prompt": req.prompt, "text": self.tgt.decode(new), "tokens": self.labels(new), "warnings": warnings}

    # --- the explorer --------------------------------------------------------------------

    def explain(self, text: str, top_k: int, max_new_tokens: int) -> dict[str, Any]:
        """The model's greedy output for `text`, written by the server's engine (`engine`: qkv's
        own search or CTranslate2), traced on the PyTorch weights with every attention map and
        every head's steps kept (`qkv.explain.text.explain_text`, as `qkv explain`); a language
        model's `output_tokens` include the prompt, and its steps start at the first new token."""
        start = time.perf_counter()
        e = explain_text(self.run, text, max_new_tokens=max_new_tokens, backend=self.backend)
        tr = e.trace
        translation = self.kind == TRANSLATION
        return {
            "kind": self.kind,
            "engine": self.engine,
            "source": text,
            "source_tokens": tr.src.tokens if translation else [],
            "output": self.tgt.decode(e.output),
            "output_tokens": tr.tgt.tokens[1:] if translation else tr.tgt.tokens,
            "warnings": e.warnings,
            **explain_view.explain_json(tr, top_k, first_step=e.first_step),
            "elapsed_ms": round(1000 * (time.perf_counter() - start), 2),
        }


def decode_config(req: TranslateRequest) -> DecodeConfig:
    """The request's search options as a `DecodeConfig`."""
    a, b = (0.0, req.max_new_tokens) if req.max_new_tokens else (1.5, 10)
    return DecodeConfig(
        beam_size=req.beam_size, n_best=req.n_best, length_penalty=req.length_penalty, sample=req.sample,
        temperature=req.temperature, top_k=req.top_k, top_p=req.top_p, seed=req.seed,
        max_len_a=a, max_len_b=b,
    )
