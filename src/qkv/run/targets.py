"""Which export formats a model config allows, known from the config alone (before training).

    export_targets(cfg)      # {"hf": None, "ct2": None}: both exports will work
    describe_targets(cfg)    # "exports to: ct2 (hf: pre-LN encoder-decoders export as Pegasus, ...)"

The rules live here once: the exporters (qkv.interop.hf, .llama, .ct2) call `hf_architecture` and
`check_ct2` before copying any weight, and the trainer prints `describe_targets` when it starts,
so a model that cannot be exported is known before it is trained. Pure rules over a ModelConfig:
this module imports neither torch, `transformers` nor `ctranslate2`.
"""

from __future__ import annotations

import json

from qkv.config import ModelConfig
from qkv.errors import ConfigError

HF_LAYER_NORM_EPS = 1e-5   # Marian and Pegasus build nn.LayerNorm(d_model) with the default eps

# what a qkv config must say to be a Llama (option -> the value Llama has). Llama has no QK-norm
# (Qwen3 and OLMo 2 add it) and no logit soft-cap (Gemma 2 adds it); qkv exports neither of those.
LLAMA_OPTIONS = {
    "arch": "decoder-only", "norm_first": True, "norm": "rmsnorm", "positional": "rope",
    "activation": "swiglu", "scale_embeddings": False, "qk_norm": False, "logit_softcap": 0.0,
    "value_embeddings": False,
}


def post_2017_options(cfg: ModelConfig) -> list[str]:
    """The options of `cfg` that the 2017 Transformer (and GPT-2, Marian, Pegasus) does not have."""
    used = {"positional": cfg.positional == "rope", "norm": cfg.norm == "rmsnorm",
            "activation": cfg.activation == "swiglu", "n_kv_heads": cfg.kv_heads != cfg.n_heads,
            "qk_norm": cfg.qk_norm, "logit_softcap": cfg.logit_softcap > 0, "value_embeddings": cfg.value_embeddings}
    return [f"model.{name}={_shown(getattr(cfg, name))}" for name, on in used.items() if on]


def _shown(value: object) -> str:
    """A config value as it reads in a message: true/false as in TOML, strings quoted."""
    return json.dumps(value) if isinstance(value, bool) else repr(value)


def check_llama(cfg: ModelConfig) -> None:
    """A ConfigError naming the first option that Llama does not have."""
    for name, want in LLAMA_OPTIONS.items():
        if getattr(cfg, name) != want:
            raise ConfigError(f"model.{name}={_shown(getattr(cfg, name))} has no Llama equivalent (Llama has "
                              f"{name}={_shown(want)}); train with model.{name}={json.dumps(want)} to export as Llama")


# the levers whose architectures (Qwen3 and OLMo 2 for QK-norm, Gemma 2 for the soft-cap, the
# modded-nanogpt GPTs for value embeddings) qkv does not export to: option -> the model that has it
NOT_EXPORTED_TO_HF = {"qk_norm": "Qwen3 and OLMo 2 have QK-norm", "logit_softcap": "Gemma 2 soft-caps its logits",
                      "value_embeddings": "the modded-nanogpt GPTs have value embeddings"}


def hf_architecture(cfg: ModelConfig) -> str:
    """"marian", "pegasus", "gpt2" or "llama"; a ConfigError naming the option that has no exact equivalent."""
    modern = post_2017_options(cfg)
    for option in modern:
        name = option.split("=")[0].removeprefix("model.")
        if name in NOT_EXPORTED_TO_HF:
            off = json.dumps(LLAMA_OPTIONS[name])
            raise ConfigError(f"{option} has no equivalent in the Hugging Face models qkv exports to (Marian, "
                              f"Pegasus, GPT-2, Llama; {NOT_EXPORTED_TO_HF[name]}, but qkv does not export to "
                              f"them); train with model.{name}={off} to export")
    if modern and cfg.arch == "decoder-only":
        check_llama(cfg)
        return "llama"
    if modern:
        raise ConfigError(f"{modern[0]} has no exact Hugging Face encoder-decoder equivalent (Marian and "
                          "Pegasus are 2017-style); export a language model with it as Llama instead")
    if cfg.arch == "decoder-only":
        if not cfg.norm_first:
            raise ConfigError("model.norm_first=false (post-LN) has no exact GPT-2 equivalent (GPT-2 is "
                              "pre-LN); export a language model trained with model.norm_first=true")
        return "gpt2"
    if cfg.positional != "sinusoidal":
        raise ConfigError("model.positional='learned' has no exact Hugging Face encoder-decoder equivalent "
                          "(Marian and Pegasus use fixed sinusoidal positions, BART adds a LayerNorm on the "
                          "embeddings); export a model trained with sinusoidal positions")
    if cfg.layer_norm_eps != HF_LAYER_NORM_EPS:
        raise ConfigError(f"model.layer_norm_eps={cfg.layer_norm_eps} cannot be set in Marian or Pegasus "
                          f"(fixed at {HF_LAYER_NORM_EPS}); export a model trained with the default eps")
    if not cfg.norm_first:
        return "marian"
    if not cfg.share_embeddings:
        raise ConfigError("pre-LN encoder-decoders export as Pegasus, which has one embedding matrix for "
                          "source and target: needs model.share_embeddings=true")
    return "pegasus"


def check_ct2(cfg: ModelConfig) -> None:
    """A ConfigError when CTranslate2's Transformer cannot hold `cfg`: it takes 2017 encoder-decoders."""
    if cfg.arch != "encoder-decoder":
        raise ConfigError("CTranslate2 export covers translation (encoder-decoder) models; this run is a "
                          "decoder-only language model: export it with --format hf")
    modern = post_2017_options(cfg)
    if modern:
        raise ConfigError(f"{modern[0]} is not covered by the CTranslate2 export (2017 Transformer options only)")


_RULES = {"hf": hf_architecture, "ct2": check_ct2}
FORMATS = tuple(_RULES)     # what `qkv export --format` takes


def export_targets(cfg: ModelConfig) -> dict[str, str | None]:
    """Each export format (`qkv export --format`): None when `cfg` exports to it, else the reason it cannot."""
    reasons: dict[str, str | None] = {}
    for fmt, rule in _RULES.items():
        try:
            rule(cfg)
            reasons[fmt] = None
        except ConfigError as exc:
            reasons[fmt] = str(exc)
    return reasons


def describe_targets(cfg: ModelConfig) -> str:
    """One line: "exports to: hf, ct2", or "exports to: ct2 (hf: <reason>)", or "exports to: none (...)"."""
    targets = export_targets(cfg)
    ok = [fmt for fmt, reason in targets.items() if reason is None]
    refused = "; ".join(f"{fmt}: {reason}" for fmt, reason in targets.items() if reason is not None)
    return f"exports to: {', '.join(ok) or 'none'}" + (f" ({refused})" if refused else "")
