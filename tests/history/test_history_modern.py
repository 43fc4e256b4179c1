"""`qkv history --modern --quick`: the 2017 GPT, each change since, all of them; same seed and budget."""

import json
from pathlib import Path

import pytest

from qkv.cli import main
from qkv.history.modern import OPTIMIZERS, VARIANTS, ModernConfig, model_config, optimizers
from qkv.model import DecoderOnly

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "tinyshakespeare" / "input.txt"


def test_variants_change_one_thing_each_and_all_is_a_llama():
    from qkv.run.targets import check_llama

    mc = ModernConfig.quick()
    base = model_config("2017", 65, mc).to_dict()
    for name in ("rope", "rmsnorm", "swiglu", "gqa"):
        changed = {k for k, v in model_config(name, 65, mc).to_dict().items() if base[k] != v}
        assert len(changed) == 1, (name, changed)
    check_llama(model_config("all", 65, mc))                   # exports to LlamaForCausalLM as it is
    assert list(VARIANTS) == ["2017", "rope", "rmsnorm", "swiglu", "gqa", "all", "muon"]
    assert model_config("muon", 65, mc) == model_config("all", 65, mc)   # the last step is the optimizer alone
    assert OPTIMIZERS == {"muon": "muon"}


def test_the_muon_step_uses_the_trainers_split():
    from qkv.training.optim import hidden_matrices

    mc = ModernConfig.quick()
    model = DecoderOnly(model_config("muon", 65, mc))
    muon, adamw = optimizers(model, mc, "muon"), optimizers(model, mc)
    assert adamw.muon is None and len(adamw.adamw_params) == len(list(model.parameters()))
    names = dict(model.named_parameters())
    assert {id(p) for p in muon.muon_params} == {id(names[n]) for n in hidden_matrices(model)}
    muon.set_lr(mc.lr / 2)                                     # half of AdamW's peak: half of Muon's
    assert muon.muon.param_groups[0]["lr"] == pytest.approx(mc.muon_lr / 2)


def test_quick_modern_history_writes_table_plot_and_json(tmp_path, capsys):
    if not DATA.is_file():
        pytest.skip("shared/data/tinyshakespeare is not available")
    out = tmp_path / "modern"
    assert main(["history", "--modern", "--quick", "--steps", "15", "--data", str(DATA), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    variants = results["variants"]
    assert list(variants) == list(VARIANTS)
    for v in variants.values():
        assert v["steps"] == 15 and v["tokens_per_second"] > 0 and 0 < v["valid_loss"] < 5
    mha = variants["2017"]["kv_cache_bytes_per_token"]
    assert mha == 2 * 2 * 64 * 4                               # K and V, 2 layers, d_model 64, fp32
    assert variants["gqa"]["kv_cache_bytes_per_token"] == mha / 2 == variants["all"]["kv_cache_bytes_per_token"]
    assert variants["muon"]["parameters"] == variants["all"]["parameters"]
    assert variants["muon"]["optimizer"].startswith("Muon on 14 matrices")        # 2 layers x W_Q, W_K, W_V, W_O, SwiGLU's 3
    assert variants["all"]["optimizer"].startswith("AdamW on")
    assert abs(variants["swiglu"]["parameters"] - variants["2017"]["parameters"]) < 0.02 * variants["2017"]["parameters"]
    assert results["machine"]["cpu"] and results["machine"]["torch"]
    assert (out / "modern.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "| + RoPE |" in report and "**Too short to rank.**" in report    # 15 steps: the report says so
    assert "| all + Muon (AdamW on the rest) |" in report and "The optimizer, on the same Llama: Muon" in report


def test_modern_history_errors_are_one_line(tmp_path, capsys):
    assert main(["history", "--modern", "--quick", "--data", str(tmp_path / "none.txt"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--data" in err
