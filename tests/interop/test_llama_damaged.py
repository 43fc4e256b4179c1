"""A damaged or unusual Llama directory given to `qkv import` ends in one line, never a traceback."""

import json
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

from tests.interop_models import ALPHABET, model_config
from qkv import build_model
from qkv.cli import main
from qkv.interop import export_run

pytest.importorskip("transformers")

LLAMA = dict(arch="decoder-only", src_vocab_size=0, norm_first=True, positional="rope", norm="rmsnorm",
             activation="swiglu", n_kv_heads=2, bias=False, scale_embeddings=False, d_ff=96)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from qkv.run import save_run
    from qkv.tokenizers import CharTokenizer

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("llama")
    run = save_run(root / "run", build_model(model_config(**LLAMA)), {}, None, CharTokenizer.from_alphabet(ALPHABET))
    export_run(run, "hf", root / "hf")
    return root / "hf"


def _config(d, edit):
    cfg = json.loads((d / "config.json").read_text())
    edit(cfg)
    (d / "config.json").write_text(json.dumps(cfg))


def _truncate(path, keep):
    path.write_bytes(path.read_bytes()[:keep])


def _shape(d):
    from safetensors.torch import load_file, save_file

    weights = load_file(d / "model.safetensors")
    name = next(k for k in weights if k.endswith("q_proj.weight"))
    weights[name] = weights[name][:-1]
    save_file(weights, d / "model.safetensors", metadata={"format": "pt"})


DAMAGE = {
    "no config.json": (lambda d: (d / "config.json").unlink(), "config.json is missing"),
    "config.json not JSON": (lambda d: (d / "config.json").write_text("{hidden"), "cannot be read as JSON"),
    "config.json a list": (lambda d: (d / "config.json").write_text("[1]"), "not an object"),
    "config.json nested deeply": (lambda d: (d / "config.json").write_text("[" * 100_000 + "]" * 100_000),
                                  "nested too deeply"),
    "config.json lacks hidden_size": (lambda d: _config(d, lambda c: c.pop("hidden_size")), "lacks 'hidden_size'"),
    "config.json hidden_size a string": (lambda d: _config(d, lambda c: c.update(hidden_size="big")), "wrong type"),
    "config.json zero heads": (lambda d: _config(d, lambda c: c.update(num_attention_heads=0)), "error"),
    "no weights": (lambda d: (d / "model.safetensors").unlink(), "holds no model.safetensors"),
    "truncated weights": (lambda d: _truncate(d / "model.safetensors", 200), "damaged or truncated"),
    "weights of zero bytes": (lambda d: _truncate(d / "model.safetensors", 0), "damaged or truncated"),
    "weight of the wrong shape": (_shape, "has shape"),
    "index naming a missing shard": (lambda d: ((d / "model.safetensors").unlink(), (d / "model.safetensors.index.json")
                                     .write_text(json.dumps({"weight_map": {"x": "model-1.safetensors"}}))), "is missing"),
    "index without weight_map": (lambda d: ((d / "model.safetensors").unlink(),
                                 (d / "model.safetensors.index.json").write_text("{}")), "no weight_map"),
    "no tokenizer.json": (lambda d: (d / "tokenizer.json").unlink(), "no tokenizer.json"),
    "tokenizer.json not JSON": (lambda d: (d / "tokenizer.json").write_text("{"), "cannot be read as JSON"),
    "tokenizer.json nested deeply": (lambda d: (d / "tokenizer.json").write_text('{"model":' + "[" * 100_000 + "]" * 100_000 + "}"),
                                     "nested too deeply"),
    "tokenizer.json not UTF-8": (lambda d: (d / "tokenizer.json").write_bytes(b"\xff\xfe{}"), "cannot be read as JSON"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_llama_directory_is_one_line(case, exported, tmp_path, capsys):
    damage, says = DAMAGE[case]
    src = tmp_path / "src"
    shutil.copytree(exported, src)
    damage(src)
    assert main(["import", "--from", str(src), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "out").exists()
