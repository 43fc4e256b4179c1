"""The words of qkv's two pages, in English and Korean: one table for the `qkv explain` page and the explorer.

    w = Words("ko")
    w("page.tokens.h")                                     # '1. 토큰 (token)'
    w.of(msg("step.proj.cols", head=1, cols="8..15", d=8))  # a message built once, said in any language

`STRINGS[lang][key]` is a template: `{name}` is filled from the message's arguments (nothing else
is special, so Python's `say` and the explorer's JavaScript fill it the same way). Keys that end in
`_html` hold trusted markup (their arguments are escaped); every other value is plain text.
Keys: `page.*` the `qkv explain` page, `explorer.*` the explorer page, `step.*` and `kind.*` both:
the steps of one head's attention are built once as messages (`qkv.explain.steps`) and said by
either page. The server hands this same table to the explorer (`qkv.serve.app`).

Korean follows the usual Korean ML terms, with the English term beside the first use on a page:
어텐션 (attention), 쿼리 (query), 키 (key), 값 (value), 소프트맥스 (softmax), 마스크 (mask), 헤드 (head),
층 (layer), 임베딩 (embedding), 위치 인코딩 (positional encoding), 정규화 (normalization),
교차 어텐션 (cross-attention). Model text (tokens, the user's sentence) is never translated.
"""

from __future__ import annotations

import html
import re
from typing import Any

from qkv.errors import ConfigError

LANGUAGES = {"en": "English", "ko": "한국어"}       # each language's name, in itself
ENGLISH_NAMES = {"en": "English", "ko": "Korean"}   # for messages any terminal can print
DEFAULT_LANGUAGE = "en"
PLACEHOLDER = re.compile(r"\{(\w+)\}")

Msg = dict[str, Any]          # {"key": str, "args": {name: str | int | float | Msg}}: JSON as it is


def msg(key: str, **args: Any) -> Msg:
    """A message to be said later in any language (the explorer gets it as JSON)."""
    return {"key": key, "args": args}


def raw(text: str) -> Msg:
    """A message that is the same in every language (a formula, a tensor's name)."""
    return msg("raw", text=text)


def check_lang(lang: object) -> str:
    """`lang` if it is one of LANGUAGES, else a one-line ConfigError listing the choices."""
    if lang not in LANGUAGES:
        choices = ", ".join(f"{code} ({ENGLISH_NAMES[code]})" for code in LANGUAGES)
        raise ConfigError(f"--lang must be one of {choices}; got {lang!r}")
    return str(lang)


def fill(template: str, args: dict[str, str]) -> str:
    return PLACEHOLDER.sub(lambda m: args[m.group(1)], template)


class Words:
    """The strings of one language: `w(key, **args)` plain text, `w.html(key, **args)` for a page."""

    def __init__(self, lang: str = DEFAULT_LANGUAGE):
        self.lang = check_lang(lang)
        self.table = STRINGS[self.lang]

    def __call__(self, key: str, **args: Any) -> str:
        return fill(self.table[key], {k: self._arg(v) for k, v in args.items()})

    def of(self, m: Msg) -> str:
        return self(m["key"], **m["args"])

    def html(self, key: str, **args: Any) -> str:
        """The text escaped for HTML; a `_html` key's own markup is kept (its arguments are escaped)."""
        values = {k: html.escape(self._arg(v)) for k, v in args.items()}
        template = self.table[key] if key.endswith("_html") else html.escape(self.table[key])
        return fill(template, values)

    def _arg(self, value: Any) -> str:
        return self.of(value) if isinstance(value, dict) else str(value)


EN: dict[str, str] = {
    "raw": "{text}",
    # --- the kinds of attention and the stacks (both pages) ------------------------------------
    "kind.enc": "encoder self-attention",
    "kind.dec": "decoder masked self-attention",
    "kind.cross": "cross-attention",
    "kind.title": "layer {layer} {kind}",
    "kind.title_head": "layer {layer} {kind}, head {head}",
    "stack.encoder": "encoder",
    "stack.decoder": "decoder",
    # --- one head's attention, step by step (both pages) ---------------------------------------
    "step.table.stream": "the residual stream",
    "step.table.gain": "gain g",
    "step.table.bias": "bias b",
    "step.table.norm_x": "x = the norm's output",
    "step.table.norm_h": "h = the norm's output",
    "step.table.memory": "m: the encoder output",
    "step.eq.rmsnorm": "RMSNorm(x) = x / √(mean(x²) + ε) · g,   ε = {eps}",
    "step.eq.layernorm": "LayerNorm(x) = (x − mean(x)) / √(var(x) + ε) · g + b,   ε = {eps}   "
                         "(var: the mean of squares, not n − 1)",
    "step.input.norm_title": "0. Normalize the residual stream (pre-LN)",
    "step.input.norm_text": "This model is pre-LN: the attention does not read the residual stream itself but its "
                            "{norm}, computed token by token with the gain g below.",
    "step.input.norm_text_bias": "This model is pre-LN: the attention does not read the residual stream itself but "
                                 "its {norm}, computed token by token with the gain g and bias b below.",
    "step.input.cross": "Keys and values come from m, the encoder's output.",
    "step.input.title": "0. The input x",
    "step.input.text": "This model is post-LN: the attention reads the residual stream as it is; its LayerNorm "
                       "comes after the residual addition.",
    "step.input.text_first": "This model is post-LN: the attention reads the residual stream as it is (the "
                             "embeddings, section 2); its LayerNorm comes after the residual addition.",
    "step.input.eq": "x = the residual stream",
    "step.proj.title": "1. Project queries, keys and values",
    "step.proj.from_cross": "Queries come from x; keys and values from m.",
    "step.proj.from_self": "Queries, keys and values all come from x.",
    "step.proj.cols": "Head {head} uses columns {cols} of W_Q (d_head = {d}).",
    "step.proj.gqa": "This model uses grouped-query attention: {kv_heads} key/value heads for {heads} query heads, "
                     "so query heads {first}..{last} share key/value head {kv}: head {head} reads columns "
                     "{kv_cols} of W_K and W_V.",
    "step.proj.own": "Head {head} has its own keys and values: columns {kv_cols} of W_K and W_V.",
    "step.proj.rotated_next": "Q and K are rotated in the next step.",
    "step.proj.normed_next": "Q and K are normalized in the next step.",
    "step.proj.normed_rotated_next": "Q and K are normalized in the next step, then rotated.",
    "step.table.q_before_norm": "Q before QK-norm",
    "step.table.k_before_norm": "K before QK-norm",
    "step.qk_norm.title": "1a. Normalize each head's queries and keys (QK-norm)",
    "step.qk_norm.text": "Each query and each key vector of the head is divided by its root mean square and "
                         "multiplied by a learned gain, one for queries and one for keys, shared by all heads "
                         "(Henry et al., 2020; Dehghani et al., 2023; as in Gemma 3 and Qwen3). However large W_Q "
                         "and W_K grow, the scores below stay bounded (|Q Kᵀ| ≤ d_head · max|g_Q| · max|g_K|), so "
                         "softmax cannot saturate.",
    "step.qk_norm.rope_after": "The rotation comes after the norm.",
    "step.qk_norm.eq": "Q ← Q / √(mean(Q²) + ε) · g_Q,   K ← K / √(mean(K²) + ε) · g_K   (each row of d_head "
                       "numbers),   ε = {eps}",
    "step.table.gain_q": "gain g_Q",
    "step.table.gain_k": "gain g_K",
    "step.table.q_normed": "Q normalized",
    "step.table.k_normed": "K normalized",
    "step.table.q_normed_rope": "Q normalized (rotated next)",
    "step.table.k_normed_rope": "K normalized (rotated next)",
    "step.table.q_before": "Q before the rotation",
    "step.table.k_before": "K before the rotation",
    "step.rope.title": "1b. Rotate queries and keys by their positions (RoPE)",
    "step.rope.text": "Each pair of dimensions (2i, 2i+1) of a query or key at position p is turned by the angle "
                      "p · {theta}^(−2i/{d}) (the table below, one column per pair i): fast clocks in the first "
                      "pairs, slow ones in the last. A rotation keeps the vector's length, and the dot product of "
                      "a query turned by m and a key turned by n depends only on m − n, so the scores below see "
                      "relative positions.",
    "step.rope.eq": "(q₂ᵢ, q₂ᵢ₊₁) ← (q₂ᵢ cos pθᵢ − q₂ᵢ₊₁ sin pθᵢ,  q₂ᵢ sin pθᵢ + q₂ᵢ₊₁ cos pθᵢ),   the same for k",
    "step.table.angle": "angle pθᵢ (radians)",
    "step.table.q_rotated": "Q rotated",
    "step.table.k_rotated": "K rotated",
    "step.proj.embed_next": "V gets its tokens' value embeddings in step 1c.",
    "step.table.v_before_embed": "V before the value embeddings",
    "step.value_embed.title": "1c. Add each token's value embedding to V",
    "step.value_embed.text": "This layer has a table E_V with one learned vector per token of the vocabulary "
                             "(value embeddings, from the modded-nanogpt speed records, 2024). The row of each "
                             "key token is added to that token's value, so what the token is reaches the mix "
                             "below directly, beside what W_V made of the stream. The table starts at zero and "
                             "is learned; queries and keys do not change.",
    "step.value_embed.eq": "V ← V + E_V[token]   (the columns of this key/value head)",
    "step.table.value_embedding": "E_V[token]",
    "step.table.v_embedded": "V with the value embeddings",
    "step.scores.title": "2. Compare every query with every key",
    "step.scores.text": "A dot product: large when the query and key point the same way.",
    "step.scale.title": "3. Scale",
    "step.scale.text": "Divide by √d_head = √{d} = {sqrt}, so the spread of the scores does not grow with the "
                       "head size and softmax does not saturate.",
    "step.mask.title": "4. Mask",
    "step.mask.enc": "Only padding is hidden: every source token may look at every other.",
    "step.mask.dec": "The causal mask hides the future: position t may look at positions 0..t only (the upper "
                     "triangle). Hidden entries become −∞, so softmax gives them weight exactly 0.",
    "step.mask.cross": "Each target position may look at every (non-padding) source token.",
    "step.mask.eq": "scaled[i, j] = −∞ where position j is hidden from i",
    "step.table.masked": "masked scores",
    "step.softmax.title": "5. Softmax",
    "step.softmax.text": "Each row becomes weights that are positive and sum to 1: how much each query takes "
                         "from each key.",
    "step.softmax.eq": "weights = softmax(masked scores) (row by row)",
    "step.table.weights": "attention weights",
    "step.mix.title": "6. Mix the values",
    "step.mix.text": "Each output row is a weighted average of the value vectors.",
    "step.out.title": "7. Output projection",
    "step.out.text": "The heads' results are concatenated and multiplied by W_O; head {head}'s share is its mixed "
                     "values times its rows of W_O. Adding all heads' shares and the bias gives the attention "
                     "output, which joins the residual stream.",
    "step.out.eq": "head_out = mixed W_O[rows of head {head}],   out = Σ heads{bias}",
    "step.table.head_out": "head {head}'s share of the output",
    "step.table.out": "attention output (all heads)",
    "step.final.title": "The final norm",
    "step.final.text": "With pre-LN the residual stream is never normalized inside the layers, so one more "
                       "{norm} turns the last layer's output into h.",
    "step.softcap.title": "The logit soft-cap",
    "step.softcap.text": "The output layer's logits z = h W_vocab are squashed into (−{cap}, {cap}) by "
                         "cap · tanh(z / cap) (Gemma 2, Gemma Team 2024): small logits pass almost unchanged, large "
                         "ones bend towards ±cap, so no token can be pushed to an ever larger logit. Softmax reads the "
                         "capped logits. The tokens below are those most likely at some step.",
    "step.softcap.eq": "logits = {cap} · tanh(z / {cap})",
    "step.table.capped": "capped logits",
    # --- the qkv explain page ------------------------------------------------------------------
    "page.title_default": "How the Transformer read this",
    "page.title": "How {run} reads “{text}”",
    "page.title_target": "How {run} reads “{text}” → “{target}”",
    "page.meta.model": "model",
    "page.meta.model_value": "{arch}, {layers}, d_model={d_model}, {heads} heads of d_head={d_head}, {ln}",
    "page.arch.encoder-decoder": "encoder-decoder",
    "page.arch.decoder-only": "decoder-only",
    "page.layers_ed": "{enc} encoder + {dec} decoder layers",
    "page.layers_lm": "{dec} decoder layers",
    "page.pre_ln": "pre-LN",
    "page.post_ln": "post-LN (as in the paper)",
    "page.meta.since": "since 2017",
    "page.since.rope": "rotary positions (RoPE)",
    "page.since.rmsnorm": "RMSNorm",
    "page.since.gqa": "grouped-query attention ({n} key/value heads)",
    "page.since.qk_norm": "QK-norm",
    "page.since.softcap": "logits soft-capped at ±{cap}",
    "page.since.value_embeddings": "value embeddings",
    "page.meta.source": "source",
    "page.meta.decoder_input": "decoder input",
    "page.note.untrained": "{path} has no training log ({file}): the model may be untrained, so its attention and "
                           "predictions are close to random",
    "page.note.own_translation": "no --target given: explaining the model's own greedy translation {text}",
    "page.note.own_continuation": "no --target given: explaining the model's own greedy continuation {text}",
    "page.tokens.h": "1. Tokens",
    "page.tokens.p": "The tokenizer cuts the text into tokens and looks up each one's id. Spaces are shown as ␣.",
    "page.tokens.source_h": "Source (the encoder's input)",
    "page.tokens.target_h": "Target, shifted right (the decoder's input)",
    "page.tokens.target_p_html": "The decoder reads <code>&lt;bos&gt;</code> followed by the target and, at every "
                                 "position, predicts the next token.",
    "page.tokens.text_h": "Text (the decoder's input)",
    "page.tokens.text_p": "At every position the model predicts the next token.",
    "page.tokens.position": "position",
    "page.tokens.token": "token",
    "page.tokens.id": "id",
    "page.emb.h": "2. Embeddings and positions",
    "page.emb.p": "Each token id selects a row of the embedding matrix (a learned vector), scaled by √d_model. "
                  "Attention itself ignores order, so a positional encoding is added: a vector that depends only "
                  "on the position. The sum is what the first layer sees.",
    "page.emb.rope_h": "2. Embeddings (positions come later, by rotation)",
    "page.emb.rope_p": "Each token id selects a row of the embedding matrix (a learned vector). This model uses "
                       "rotary positions (RoPE): nothing is added here; instead every attention turns each query "
                       "and key by an angle proportional to its position (section 3, step 1b).",
    "page.emb.cap_token": "token embedding × √d_model = × {scale}",
    "page.emb.cap_pe": "+ positional encoding",
    "page.emb.cap_sum": "= input of layer 0",
    "page.emb.fig_token": "token embedding × {scale}",
    "page.emb.fig_pe": "positional encoding",
    "page.emb.fig_sum": "sum: the first layer's input",
    "page.emb.fig_title_source": "source tokens as vectors of d_model={d} numbers",
    "page.emb.fig_title_input": "input tokens as vectors of d_model={d} numbers",
    "page.emb.alt": "embeddings",
    "page.attn.h": "3. Attention, step by step (layer {layer}, head {head})",
    "page.attn.p": "Attention is a soft search: each query is compared with every key, the scores are scaled and "
                   "masked, softmax turns them into weights, and the weights mix the values.",
    "page.attn.kinds_ed": "Each layer of this model has three: the encoder's self-attention, the decoder's "
                          "masked self-attention, and cross-attention, through which the decoder reads the source.",
    "page.attn.kinds_lm": "Each layer of this model has one: masked self-attention, in which every position looks "
                          "at itself and the positions before it.",
    "page.maps.h": "4. Attention maps (layer {layer}, head {head})",
    "page.maps.p": "Rows are queries (who is looking), columns keys (what is looked at). Darker = more weight; "
                   "hatched cells are hidden by the mask and get weight 0.",
    "page.maps.enc": "Every source token looks at the whole source.",
    "page.maps.dec": "The upper triangle is the future: hidden, exactly zero.",
    "page.maps.cross": "Which source tokens each target position reads: the alignment learned without being taught.",
    "page.heads.h": "5. All heads of layer {layer}",
    "page.heads.own": "Each head has its own W_Q, W_K, W_V, so it looks from its own viewpoint.",
    "page.heads.gqa": "Each head has its own W_Q, so it asks its own questions; with grouped-query attention the "
                      "{heads} query heads share {kv_heads} key/value heads (W_K, W_V): heads {g}j..{g}j+{g1} "
                      "read key/value head j.",
    "page.heads.alt": "{title}: all heads",
    "page.ffn.h": "6. Feed-forward and residual stream ({stack} layer {layer})",
    "page.ffn.p": "After attention, every position goes through the same two-layer network on its own. Each "
                  "sublayer adds its output to the residual stream ({where}).",
    "page.ffn.where_pre": "pre-LN: x + sublayer({norm}(x))",
    "page.ffn.where_post": "post-LN: {norm}(x + sublayer(x))",
    "page.ffn.eq_swiglu": "FFN(x) = (SiLU(x W₁) ⊙ x W₃) W₂   (SwiGLU, Shazeer 2020: a gate, 2/3 d_ff wide)",
    "page.ffn.hidden": "Hidden layer: {units} units, {active} of them active (positive) on average.",
    "page.ffn.token": "token",
    "page.ffn.in": "‖x‖ in",
    "page.ffn.out": "‖x‖ out",
    "page.block.attention": "attention",
    "page.block.feed-forward": "feed-forward",
    "page.ffn.caption": "Vector lengths (L2 norms) going into and out of each sublayer.",
    "page.ffn.post_note": "With post-LN every sublayer ends in LayerNorm, so the stream leaves it with length "
                          "≈ √d_model (times the norm's gain) whatever the sublayer added.",
    "page.rms.h": "RMSNorm",
    "page.rms.p_html": "This model normalises with RMSNorm (Zhang &amp; Sennrich, 2019): no mean is subtracted and "
                       "no bias added; each vector is divided by its root mean square and multiplied by a learned "
                       "gain g.",
    "page.rms.caption": "RMS of the vector each sublayer's norm divided by.",
    "page.pred.h": "7. Next-token probabilities",
    "page.pred.p": "The last layer's output goes through the output projection and softmax: a probability for every "
                   "token of the vocabulary. Green marks the token that actually comes next.",
    "page.pred.eq": "p(next | prefix) = softmax(h W_vocab)",
    "page.pred.eq_softcap": "p(next | prefix) = softmax({cap} · tanh(h W_vocab / {cap}))",
    "page.pred.step": "step",
    "page.pred.input": "input token",
    "page.pred.actual": "actual next",
    "page.final.post": "h is the last layer's output as it is: with post-LN every layer already ends in LayerNorm.",
    # --- pictures on the explain page -----------------------------------------------------------
    "plot.axis.cross_query": "target token (query)",
    "plot.axis.cross_key": "source token (key)",
    "plot.axis.enc_query": "source token (query)",
    "plot.axis.enc_key": "source token (key)",
    "plot.axis.dec_query": "target token (query)",
    "plot.axis.dec_key": "target token (key)",
    "plot.weight": "attention weight",
    "plot.head": "head {head}",
    "plot.all_heads": "{title}: all {n} heads",
    "plot.dimension": "dimension",
    # --- the explorer page ----------------------------------------------------------------------
    "explorer.title": "qkv explorer",
    "explorer.name": "explorer",
    "explorer.language": "Language",
    "explorer.loading": "loading the model…",
    "explorer.unreachable": "cannot reach the model: {error}",
    "explorer.api_docs": "API docs",
    "explorer.summary": "{kind} · {layers} · {heads} heads · d_model {d_model} · {params} parameters",
    "explorer.kind.translation": "translation model",
    "explorer.kind.language-model": "language model",
    "explorer.layers_ed": "{enc}+{dec} layers",
    "explorer.layers_lm": "{dec} layers",
    "explorer.source_label": "Source sentence",
    "explorer.prompt_label": "Prompt",
    "explorer.translate": "Translate",
    "explorer.generate": "Generate",
    "explorer.translation": "Translation",
    "explorer.continuation": "Continuation",
    "explorer.empty": "(empty)",
    "explorer.engine.qkv": "Written by qkv's own greedy search (PyTorch).",
    "explorer.engine.ct2": "Written by CTranslate2's greedy search; the steps below trace the PyTorch weights.",
    "explorer.timing": "explained in {ms} ms",
    "explorer.tokens": "Tokens",
    "explorer.line.source": "source",
    "explorer.line.output": "output",
    "explorer.line.sequence": "sequence",
    "explorer.attention": "Attention",
    "explorer.attention_help": "Each row is a query token, each column a key token it may look at; darker cells "
                               "get more weight, and every row sums to 1. Hover a cell for its value. Layers and "
                               "heads are counted from 0, as in qkv explain --layer/--head.",
    "explorer.kind": "Kind",
    "explorer.layer": "Layer",
    "explorer.head": "Head",
    "explorer.stack": "Stack",
    "explorer.norm": "Norm",
    "explorer.short.encoder": "Encoder self",
    "explorer.short.decoder": "Decoder masked self",
    "explorer.short.cross": "Cross",
    "explorer.map.encoder": "Encoder self-attention",
    "explorer.map.decoder": "Decoder masked self-attention",
    "explorer.map.cross": "Cross-attention (decoder → encoder)",
    "explorer.all_avg": "all (avg)",
    "explorer.avg": "avg",
    "explorer.head_n": "head {head}",
    "explorer.heads_avg": "all heads averaged",
    "explorer.heat_title": "{title} · layer {layer} · {head}",
    "explorer.weight": "attention weight",
    "explorer.all_heads": "All heads of this layer",
    "explorer.aria.heatmap": "attention heatmap",
    "explorer.walk": "Step by step",
    "explorer.walk_help": "The attention chosen above, for one head, with the model's own numbers: the same steps "
                          "as the qkv explain page. Big matrices keep their first rows and columns and the last.",
    "explorer.walk_title": "{title} · layer {layer} · head {head}",
    "explorer.walk_pick": "Choose one head above (not the average) to see its steps.",
    "explorer.rope": "Rotary positions (RoPE)",
    "explorer.rope_help_html": "This model adds no position vector to its token embeddings. Instead, every "
                               "self-attention turns each pair of dimensions (2i, 2i+1) of a query or key at position "
                               "p by the angle p·θ<sub>i</sub>, with θ<sub>i</sub> = {theta}<sup>−2i/d_head</sup>: the "
                               "first pairs are fast clocks, the last ones slow. A turn keeps the vector's length, "
                               "and a query turned by m and a key turned by n have a dot product that depends only "
                               "on m − n: the scores see relative positions. Grey: the vector before the turn; "
                               "blue: after (the model's own numbers).",
    "explorer.rope_title": "{stack} layer {layer} · head {head} · “{token}” at position {pos}: each pair i turned "
                           "by {pos}·θᵢ",
    "explorer.rope_check": "Largest gap between the angle each pair was turned by and {pos}·θᵢ: {gap}° (pairs "
                           "shorter than 1e-3 left out: their angle is noise).",
    "explorer.rope_short": "Every pair here is too short to show an angle.",
    "explorer.aria.rope_q": "query pairs before and after the turn",
    "explorer.aria.rope_k": "key pairs before and after the turn",
    "explorer.rms": "RMSNorm",
    "explorer.rms_help": "This model normalises with RMSNorm (Zhang & Sennrich, 2019) instead of LayerNorm: no "
                         "mean is subtracted and no bias added. Each vector is divided by its root mean square, "
                         "then multiplied by a learned gain g: RMSNorm(x) = x / √(mean(x²) + ε) · g.",
    "explorer.rms_bars": "RMS of each token's vector (what the norm divided it by); click a bar or a token",
    "explorer.rms_values": "value of each dimension",
    "explorer.rms_title": "{stack}, {where} · “{token}” (position {pos}): x, then x / RMS(x), then · g (the output)",
    "explorer.rms_where": "layer {layer}, before the {block}",
    "explorer.rms_final": "the final norm",
    "explorer.rms_check": "√mean(x²) = {rms} (the model divided by {model}, ε included); length |x| = {x} → "
                          "|x / RMS| = {divided} (√d_model = {root}) → |output| = {out}.",
    "explorer.final": "final",
    "explorer.block.attention": "attention",
    "explorer.block.cross-attention": "cross-attention",
    "explorer.block.feed-forward": "feed-forward",
    "explorer.block.final": "final",
    "explorer.aria.rms_bars": "RMS per token",
    "explorer.aria.rms_strips": "the vector before, divided by its RMS, and times the gain",
    "explorer.next": "Next-token probabilities",
    "explorer.next_help": "At each step, the tokens the model found most likely next; the chosen one is highlighted.",
    "explorer.step_head": "step {pos} · after {context} → {chosen}",
}

KO: dict[str, str] = {
    "raw": "{text}",
    "kind.enc": "인코더 셀프 어텐션",
    "kind.dec": "디코더 마스크드 셀프 어텐션",
    "kind.cross": "교차 어텐션",
    "kind.title": "층 {layer} {kind}",
    "kind.title_head": "층 {layer} {kind}, 헤드 {head}",
    "stack.encoder": "인코더",
    "stack.decoder": "디코더",
    "step.table.stream": "잔차 스트림",
    "step.table.gain": "이득 g",
    "step.table.bias": "편향 b",
    "step.table.norm_x": "x = 정규화의 출력",
    "step.table.norm_h": "h = 정규화의 출력",
    "step.table.memory": "m: 인코더 출력",
    "step.eq.rmsnorm": "RMSNorm(x) = x / √(mean(x²) + ε) · g,   ε = {eps}",
    "step.eq.layernorm": "LayerNorm(x) = (x − mean(x)) / √(var(x) + ε) · g + b,   ε = {eps}   "
                         "(var: 편차 제곱의 평균, n − 1로 나누지 않음)",
    "step.input.norm_title": "0. 잔차 스트림 정규화 (normalization, pre-LN)",
    "step.input.norm_text": "이 모델은 pre-LN입니다: 어텐션은 잔차 스트림 (residual stream)을 그대로 읽지 않고 그 {norm} "
                            "결과를 읽습니다. 정규화는 토큰마다 따로, 아래의 이득 g로 계산합니다.",
    "step.input.norm_text_bias": "이 모델은 pre-LN입니다: 어텐션은 잔차 스트림 (residual stream)을 그대로 읽지 않고 "
                                 "그 {norm} 결과를 읽습니다. 정규화는 토큰마다 따로, 아래의 이득 g와 편향 b로 "
                                 "계산합니다.",
    "step.input.cross": "키와 값은 인코더의 출력인 m에서 옵니다.",
    "step.input.title": "0. 입력 x",
    "step.input.text": "이 모델은 post-LN입니다: 어텐션은 잔차 스트림 (residual stream)을 그대로 읽고, 층 정규화 "
                       "(normalization, LayerNorm)는 잔차를 더한 뒤에 옵니다.",
    "step.input.text_first": "이 모델은 post-LN입니다: 어텐션은 잔차 스트림 (residual stream)을 그대로 읽고 (2절의 "
                             "임베딩), 층 정규화 (normalization, LayerNorm)는 잔차를 더한 뒤에 옵니다.",
    "step.input.eq": "x = 잔차 스트림",
    "step.proj.title": "1. 쿼리, 키, 값으로 투영",
    "step.proj.from_cross": "쿼리는 x에서, 키와 값은 m에서 나옵니다.",
    "step.proj.from_self": "쿼리, 키, 값이 모두 x에서 나옵니다.",
    "step.proj.cols": "{head}번 헤드는 W_Q의 {cols}열을 씁니다 (d_head = {d}).",
    "step.proj.gqa": "이 모델은 그룹 쿼리 어텐션 (grouped-query attention)을 씁니다: 쿼리 헤드 {heads}개에 키/값 "
                     "헤드가 {kv_heads}개이므로 쿼리 헤드 {first}..{last}번이 {kv}번 키/값 헤드를 함께 씁니다: "
                     "{head}번 헤드는 W_K와 W_V의 {kv_cols}열을 읽습니다.",
    "step.proj.own": "{head}번 헤드는 자기만의 키와 값을 가집니다: W_K와 W_V의 {kv_cols}열입니다.",
    "step.proj.rotated_next": "Q와 K는 다음 단계에서 회전합니다.",
    "step.proj.normed_next": "Q와 K는 다음 단계에서 정규화합니다.",
    "step.proj.normed_rotated_next": "Q와 K는 다음 단계에서 정규화한 뒤 회전합니다.",
    "step.table.q_before_norm": "QK 정규화 전의 Q",
    "step.table.k_before_norm": "QK 정규화 전의 K",
    "step.qk_norm.title": "1a. 헤드마다 쿼리와 키 정규화 (QK 정규화, QK-norm)",
    "step.qk_norm.text": "헤드의 쿼리 (query) 벡터와 키 (key) 벡터를 하나하나 제곱평균제곱근 (root mean square)으로 "
                         "나누고 학습된 이득 (gain)을 곱합니다. 이득은 쿼리에 하나, 키에 하나이며 모든 헤드가 함께 "
                         "씁니다 (Henry 외, 2020; Dehghani 외, 2023; Gemma 3과 Qwen3도 같음). W_Q와 W_K가 아무리 "
                         "커져도 아래 점수는 유계입니다 (|Q Kᵀ| ≤ d_head · max|g_Q| · max|g_K|): 소프트맥스 (softmax)가 "
                         "포화될 수 없습니다.",
    "step.qk_norm.rope_after": "회전은 정규화 다음에 옵니다.",
    "step.qk_norm.eq": "Q ← Q / √(mean(Q²) + ε) · g_Q,   K ← K / √(mean(K²) + ε) · g_K   (d_head개의 수로 된 "
                       "행마다),   ε = {eps}",
    "step.table.gain_q": "이득 g_Q",
    "step.table.gain_k": "이득 g_K",
    "step.table.q_normed": "정규화한 Q",
    "step.table.k_normed": "정규화한 K",
    "step.table.q_normed_rope": "정규화한 Q (다음에 회전)",
    "step.table.k_normed_rope": "정규화한 K (다음에 회전)",
    "step.table.q_before": "회전 전의 Q",
    "step.table.k_before": "회전 전의 K",
    "step.rope.title": "1b. 쿼리와 키를 위치만큼 회전 (RoPE)",
    "step.rope.text": "위치 p에 있는 쿼리나 키의 차원 쌍 (2i, 2i+1)은 각도 p · {theta}^(−2i/{d})만큼 돌아갑니다 "
                      "(아래 표, 쌍 i마다 한 열): 앞쪽 쌍은 빠른 시계, 뒤쪽 쌍은 느린 시계입니다. 회전은 벡터의 "
                      "길이를 바꾸지 않고, m만큼 돈 쿼리와 n만큼 돈 키의 내적은 m − n에만 달려 있으므로 아래의 "
                      "점수는 상대 위치를 봅니다.",
    "step.rope.eq": "(q₂ᵢ, q₂ᵢ₊₁) ← (q₂ᵢ cos pθᵢ − q₂ᵢ₊₁ sin pθᵢ,  q₂ᵢ sin pθᵢ + q₂ᵢ₊₁ cos pθᵢ),   k도 마찬가지",
    "step.table.angle": "각도 pθᵢ (라디안)",
    "step.table.q_rotated": "회전한 Q",
    "step.table.k_rotated": "회전한 K",
    "step.proj.embed_next": "V에는 1c 단계에서 토큰의 값 임베딩 (value embedding)이 더해집니다.",
    "step.table.v_before_embed": "값 임베딩을 더하기 전의 V",
    "step.value_embed.title": "1c. 토큰마다 값 임베딩을 V에 더하기",
    "step.value_embed.text": "이 층에는 어휘의 토큰마다 학습된 벡터가 하나씩 있는 표 E_V가 있습니다 (값 임베딩, "
                             "value embeddings: modded-nanogpt 속도 기록, 2024). 키 토큰마다 그 행을 그 토큰의 "
                             "값에 더하므로, 토큰이 무엇인지가 W_V가 흐름에서 만든 것과 나란히 아래의 섞기에 "
                             "곧바로 들어갑니다. 표는 0에서 시작해 학습되며, 쿼리와 키는 바뀌지 않습니다.",
    "step.value_embed.eq": "V ← V + E_V[토큰]   (이 키/값 헤드의 열)",
    "step.table.value_embedding": "E_V[토큰]",
    "step.table.v_embedded": "값 임베딩을 더한 V",
    "step.scores.title": "2. 모든 쿼리를 모든 키와 비교",
    "step.scores.text": "내적 (dot product): 쿼리와 키가 같은 방향을 가리킬수록 큽니다.",
    "step.scale.title": "3. 스케일링",
    "step.scale.text": "점수를 √d_head (= √{d} = {sqrt})로 나눕니다. 그래야 점수가 퍼진 정도가 헤드 크기와 함께 커지지 않고 "
                       "소프트맥스가 포화되지 않습니다.",
    "step.mask.title": "4. 마스크",
    "step.mask.enc": "패딩만 가립니다: 모든 원문 토큰이 다른 모든 원문 토큰을 볼 수 있습니다.",
    "step.mask.dec": "인과 마스크 (causal mask)가 미래를 가립니다: 위치 t는 위치 0..t만 볼 수 있습니다 (위쪽 "
                     "삼각형이 가려집니다). 가려진 칸은 −∞가 되므로 소프트맥스가 주는 가중치는 정확히 0입니다.",
    "step.mask.cross": "각 목표 위치는 (패딩이 아닌) 모든 원문 토큰을 볼 수 있습니다.",
    "step.mask.eq": "위치 j가 i에게서 가려진 곳: scaled[i, j] = −∞",
    "step.table.masked": "마스크를 씌운 점수",
    "step.softmax.title": "5. 소프트맥스",
    "step.softmax.text": "각 행이 양수이고 합이 1인 가중치가 됩니다: 각 쿼리가 각 키에서 얼마나 가져가는지입니다.",
    "step.softmax.eq": "weights = softmax(마스크를 씌운 점수) (행마다)",
    "step.table.weights": "어텐션 가중치",
    "step.mix.title": "6. 값 섞기",
    "step.mix.text": "각 출력 행은 값 벡터들의 가중 평균입니다.",
    "step.out.title": "7. 출력 투영",
    "step.out.text": "헤드들의 결과를 이어 붙여 W_O를 곱합니다. 헤드 {head}의 몫은 그 헤드의 섞인 값에 W_O에서 그 "
                     "헤드에 해당하는 행들을 곱한 것입니다. 모든 헤드의 몫과 편향을 더하면 어텐션 출력이 되고, 이 "
                     "출력이 잔차 스트림에 더해집니다.",
    "step.out.eq": "head_out = mixed W_O[헤드 {head}의 행],   out = Σ 헤드{bias}",
    "step.table.head_out": "출력 중 헤드 {head}의 몫",
    "step.table.out": "어텐션 출력 (모든 헤드)",
    "step.final.title": "마지막 정규화",
    "step.final.text": "pre-LN에서는 잔차 스트림이 층 안에서 정규화되지 않으므로, {norm}을 한 번 더 거쳐 마지막 층의 "
                       "출력이 h가 됩니다.",
    "step.softcap.title": "로짓 소프트 캡 (logit soft-cap)",
    "step.softcap.text": "출력 층의 로짓 (logit) z = h W_vocab은 cap · tanh(z / cap)을 거쳐 (−{cap}, {cap}) 안으로 "
                         "눌립니다 (Gemma 2, Gemma Team 2024): 작은 로짓은 거의 그대로 지나가고 큰 로짓은 ±cap 쪽으로 "
                         "휘므로, 어떤 토큰의 로짓도 끝없이 커질 수 없습니다. 소프트맥스는 캡을 씌운 로짓을 읽습니다. "
                         "아래 토큰들은 어느 단계에서든 확률이 가장 높았던 토큰들입니다.",
    "step.softcap.eq": "로짓 = {cap} · tanh(z / {cap})",
    "step.table.capped": "캡을 씌운 로짓",
    "page.title_default": "트랜스포머가 이 문장을 읽은 과정",
    "page.title": "{run} 모델이 읽는 과정: “{text}”",
    "page.title_target": "{run} 모델이 읽는 과정: “{text}” → “{target}”",
    "page.meta.model": "모델",
    "page.meta.model_value": "{arch}, {layers}, d_model={d_model}, 헤드 (head) {heads}개 (각 d_head={d_head}), {ln}",
    "page.arch.encoder-decoder": "인코더-디코더 (encoder-decoder)",
    "page.arch.decoder-only": "디코더 전용 (decoder-only)",
    "page.layers_ed": "인코더 {enc}층 + 디코더 {dec}층 (layer)",
    "page.layers_lm": "디코더 {dec}층 (layer)",
    "page.pre_ln": "pre-LN",
    "page.post_ln": "post-LN (논문과 같음)",
    "page.meta.since": "2017년 이후",
    "page.since.rope": "회전 위치 인코딩 (rotary positional encoding, RoPE)",
    "page.since.rmsnorm": "RMSNorm",
    "page.since.gqa": "그룹 쿼리 어텐션 (grouped-query attention, 키/값 헤드 {n}개)",
    "page.since.qk_norm": "QK 정규화 (QK-norm)",
    "page.since.softcap": "로짓 소프트 캡 (logit soft-cap, ±{cap})",
    "page.since.value_embeddings": "값 임베딩 (value embeddings)",
    "page.meta.source": "원문",
    "page.meta.decoder_input": "디코더 입력",
    "page.note.untrained": "{path}에 학습 기록 ({file})이 없습니다: 학습되지 않은 모델일 수 있어 어텐션과 예측이 "
                           "무작위에 가깝습니다",
    "page.note.own_translation": "--target이 없어 모델 자신이 탐욕 탐색으로 쓴 번역을 설명합니다: {text}",
    "page.note.own_continuation": "--target이 없어 모델 자신이 탐욕 탐색으로 이어 쓴 글을 설명합니다: {text}",
    "page.tokens.h": "1. 토큰 (token)",
    "page.tokens.p": "토크나이저 (tokenizer)가 텍스트를 토큰으로 자르고 토큰마다 id를 찾습니다. 공백은 ␣로 "
                     "표시합니다.",
    "page.tokens.source_h": "원문 (source, 인코더의 입력)",
    "page.tokens.target_h": "목표 문장 (target)을 오른쪽으로 한 칸 민 것 (디코더의 입력)",
    "page.tokens.target_p_html": "디코더는 <code>&lt;bos&gt;</code> 다음에 목표 문장을 읽고, 모든 위치에서 다음 "
                                 "토큰을 예측합니다.",
    "page.tokens.text_h": "텍스트 (디코더의 입력)",
    "page.tokens.text_p": "모델은 모든 위치에서 다음 토큰을 예측합니다.",
    "page.tokens.position": "위치",
    "page.tokens.token": "토큰",
    "page.tokens.id": "id",
    "page.emb.h": "2. 임베딩 (embedding)과 위치",
    "page.emb.p": "각 토큰 id는 임베딩 행렬의 한 행 (학습된 벡터)을 고르고, 그 벡터에 √d_model을 곱합니다. 어텐션 "
                  "(attention) 자체는 순서를 보지 못하므로 위치 인코딩 (positional encoding)을 더합니다: 위치에만 "
                  "달려 있는 벡터입니다. 그 합이 첫 층이 보는 입력입니다.",
    "page.emb.rope_h": "2. 임베딩 (embedding, 위치는 나중에 회전으로 들어갑니다)",
    "page.emb.rope_p": "각 토큰 id는 임베딩 행렬의 한 행 (학습된 벡터)을 고릅니다. 이 모델은 회전 위치 인코딩 "
                       "(rotary positional encoding, RoPE)을 씁니다: 여기서는 아무것도 더하지 않고, 대신 모든 어텐션 "
                       "(attention)이 각 쿼리 (query)와 키 (key)를 위치에 비례하는 각도만큼 돌립니다 (3절, 1b단계).",
    "page.emb.cap_token": "토큰 임베딩 × √d_model = × {scale}",
    "page.emb.cap_pe": "+ 위치 인코딩",
    "page.emb.cap_sum": "= 층 0의 입력",
    "page.emb.fig_token": "토큰 임베딩 × {scale}",
    "page.emb.fig_pe": "위치 인코딩",
    "page.emb.fig_sum": "합: 첫 층의 입력",
    "page.emb.fig_title_source": "d_model={d}개의 수로 된 벡터로서의 원문 토큰",
    "page.emb.fig_title_input": "d_model={d}개의 수로 된 벡터로서의 입력 토큰",
    "page.emb.alt": "임베딩",
    "page.attn.h": "3. 어텐션, 단계별로 (층 {layer}, 헤드 {head})",
    "page.attn.p": "어텐션은 부드러운 검색입니다: 각 쿼리 (query)를 모든 키 (key)와 비교하고, 점수를 스케일링하고 "
                   "마스크 (mask)로 가린 뒤, 소프트맥스 (softmax)가 점수를 가중치로 바꾸고, 그 가중치로 값 (value)을 "
                   "섞습니다.",
    "page.attn.kinds_ed": "이 모델의 층마다 어텐션이 셋 있습니다: 인코더의 셀프 어텐션 (self-attention), 디코더의 "
                          "마스크드 셀프 어텐션, 그리고 디코더가 원문을 읽는 교차 어텐션 (cross-attention)입니다.",
    "page.attn.kinds_lm": "이 모델의 층마다 어텐션이 하나 있습니다: 마스크드 셀프 어텐션 (masked self-attention)으로, "
                          "모든 위치가 자기 자신과 그 앞의 위치들을 봅니다.",
    "page.maps.h": "4. 어텐션 맵 (층 {layer}, 헤드 {head})",
    "page.maps.p": "행은 쿼리 (보는 쪽), 열은 키 (보이는 쪽)입니다. 진할수록 가중치가 큽니다; 빗금 친 칸은 마스크에 "
                   "가려져 가중치 0을 받습니다.",
    "page.maps.enc": "모든 원문 토큰이 원문 전체를 봅니다.",
    "page.maps.dec": "위쪽 삼각형은 미래입니다: 가려져 있고, 정확히 0입니다.",
    "page.maps.cross": "각 목표 위치가 어느 원문 토큰을 읽는지: 가르쳐 주지 않았는데도 배운 정렬 (alignment)입니다.",
    "page.heads.h": "5. 층 {layer}의 모든 헤드",
    "page.heads.own": "각 헤드는 자기만의 W_Q, W_K, W_V를 가지므로 저마다의 관점에서 봅니다.",
    "page.heads.gqa": "각 헤드는 자기만의 W_Q를 가지므로 저마다의 질문을 합니다; 그룹 쿼리 어텐션에서는 쿼리 헤드 "
                      "{heads}개가 키/값 헤드 {kv_heads}개 (W_K, W_V)를 나눠 씁니다: 헤드 {g}j..{g}j+{g1}번이 j번 "
                      "키/값 헤드를 읽습니다.",
    "page.heads.alt": "{title}: 모든 헤드",
    "page.ffn.h": "6. 피드포워드와 잔차 스트림 ({stack} 층 {layer})",
    "page.ffn.p": "어텐션 다음에는 모든 위치가 같은 2층 신경망을 각자 따로 지납니다. 각 하위 층 (sublayer)은 자기 "
                  "출력을 잔차 스트림에 더합니다 ({where}).",
    "page.ffn.where_pre": "pre-LN: x + 하위층({norm}(x))",
    "page.ffn.where_post": "post-LN: {norm}(x + 하위층(x))",
    "page.ffn.eq_swiglu": "FFN(x) = (SiLU(x W₁) ⊙ x W₃) W₂   (SwiGLU, Shazeer 2020: 게이트, 폭은 d_ff의 2/3)",
    "page.ffn.hidden": "은닉층: 유닛 {units}개, 평균적으로 그중 {active}가 활성 (양수)입니다.",
    "page.ffn.token": "토큰",
    "page.ffn.in": "‖x‖ 입력",
    "page.ffn.out": "‖x‖ 출력",
    "page.block.attention": "어텐션",
    "page.block.feed-forward": "피드포워드",
    "page.ffn.caption": "각 하위 층으로 들어가고 나오는 벡터의 길이 (L2 노름).",
    "page.ffn.post_note": "post-LN에서는 모든 하위 층이 LayerNorm으로 끝나므로, 하위 층이 무엇을 더했든 스트림은 "
                          "길이 ≈ √d_model (곱하기 정규화의 이득)로 나옵니다.",
    "page.rms.h": "RMSNorm",
    "page.rms.p_html": "이 모델은 RMSNorm (Zhang &amp; Sennrich, 2019)으로 정규화합니다: 평균을 빼지 않고 편향도 "
                       "더하지 않습니다. 각 벡터를 제곱평균제곱근 (root mean square)으로 나누고 학습된 이득 g를 "
                       "곱합니다.",
    "page.rms.caption": "각 하위 층의 정규화가 나눈 값, 곧 벡터의 RMS.",
    "page.pred.h": "7. 다음 토큰 확률",
    "page.pred.p": "마지막 층의 출력이 출력 투영과 소프트맥스를 지나 어휘의 모든 토큰에 대한 확률이 됩니다. 초록색은 "
                   "실제로 다음에 오는 토큰입니다.",
    "page.pred.eq": "p(다음 토큰 | 앞부분) = softmax(h W_vocab)",
    "page.pred.eq_softcap": "p(다음 토큰 | 앞부분) = softmax({cap} · tanh(h W_vocab / {cap}))",
    "page.pred.step": "단계",
    "page.pred.input": "입력 토큰",
    "page.pred.actual": "실제 다음 토큰",
    "page.final.post": "h는 마지막 층의 출력 그대로입니다: post-LN에서는 모든 층이 이미 LayerNorm으로 끝납니다.",
    "plot.axis.cross_query": "목표 토큰 (쿼리)",
    "plot.axis.cross_key": "원문 토큰 (키)",
    "plot.axis.enc_query": "원문 토큰 (쿼리)",
    "plot.axis.enc_key": "원문 토큰 (키)",
    "plot.axis.dec_query": "목표 토큰 (쿼리)",
    "plot.axis.dec_key": "목표 토큰 (키)",
    "plot.weight": "어텐션 가중치",
    "plot.head": "헤드 {head}",
    "plot.all_heads": "{title}: 헤드 {n}개 모두",
    "plot.dimension": "차원",
    "explorer.title": "qkv 탐색기",
    "explorer.name": "탐색기",
    "explorer.language": "언어",
    "explorer.loading": "모델을 불러오는 중…",
    "explorer.unreachable": "모델에 연결할 수 없습니다: {error}",
    "explorer.api_docs": "API 문서",
    "explorer.summary": "{kind} · {layers} · 헤드 (head) {heads}개 · d_model {d_model} · 파라미터 {params}개",
    "explorer.kind.translation": "번역 모델",
    "explorer.kind.language-model": "언어 모델",
    "explorer.layers_ed": "{enc}+{dec}층 (layer)",
    "explorer.layers_lm": "{dec}층 (layer)",
    "explorer.source_label": "원문 문장",
    "explorer.prompt_label": "프롬프트",
    "explorer.translate": "번역",
    "explorer.generate": "생성",
    "explorer.translation": "번역",
    "explorer.continuation": "이어 쓴 글",
    "explorer.empty": "(비어 있음)",
    "explorer.engine.qkv": "qkv 자체의 탐욕 탐색 (greedy search, PyTorch)이 쓴 글입니다.",
    "explorer.engine.ct2": "CTranslate2의 탐욕 탐색 (greedy search)이 쓴 글입니다. 아래 단계는 PyTorch 가중치로 "
                           "추적합니다.",
    "explorer.timing": "설명에 {ms} ms 걸림",
    "explorer.tokens": "토큰 (token)",
    "explorer.line.source": "원문",
    "explorer.line.output": "출력",
    "explorer.line.sequence": "시퀀스",
    "explorer.attention": "어텐션 (attention)",
    "explorer.attention_help": "각 행은 쿼리 (query) 토큰, 각 열은 그 쿼리가 볼 수 있는 키 (key) 토큰입니다. 진한 "
                               "칸일수록 가중치가 크고, 모든 행의 합은 1입니다. 칸 위에 마우스를 올리면 값이 "
                               "보입니다. 층과 헤드는 qkv explain --layer/--head처럼 0부터 셉니다.",
    "explorer.kind": "종류",
    "explorer.layer": "층",
    "explorer.head": "헤드",
    "explorer.stack": "스택",
    "explorer.norm": "정규화",
    "explorer.short.encoder": "인코더 셀프",
    "explorer.short.decoder": "디코더 마스크드 셀프",
    "explorer.short.cross": "교차",
    "explorer.map.encoder": "인코더 셀프 어텐션 (self-attention)",
    "explorer.map.decoder": "디코더 마스크드 셀프 어텐션 (masked self-attention)",
    "explorer.map.cross": "교차 어텐션 (cross-attention, 디코더 → 인코더)",
    "explorer.all_avg": "전체 (평균)",
    "explorer.avg": "평균",
    "explorer.head_n": "헤드 {head}",
    "explorer.heads_avg": "모든 헤드의 평균",
    "explorer.heat_title": "{title} · 층 {layer} · {head}",
    "explorer.weight": "어텐션 가중치",
    "explorer.all_heads": "이 층의 모든 헤드",
    "explorer.aria.heatmap": "어텐션 히트맵",
    "explorer.walk": "단계별로 보기",
    "explorer.walk_help": "위에서 고른 어텐션의 헤드 하나를 모델의 실제 수로 보여 줍니다: qkv explain 페이지와 같은 "
                          "단계입니다. 큰 행렬은 앞쪽 행과 열, 그리고 마지막 것만 남깁니다.",
    "explorer.walk_title": "{title} · 층 {layer} · 헤드 {head}",
    "explorer.walk_pick": "단계를 보려면 위에서 (평균이 아닌) 헤드 하나를 고르세요.",
    "explorer.rope": "회전 위치 인코딩 (RoPE)",
    "explorer.rope_help_html": "이 모델은 토큰 임베딩 (embedding)에 위치 벡터를 더하지 않습니다. 대신 모든 셀프 "
                               "어텐션이 위치 p에 있는 쿼리나 키의 차원 쌍 (2i, 2i+1)을 각도 p·θ<sub>i</sub>만큼 "
                               "돌립니다. 여기서 θ<sub>i</sub> = {theta}<sup>−2i/d_head</sup>입니다: 앞쪽 쌍은 빠른 "
                               "시계, 뒤쪽 쌍은 느린 시계입니다. 회전은 벡터의 길이를 바꾸지 않고, m만큼 돈 쿼리와 "
                               "n만큼 돈 키의 내적은 m − n에만 달려 있습니다: 점수가 상대 위치를 봅니다. 회색: 회전 "
                               "전의 벡터, 파란색: 회전 후 (모델의 실제 수).",
    "explorer.rope_title": "{stack} 층 {layer} · 헤드 {head} · 위치 {pos}의 “{token}”: 쌍 i마다 {pos}·θᵢ만큼 회전",
    "explorer.rope_check": "각 쌍이 실제로 돈 각도와 {pos}·θᵢ의 가장 큰 차이: {gap}° (길이가 1e-3보다 짧은 쌍은 "
                           "뺐습니다: 그 각도는 잡음입니다).",
    "explorer.rope_short": "여기서는 모든 쌍이 너무 짧아 각도를 보일 수 없습니다.",
    "explorer.aria.rope_q": "회전 전후의 쿼리 쌍",
    "explorer.aria.rope_k": "회전 전후의 키 쌍",
    "explorer.rms": "RMSNorm",
    "explorer.rms_help": "이 모델은 LayerNorm 대신 RMSNorm (Zhang & Sennrich, 2019)으로 정규화 (normalization)합니다: "
                         "평균을 빼지 않고 편향도 더하지 않습니다. 각 벡터를 제곱평균제곱근으로 나눈 뒤 학습된 이득 g를 "
                         "곱합니다: RMSNorm(x) = x / √(mean(x²) + ε) · g.",
    "explorer.rms_bars": "각 토큰 벡터의 RMS (정규화가 나눈 값); 막대나 토큰을 누르세요",
    "explorer.rms_values": "각 차원의 값",
    "explorer.rms_title": "{stack}, {where} · “{token}” (위치 {pos}): x, x / RMS(x), 그리고 · g (출력)",
    "explorer.rms_where": "층 {layer}, {block} 앞",
    "explorer.rms_final": "마지막 정규화",
    "explorer.rms_check": "√mean(x²) = {rms} (모델이 나눈 값은 {model}, ε 포함); 길이 |x| = {x} → |x / RMS| = "
                          "{divided} (√d_model = {root}) → |출력| = {out}.",
    "explorer.final": "마지막",
    "explorer.block.attention": "어텐션",
    "explorer.block.cross-attention": "교차 어텐션",
    "explorer.block.feed-forward": "피드포워드",
    "explorer.block.final": "마지막",
    "explorer.aria.rms_bars": "토큰별 RMS",
    "explorer.aria.rms_strips": "정규화 전의 벡터, RMS로 나눈 것, 이득을 곱한 것",
    "explorer.next": "다음 토큰 확률",
    "explorer.next_help": "각 단계에서 모델이 다음에 올 가능성이 가장 높다고 본 토큰들입니다. 고른 토큰을 강조합니다.",
    "explorer.step_head": "단계 {pos} · {context} 다음 → {chosen}",
}

STRINGS: dict[str, dict[str, str]] = {"en": EN, "ko": KO}
