"""qkv explain: the HTML report (library and command) for both model shapes."""

import base64
import re

import pytest
import torch

from qkv import ModelConfig, build_model
from qkv.cli import main
from qkv.explain import trace
from qkv.search import DecodeConfig, translate_ids
from qkv.explain.report import matrix_table, render_html, report_notes
from qkv.explain.text import explain_text
from qkv.tokenizers import CharTokenizer
from qkv.run import load_run, save_run

TEXTS = ["abcdefghijklmnopqrstuvwxyz "]


def make_run(path, arch: str = "encoder-decoder", norm_first: bool = False):
    tok = CharTokenizer.train(TEXTS)
    cfg = ModelConfig(src_vocab_size=0 if arch == "decoder-only" else tok.vocab_size, tgt_vocab_size=tok.vocab_size,
                      arch=arch, d_model=16, n_heads=2, n_encoder_layers=2, n_decoder_layers=2, d_ff=32,
                      max_len=64, norm_first=norm_first)
    torch.manual_seed(0)
    save_run(path, build_model(cfg), {}, None if arch == "decoder-only" else tok, tok)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {"ed": make_run(root / "ed"), "lm": make_run(root / "lm", "decoder-only", norm_first=True)}


def images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_report_is_self_contained_and_walks_the_pipeline(runs, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["explain", "--model", str(runs["ed"]), "hello", "--target", "olleh", "--layer", "1",
                 "--head", "1", "--out", str(out)]) == 0
    page = out.read_text()
    assert "untrained" in capsys.readouterr().err
    assert not re.search(r'(src|href)="(?!data:)', page)                       # no external files or CDN
    pngs = images(page)
    assert len(pngs) >= 7 and all(p.startswith(b"\x89PNG") for p in pngs)
    order = ["1. Tokens", "2. Embeddings", "3. Attention, step by step (layer 1, head 1)",
             "encoder self-attention, head 1", "decoder masked self-attention, head 1",
             "cross-attention, head 1", "4. Attention maps", "5. All heads of layer 1", "7. Next-token"]
    positions = [page.index(s) for s in order]
    assert positions == sorted(positions)
    assert '<td class="masked">−∞</td>' in page                                 # the causal mask, shown
    assert "untrained" in page


def test_report_numbers_are_the_traced_numbers():
    tok = CharTokenizer.train(TEXTS)
    cfg = ModelConfig(src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size, d_model=16, n_heads=2,
                      n_encoder_layers=1, n_decoder_layers=1, d_ff=32, max_len=32)
    torch.manual_seed(1)
    t = trace(build_model(cfg).eval(), "abc", "cba", tok, tok)
    page = render_html(t, layer=0, head=0)
    w = t.attention("cross", 0).weights[0]
    assert f"<td>{w[1, 2]:.3f}</td>" in page
    assert "<tr><th>step</th><th>input token</th>" in page
    assert page.count("<span class='bar'") == 5 * len(t.tgt.ids)


def test_untrained_translation_without_target_is_translated_first(runs):
    run = load_run(runs["ed"])
    e = explain_text(run, "abc")
    t, warnings = e.trace, report_notes(run, e)
    out = translate_ids(run.model, torch.tensor([run.src_tokenizer.encode("abc")]), DecodeConfig())[0][0].tokens
    assert t.tgt.ids == [1] + out and t.next_ids[-1] == 2
    assert any("untrained" in w for w in warnings) and any("greedy translation" in w for w in warnings)


def test_decoder_only_report(runs, tmp_path):
    out = tmp_path / "lm.html"
    assert main(["explain", "--model", str(runs["lm"]), "hello", "--out", str(out)]) == 0
    page = out.read_text()
    assert "decoder masked self-attention, head 0" in page
    assert "encoder self-attention" not in page and "cross-attention" not in page
    assert "pre-LN" in page


def test_large_matrices_are_cut_with_an_ellipsis():
    table = matrix_table(torch.arange(400.0).view(20, 20), [str(i) for i in range(20)])
    assert "…" in table and "⋮" in table
    assert "<td>399.000</td>" in table and "<td>200.000</td>" not in table


@pytest.mark.parametrize("args, message", [
    (["abc", "--layer", "7"], "layer 7 does not exist"),
    (["abc", "--head", "9"], "head 9 does not exist"),
    (["", "--target", "abc"], "source has no tokens"),
])
def test_bad_requests_fail_on_one_line(runs, tmp_path, capsys, args, message):
    code = main(["explain", "--model", str(runs["ed"]), "--out", str(tmp_path / "x.html"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in err[-1] and "Traceback" not in "".join(err)


def test_missing_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["explain", "--model", str(tmp_path / "nope"), "abc"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_overlong_source_is_cut_by_the_one_text_rule(runs, tmp_path, capsys):
    # qkv explain follows qkv.text's OVER_LONG_RULE, as `qkv translate` and the server do
    out = tmp_path / "long.html"
    long = "abc" * 40                                                        # 120 characters, max_len 64
    assert main(["explain", "--model", str(runs["ed"]), long, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "the source has 120 tokens; the model reads at most 64, so the rest was cut" in err
    t = explain_text(load_run(runs["ed"]), long).trace
    assert len(t.src.ids) == 64
