"""Export to Hugging Face transformers: the same logits (1e-4) and the same greedy and beam outputs."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

from tests.interop_models import (
    BOS, assert_not_degenerate, counting_lm, model_config, sample_sources, strip,
)
from qkv import ConfigError, EncoderDecoder
from qkv.cli import main
from qkv.search import DecodeConfig, generate, translate_ids
from qkv.interop import export_run
from qkv.interop.hf import hf_architecture, to_hf
from qkv.run import load_run

transformers = pytest.importorskip("transformers")

MAX_NEW = 12


@pytest.fixture(scope="module")
def run_dir(trained_reverse_run):
    return trained_reverse_run


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    out = tmp_path_factory.getbasetemp() / "reverse-hf"
    export_run(run_dir, "hf", out)
    return out


def qkv_outputs(model, src, beam: int) -> list[list[int]]:
    dcfg = DecodeConfig(beam_size=beam, length_penalty=0.0, max_len_a=0.0, max_len_b=MAX_NEW)
    return [h[0].tokens for h in translate_ids(model, src, dcfg)]


def hf_outputs(hf, src, beam: int) -> list[list[int]]:
    out = hf.generate(input_ids=src, attention_mask=src != 0, num_beams=beam, do_sample=False,
                      max_new_tokens=MAX_NEW, length_penalty=0.0, early_stopping=True)
    return [strip(row) for row in out.tolist()]


def test_marian_export_loads_offline_with_identical_logits_and_outputs(run_dir, exported):
    run = load_run(run_dir)
    hf = transformers.MarianMTModel.from_pretrained(exported).eval()
    src = sample_sources()
    tgt_in = torch.cat([torch.full((len(src), 1), BOS), src[:, :7]], dim=1)
    with torch.no_grad():
        ours = run.model(src, tgt_in)
        theirs = hf(input_ids=src, attention_mask=src != 0, decoder_input_ids=tgt_in,
                    decoder_attention_mask=tgt_in != 0).logits
    assert (ours - theirs).abs().max() < 1e-4
    greedy = qkv_outputs(run.model, src, beam=1)
    assert_not_degenerate(greedy)
    assert hf_outputs(hf, src, beam=1) == greedy
    assert hf_outputs(hf, src, beam=4) == qkv_outputs(run.model, src, beam=4)


def test_exported_tokenizer_encodes_like_qkv(run_dir, exported):
    run = load_run(run_dir)
    tok = transformers.AutoTokenizer.from_pretrained(exported)
    for text in ["abc", "tsrq ponm", "a<eos>b", "zz?"]:
        assert tok(text)["input_ids"] == run.src_tokenizer.encode(text)
    assert tok.decode(run.src_tokenizer.encode("hello"), skip_special_tokens=True) == run.src_tokenizer.decode(
        run.src_tokenizer.encode("hello"))
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)


def test_bpe_word_and_char_tokenizers_export():
    from qkv.interop.hf_tokenizer import to_hf_tokenizer
    from qkv.tokenizers import train_tokenizer

    texts = ["Ein Mann fährt Fahrrad.", "The cat sat, didn't it?", "émoji 😀 ok\n12:30"] * 3
    for kind, size in (("bpe", 300), ("word", None), ("char", None)):
        tok = train_tokenizer(kind, texts, vocab_size=size, min_freq=1)
        hf = to_hf_tokenizer(tok, model_config(src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size))
        for text in [*texts, "unseen words!", "literal <eos> stays text"]:
            ids = tok.encode(text)
            assert hf(text)["input_ids"] == ids, kind
            assert hf.decode(ids, skip_special_tokens=True) == tok.decode(ids), kind


def test_pegasus_for_pre_ln():
    torch.manual_seed(1)
    model = EncoderDecoder(model_config(norm_first=True, share_embeddings=True, activation="gelu", bias=False)).eval()
    hf = to_hf(model)
    assert type(hf).__name__ == "PegasusForConditionalGeneration"
    src = sample_sources()
    tgt_in = torch.cat([torch.full((len(src), 1), BOS), src[:, :3]], dim=1)          # no padding in the target
    with torch.no_grad():
        diff = (model(src, tgt_in) - hf(input_ids=src, attention_mask=src != 0, decoder_input_ids=tgt_in).logits)
    assert diff.abs().max() < 1e-4
    assert hf_outputs(hf, src, beam=1) == qkv_outputs(model, src, beam=1)


def test_a_trained_built_in_task_run_exports_with_its_defaults(tmp_path, capsys):
    """The quick tour's model (`qkv train --task reverse`, defaults kept, tiny sizes) exports as it is."""
    from tests.training.test_train import tiny_task

    from qkv.training import train

    train(tiny_task(steps=4, eval_every=4), tmp_path / "run", quiet=True)
    assert main(["export", "--model", str(tmp_path / "run"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    run = load_run(tmp_path / "run")
    hf = transformers.PegasusForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    src = torch.tensor([run.src_tokenizer.encode("abcde"), run.src_tokenizer.encode("xyzzy")])
    tgt_in = torch.cat([torch.full((2, 1), BOS), src[:, :3]], dim=1)
    with torch.no_grad():
        assert (run.model(src, tgt_in) - hf(input_ids=src, decoder_input_ids=tgt_in).logits).abs().max() < 1e-4


def test_gpt2_for_a_pre_ln_language_model(tmp_path):
    lm = counting_lm()
    hf = to_hf(lm)
    hf.save_pretrained(tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids = torch.tensor([[5, 6, 7, 8], [20, 21, 22, 23]])
    with torch.no_grad():
        assert (lm(ids) - hf(input_ids=ids).logits).abs().max() < 1e-4
    for prompt in ([5, 6], [17, 18, 19]):
        ours = generate(lm, prompt, 10)
        theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False)[0, len(prompt):].tolist()
        assert len(set(ours)) >= 5
        assert theirs[: len(ours)] == ours


@pytest.mark.parametrize("options, named", [
    (dict(positional="learned"), "model.positional"),
    (dict(layer_norm_eps=1e-6), "model.layer_norm_eps"),
    (dict(norm_first=True), "model.share_embeddings"),
    (dict(arch="decoder-only", src_vocab_size=0), "model.norm_first"),
])
def test_options_without_exact_equivalent_are_refused(options, named):
    with pytest.raises(ConfigError, match=named):
        hf_architecture(model_config(**options))


def test_cli_export_errors_are_one_line(run_dir, tmp_path, capsys):
    assert main(["export", "--model", run_dir, "--format", "onnx", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hf, ct2" in err
    assert main(["export", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2


@pytest.mark.parametrize("options", [
    dict(src_vocab_size=30, tie_embeddings=False, scale_embeddings=False),          # Marian, separate embeddings
    dict(share_embeddings=True, activation="gelu", bias=False),                      # Marian, zero biases
    dict(arch="decoder-only", src_vocab_size=0, norm_first=True, tie_embeddings=False, positional="learned"),
    dict(arch="decoder-only", src_vocab_size=0, norm_first=True, activation="gelu", scale_embeddings=False),
])
def test_every_exportable_option_gives_the_same_logits(options):
    from qkv import build_model

    torch.manual_seed(2)
    model = build_model(model_config(**options)).eval()
    hf = to_hf(model)
    ids = torch.randint(4, 24, (4, 6), generator=torch.Generator().manual_seed(3))   # no padding
    with torch.no_grad():
        if model.cfg.arch == "decoder-only":
            diff = model(ids) - hf(input_ids=ids).logits
        else:
            diff = model(ids, ids) - hf(input_ids=ids, decoder_input_ids=ids).logits
    assert diff.abs().max() < 1e-4


def test_export_is_whole_or_absent_and_never_over_foreign_files(run_dir, exported, tmp_path, capsys, monkeypatch):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert main(["export", "--model", run_dir, "--out", str(foreign)]) == 2
    assert "not empty" in capsys.readouterr().err and (foreign / "notes.txt").read_text() == "keep"
    (tmp_path / "file").write_text("keep")
    assert main(["export", "--model", run_dir, "--out", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and (tmp_path / "file").read_text() == "keep"

    again = tmp_path / "again"
    export_run(run_dir, "hf", again)
    export_run(run_dir, "hf", again)                      # a previous export of the same kind is replaced
    assert (again / "model.safetensors").is_file()

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("qkv.interop.hf_tokenizer.save_hf_tokenizers", full)
    assert main(["export", "--model", run_dir, "--out", str(tmp_path / "half")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]   # (transformers' progress bar aside)
    assert len(errors) == 1 and "No space left on device" in errors[0]
    assert not (tmp_path / "half").exists() and not list(tmp_path.glob(".half.*"))   # no export that looks complete
