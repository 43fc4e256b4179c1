"""qkv viz: positional encodings, attention heatmaps and embedding neighbours as PNG files."""

import pytest
import torch
from matplotlib.figure import Figure

from qkv import ModelConfig, build_model
from qkv.cli import main
from qkv.explain import plots, trace
from qkv.explain.embeddings import nearest_neighbours, pca_2d
from qkv.tokenizers import CharTokenizer
from qkv.run import save_run

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tok = CharTokenizer.train(["abcdefghijklmnopqrstuvwxyz "])
    cfg = ModelConfig(src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size, d_model=16, n_heads=2,
                      n_encoder_layers=1, n_decoder_layers=2, d_ff=32, max_len=64)
    torch.manual_seed(0)
    return save_run(tmp_path_factory.mktemp("runs") / "rev", build_model(cfg), {}, tok, tok)


def test_viz_pe(tmp_path, capsys):
    out = tmp_path / "pe.png"
    assert main(["viz", "pe", "--d-model", "32", "--max-len", "20", "--out", str(out)]) == 0
    assert out.read_bytes().startswith(PNG)
    assert main(["viz", "pe", "--d-model", "7"]) == 2
    assert "even" in capsys.readouterr().err


@pytest.mark.parametrize("kind, layer", [("enc", 0), ("dec", 1), ("cross", 1)])
def test_viz_attention(run, tmp_path, kind, layer):
    out = tmp_path / "sub" / "att.png"
    args = ["viz", "attention", "--model", str(run), "abc", "--target", "cba", "--kind", kind,
            "--layer", str(layer), "--head", "1", "--out", str(out)]
    assert main(args) == 0
    assert out.read_bytes().startswith(PNG)


@pytest.mark.parametrize("args, message", [
    (["--kind", "enc", "--layer", "1"], "layers 0..0"),
    (["--head", "2"], "heads 0..1"),
    (["--kind", "diagonal"], "kind must be one of"),
])
def test_viz_attention_bad_requests(run, tmp_path, capsys, args, message):
    assert main(["viz", "attention", "--model", str(run), "abc", "--target", "c", *args,
                 "--out", str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_heatmap_names_its_layer_head_and_kind():
    tok = CharTokenizer.train(["ab c"])
    cfg = ModelConfig(src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size, d_model=8, n_heads=2,
                      n_encoder_layers=1, n_decoder_layers=1, d_ff=16, max_len=16)
    t = trace(build_model(cfg), "ab c", "ca", tok, tok)
    fig = plots.attention_heatmap(t.attention("dec", 0), head=1)
    assert isinstance(fig, Figure)
    assert fig.get_suptitle() == "layer 0 decoder masked self-attention, head 1"
    ax = fig.axes[0]
    assert [x.get_text() for x in ax.get_xticklabels()] == ["<bos>", "c", "a"]
    assert [y.get_text() for y in plots.attention_heatmap(t.attention("enc", 0), 0).axes[0].get_yticklabels()] == \
        ["a", "b", "␣", "c"]
    assert len(fig.axes) == 2                                                    # heatmap + colour bar
    assert len(plots.heads_grid(t.attention("cross", 0)).axes) == 3              # 2 heads + colour bar


def test_nearest_neighbours_by_cosine():
    tok = CharTokenizer.train(["abcd"])
    weight = torch.zeros(tok.vocab_size, 3)
    ids = {c: tok.token_to_id(c) for c in "abcd"}
    weight[ids["a"]] = torch.tensor([1.0, 0.0, 0.0])
    weight[ids["b"]] = torch.tensor([2.0, 0.1, 0.0])                             # same direction as a
    weight[ids["c"]] = torch.tensor([0.0, 1.0, 0.0])                             # orthogonal
    weight[ids["d"]] = torch.tensor([-1.0, 0.0, 0.0])                            # opposite
    weight[:4] = torch.tensor([1.0, 0.0, 0.0])                                   # specials: never neighbours
    found = nearest_neighbours(weight, tok, "a", k=3)
    assert [n.token for n in found] == ["a", "b", "c", "d"]
    assert found[1].similarity == pytest.approx(0.99875, abs=1e-4) and found[3].similarity == pytest.approx(-1.0)
    assert pca_2d(weight[[n.id for n in found]]).shape == (4, 2)


def test_viz_embeddings_prints_a_table(run, tmp_path, capsys):
    out = tmp_path / "emb.png"
    assert main(["viz", "embeddings", "--model", str(run), "--word", "e", "--k", "4", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["token", "cosine"] and len(lines) == 6
    assert out.read_bytes().startswith(PNG)
    assert main(["viz", "embeddings", "--model", str(run), "--word", "dog"]) == 2
    assert "not a single token" in capsys.readouterr().err
