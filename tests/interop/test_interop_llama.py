"""A decoder-only qkv model with RoPE + RMSNorm + SwiGLU + GQA is a Llama: export and import, same logits."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import functools
import json

import pytest
import torch

from tests.interop_models import ALPHABET, model_config, train_lm, with_one_thread
from qkv import ConfigError, build_model
from qkv.cli import main
from qkv.search import generate
from qkv.interop import export_run
from qkv.interop.hf import hf_architecture
from qkv.interop.llama import to_llama
from qkv.run import load_run

transformers = pytest.importorskip("transformers")

LLAMA = dict(arch="decoder-only", src_vocab_size=0, norm_first=True, positional="rope", norm="rmsnorm",
             activation="swiglu", n_kv_heads=2, bias=False, scale_embeddings=False, d_ff=96)


@functools.cache
def llama_run(root: str) -> str:
    from qkv.tokenizers import CharTokenizer
    from qkv.run import save_run

    model = with_one_thread(train_lm)(model_config(**LLAMA), steps=150)
    return str(save_run(os.path.join(root, "llama-lm"), model, {}, None, CharTokenizer.from_alphabet(ALPHABET)))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return llama_run(str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    out = tmp_path_factory.getbasetemp() / "llama-hf"
    export_run(run_dir, "hf", out)
    return out


def test_export_loads_offline_as_llama_with_the_same_logits_and_greedy_text(run_dir, exported):
    run = load_run(run_dir)
    assert json.loads((exported / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    hf = transformers.LlamaForCausalLM.from_pretrained(exported).eval()
    assert hf.config.num_key_value_heads == 2 and hf.config.intermediate_size == 64
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [20, 21, 22, 23, 4, 5]])
    with torch.no_grad():
        assert (run.model(ids) - hf(input_ids=ids).logits).abs().max() < 1e-4
    for prompt in ([5, 6], [17, 18, 19], [9]):
        ours = generate(run.model, prompt, 12)
        theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0, len(prompt):].tolist()
        assert len(set(ours)) >= 5
        assert theirs[: len(ours)] == ours
    tok = transformers.AutoTokenizer.from_pretrained(exported)
    assert tok("abc")["input_ids"] == run.tgt_tokenizer.encode("abc")


def test_rope_layout_is_permuted_for_llama():
    """Without the q/k row permutation Llama's rotate_half would pair other dimensions: the export
    is exact only because of it (and so the test above would fail without it)."""
    torch.manual_seed(0)
    model = build_model(model_config(**LLAMA)).eval()
    hf = to_llama(model)
    ids = torch.randint(4, 24, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(ids) - hf(input_ids=ids).logits).abs().max() < 1e-4
        attn = model.decoder.layers[0].self_attn
        hf.model.layers[0].self_attn.q_proj.weight.copy_(attn.q_proj.weight)          # unpermuted
        hf.model.layers[0].self_attn.k_proj.weight.copy_(attn.k_proj.weight)
        assert (model(ids) - hf(input_ids=ids).logits).abs().max() > 1e-3


@pytest.mark.parametrize("options", [dict(tie_embeddings=False, n_kv_heads=1), dict(bias=True, n_kv_heads=4)])
def test_other_llama_options_give_the_same_logits(options):
    torch.manual_seed(2)
    model = build_model(model_config(**{**LLAMA, **options})).eval()
    hf = to_llama(model)
    ids = torch.randint(4, 24, (3, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (model(ids) - hf(input_ids=ids).logits).abs().max() < 1e-4


@pytest.mark.parametrize("options, named", [
    (dict(scale_embeddings=True), "model.scale_embeddings"),
    (dict(norm="layernorm"), "model.norm"),
    (dict(positional="learned"), "model.positional"),
    (dict(arch="encoder-decoder", src_vocab_size=24), "model.positional"),
    (dict(qk_norm=True), "model.qk_norm=true"),
    (dict(logit_softcap=30.0), "model.logit_softcap=30.0"),
])
def test_options_llama_lacks_are_refused(options, named):
    with pytest.raises(ConfigError, match=named):
        hf_architecture(model_config(**{**LLAMA, **options}))


@pytest.mark.parametrize("options", [dict(qk_norm=True), dict(logit_softcap=30.0)])
def test_the_exporter_refuses_qk_norm_and_the_soft_cap_before_copying_a_weight(options):
    model = build_model(model_config(**{**LLAMA, **options})).eval()
    with pytest.raises(ConfigError, match="has no Llama equivalent"):
        to_llama(model)


def test_import_a_llama_directory_back_into_qkv(run_dir, exported, tmp_path, capsys):
    assert main(["import", "--from", str(exported), "--out", str(tmp_path / "back")]) == 0
    back, run = load_run(tmp_path / "back"), load_run(run_dir)
    for key in ("positional", "norm", "activation", "n_kv_heads", "d_ff", "bias", "tie_embeddings"):
        assert getattr(back.cfg, key) == getattr(run.cfg, key), key
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        torch.testing.assert_close(back.model(ids), run.model(ids), atol=1e-5, rtol=0)
    assert back.tgt_tokenizer.encode("abc") == run.tgt_tokenizer.encode("abc")
    assert main(["import", "--from", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
