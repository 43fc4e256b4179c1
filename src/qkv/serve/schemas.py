"""The JSON the server reads and writes, as pydantic models (they also make the OpenAPI schema).

Requests are strict: unknown keys, wrong types ("3" for 3) and out-of-range values are
answered with 422 and a message naming the field, so a typo never silently does nothing.
The limits below bound the work one request can ask for.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_TEXT_CHARS = 1000       # characters per text
MAX_BATCH = 32              # texts per /v1/translate request
MAX_NEW_TOKENS = 256        # tokens generated per text
MAX_EXPLAIN_CHARS = 200     # the explorer's sentence (attention maps grow with its square)
MAX_BODY_BYTES = 1 << 20    # request bodies larger than this are refused before parsing (413)

Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SamplingOptions(Request):
    """How to choose each next token: argmax (greedy) or a seeded draw."""

    sample: bool = Field(False, description="draw tokens instead of taking the most probable one")
    temperature: float = Field(1.0, ge=0.01, le=10.0)
    top_k: int = Field(0, ge=0, le=1000, description="0 = no top-k filter")
    top_p: float = Field(1.0, ge=0.001, le=1.0, description="1.0 = no nucleus filter")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="makes sampling repeatable")


class TranslateRequest(SamplingOptions):
    """A batch of source texts. `beam_size` 1 without `sample` is greedy search."""

    texts: list[Text] = Field(..., min_length=1, max_length=MAX_BATCH)
    beam_size: int = Field(1, ge=1, le=16)
    n_best: int = Field(1, ge=1, le=16, description="hypotheses returned per text (<= beam_size)")
    length_penalty: float = Field(0.6, ge=0.0, le=5.0, description="alpha of the GNMT length penalty")
    max_new_tokens: int | None = Field(
        None, ge=1, le=MAX_NEW_TOKENS, description="default: 1.5 * source length + 10"
    )

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [{"texts": ["hello world"], "beam_size": 4}]}
    )

    @model_validator(mode="after")
    def _search_fits(self) -> TranslateRequest:
        if self.n_best > self.beam_size:
            raise ValueError(f"n_best ({self.n_best}) must be <= beam_size ({self.beam_size})")
        if self.sample and self.beam_size > 1:
            raise ValueError("sample and beam_size > 1 exclude each other; use beam_size 1 to sample")
        return self


class GenerateRequest(SamplingOptions):
    """A prompt for a language model (empty: start from <bos>)."""

    prompt: str = Field("", max_length=MAX_TEXT_CHARS)
    max_new_tokens: int = Field(64, ge=1, le=MAX_NEW_TOKENS)
    sample: bool = Field(True, description="draw tokens (default) or take the most probable one")


class ExplainRequest(Request):
    """One sentence (or prompt) to run through the model with every attention map kept."""

    text: str = Field(..., min_length=1, max_length=MAX_EXPLAIN_CHARS)
    top_k: int = Field(5, ge=1, le=20, description="next-token candidates shown per step")
    max_new_tokens: int = Field(40, ge=1, le=MAX_NEW_TOKENS)


class Hypothesis(BaseModel):
    text: str
    tokens: list[str]
    score: float = Field(description="beam search: log p / length penalty; otherwise log p")
    log_prob: float


class Translation(BaseModel):
    source: str
    text: str = Field(description="the best hypothesis")
    hypotheses: list[Hypothesis] = Field(description="n_best hypotheses, best first")
    warnings: list[str] = Field(default_factory=list, description="input cut to what the model reads, if any")


class TranslateResponse(BaseModel):
    translations: list[Translation]
    elapsed_ms: float


class GenerateResponse(BaseModel):
    prompt: str
    text: str = Field(description="the continuation only")
    tokens: list[str]
    warnings: list[str] = Field(default_factory=list, description="input cut to what the model reads, if any")
    elapsed_ms: float


class Message(BaseModel):
    """A string of the pages' table (GET /i18n.json, qkv.explain.i18n): `key`, with `args` filling its {name}s."""

    key: str
    args: dict[str, Message | str | int | float]


class MatrixTable(BaseModel):
    """A tensor as the explain page prints it: big ones keep their first rows/columns and the last
    ("⋮" a cut row, "…" a cut column); `masked` cells are hidden by the mask."""

    caption: Message | None
    rows: list[str]
    cols: list[str]
    cells: list[list[str]]
    masked: list[list[bool]]
    shape: list[int]
    name: str | None = Field(None, description="which tensor: q, k, v, scores, weights, w_q...")


class NormInfo(BaseModel):
    kind: Literal["layernorm", "rmsnorm"]
    eps: float
    per_head: bool = Field(False, description="QK-norm: each head's query and key rows, over d_head")


class WalkStep(BaseModel):
    """One step of one head's attention, as the `qkv explain` page shows it."""

    title: Message
    text: list[Message]
    equation: Message
    tables: list[MatrixTable]
    norm: NormInfo | None = None


class AttentionMap(BaseModel):
    """One kind of attention: weights[layer][head][query][key], rows sum to 1; layers and heads count from 0."""

    kind: Literal["encoder", "decoder", "cross"]
    title: str
    queries: list[str]
    keys: list[str]
    weights: list[list[list[list[float]]]]
    walk: list[list[list[WalkStep]]] = Field(
        default_factory=list, description="[layer][head]: that head's steps, as on the qkv explain page")


class Candidate(BaseModel):
    token: str
    prob: float


class Step(BaseModel):
    """The model's next-token distribution after reading `context` (its top-k), and its choice."""

    position: int
    context: str
    chosen: str
    candidates: list[Candidate]


class RotaryLayer(BaseModel):
    """One self-attention's queries and keys before and after their rotation: [head][position][dim]."""

    q_before: list[list[list[float]]]
    q: list[list[list[float]]]
    k_before: list[list[list[float]]]
    k: list[list[list[float]]]


class RotaryStack(BaseModel):
    kind: Literal["encoder", "decoder"]
    tokens: list[str]
    layers: list[RotaryLayer]


class Rotary(BaseModel):
    """Rotary positions (RoPE): pair i of a query or key at position p is turned by p * theta^(-2i/d_head)."""

    theta: float
    d_head: int
    stacks: list[RotaryStack]


class RMSNormStep(BaseModel):
    """One RMSNorm: output = input / rms * gain, per position."""

    block: Literal["attention", "cross-attention", "feed-forward", "final"]
    input: list[list[float]]
    rms: list[float]
    gain: list[float]
    output: list[list[float]]


class RMSNormStack(BaseModel):
    kind: Literal["encoder", "decoder"]
    tokens: list[str]
    layers: list[list[RMSNormStep]]


class RMSNorms(BaseModel):
    norm_first: bool
    stacks: list[RMSNormStack]
    final: RMSNormStep | None = Field(None, description="the decoder's final norm (pre-LN)")


class ExplainResponse(BaseModel):
    kind: Literal["translation", "language-model"]
    engine: Literal["qkv", "ct2"] = Field(
        "qkv", description="what wrote the output: qkv (its own PyTorch search) or ct2 (CTranslate2); "
                           "the steps always trace the PyTorch weights")
    source: str
    source_tokens: list[str] = Field(description="empty for a language model")
    output: str
    output_tokens: list[str]
    warnings: list[str] = Field(default_factory=list, description="input cut to what the model reads, if any")
    attention: list[AttentionMap]
    steps: list[Step]
    rope: Rotary | None = Field(None, description="with rotary positions: Q and K before and after the rotation")
    rmsnorm: RMSNorms | None = Field(None, description="with RMSNorm: what every norm divided by and gave out")
    final_norm: WalkStep | None = Field(None, description="pre-LN: the norm before the output layer, as a step")
    elapsed_ms: float


class ModelInfo(BaseModel):
    kind: Literal["translation", "language-model"]
    engine: Literal["qkv", "ct2"] = Field("qkv", description="what translates: qkv (PyTorch) or ct2 (CTranslate2)")
    path: str
    parameters: int
    src_vocab_size: int | None
    tgt_vocab_size: int
    config: dict
    limits: dict[str, int]


class Health(BaseModel):
    status: Literal["ok"]
    kind: Literal["translation", "language-model"]
    queued: int = Field(description="model calls waiting or running")
