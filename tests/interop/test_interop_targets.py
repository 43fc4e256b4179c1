"""Which formats a model config exports to, known before training (no transformers needed)."""

import ast
from pathlib import Path

import pytest

import qkv.run.targets
from qkv import ModelConfig
from qkv.data.tasks import TASKS, get_task, task_config
from qkv.interop import FORMATS, describe_targets, export_targets
from qkv.tokenizers import CharTokenizer


def config(**kw) -> ModelConfig:
    return ModelConfig(**{"src_vocab_size": 30, "tgt_vocab_size": 30, "d_model": 32, "n_heads": 2, **kw})


@pytest.mark.parametrize("task", list(TASKS))
def test_the_built_in_tasks_defaults_export_to_every_format(task):
    vocab = CharTokenizer.from_alphabet(get_task(task).alphabet).vocab_size     # one vocabulary, both sides
    cfg = ModelConfig.from_dict({**task_config(task)["model"], "src_vocab_size": vocab, "tgt_vocab_size": vocab})
    assert export_targets(cfg) == {"hf": None, "ct2": None}
    assert describe_targets(cfg) == "exports to: hf, ct2"


LLAMA_SHAPE = dict(arch="decoder-only", src_vocab_size=0, norm_first=True, norm="rmsnorm", positional="rope",
                   activation="swiglu", scale_embeddings=False)


def test_the_llama_shape_exports_to_hf_and_an_untied_output_layer_changes_nothing():
    assert export_targets(config(**LLAMA_SHAPE))["hf"] is None
    for options in (dict(), dict(LLAMA_SHAPE), dict(norm_first=True, share_embeddings=True)):
        assert export_targets(config(**options, tie_embeddings=False)) == export_targets(config(**options))


@pytest.mark.parametrize("options, fmt, named", [
    (dict(norm_first=True), "hf", "model.share_embeddings=true"),
    (dict(positional="learned"), "hf", "model.positional"),
    (dict(activation="swiglu"), "ct2", "model.activation='swiglu'"),
    (dict(arch="decoder-only", src_vocab_size=0), "ct2", "decoder-only"),
    (dict(qk_norm=True), "ct2", "model.qk_norm=true is not covered by the CTranslate2 export"),
    (dict(logit_softcap=30.0), "ct2", "model.logit_softcap=30.0 is not covered by the CTranslate2 export"),
    (dict(qk_norm=True), "hf", "model.qk_norm=true has no equivalent in the Hugging Face models qkv exports to"),
    (dict(logit_softcap=30.0), "hf", "train with model.logit_softcap=0.0 to export"),
    (dict(LLAMA_SHAPE, qk_norm=True), "hf", "Qwen3 and OLMo 2 have QK-norm"),
    (dict(LLAMA_SHAPE, logit_softcap=30.0), "hf", "Gemma 2 soft-caps its logits"),
    (dict(LLAMA_SHAPE, value_embeddings=True), "hf", "model.value_embeddings=true has no equivalent in the Hugging "
                                                       "Face models qkv exports to (Marian, Pegasus, GPT-2, Llama; the "
                                                       "modded-nanogpt GPTs have value embeddings"),
    (dict(norm_first=True, logit_softcap=30.0), "hf", "model.logit_softcap"),          # named before share_embeddings
])
def test_a_refused_format_comes_with_its_reason(options, fmt, named):
    targets = export_targets(config(**options))
    assert set(targets) == set(FORMATS) and named in targets[fmt]
    line = describe_targets(config(**options))
    assert line.startswith("exports to: ") and f"{fmt}: {targets[fmt]}" in line and "\n" not in line


def test_nothing_exportable_says_none():
    line = describe_targets(config(arch="decoder-only", src_vocab_size=0, norm_first=False))
    assert line.startswith("exports to: none (hf: model.norm_first=false") and "; ct2: " in line


def test_the_rules_import_no_export_library():
    tree = ast.parse(Path(qkv.run.targets.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "json", "qkv.config", "qkv.errors"}

