"""`qkv serve --engine ct2`: translations through CTranslate2 give the paper path's tokens on a trained
model (greedy and beam), the explorer's text is written by the server's engine (and says so) and
traced on the PyTorch weights, wrong combinations are one-line errors."""

from __future__ import annotations

import pytest

pytest.importorskip("ctranslate2")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'qkv[serve]'")
pytest.importorskip("httpx", reason="TestClient needs httpx: pip install 'qkv[serve]'")

from fastapi.testclient import TestClient  # noqa: E402
from tests.interop_models import assert_not_degenerate, sample_sources  # noqa: E402
from tests.serve_runs import tiny_run  # noqa: E402

from qkv import QkvError  # noqa: E402
from qkv.cli import main  # noqa: E402
from qkv.interop import export_run  # noqa: E402
from qkv.serve import create_app  # noqa: E402
from qkv.run import load_run  # noqa: E402


@pytest.fixture(scope="module")
def apps(trained_reverse_run, tmp_path_factory):
    """The same trained run served twice: on qkv's own search and on its CTranslate2 export."""
    run = load_run(trained_reverse_run)
    ct2_dir = export_run(run.path, "ct2", tmp_path_factory.mktemp("ct2") / "model")
    with TestClient(create_app(run, allowed_hosts=["testserver"])) as qkv_app, \
            TestClient(create_app(run, ct2_model=ct2_dir, allowed_hosts=["testserver"])) as ct2_app:
        yield run, qkv_app, ct2_app


def texts(run, n: int = 16) -> list[str]:
    return [run.src_tokenizer.decode([i for i in row if i]) for row in sample_sources(n).tolist()]


@pytest.mark.parametrize("options", [
    {},                                                         # greedy, limits 1.5 * len + 10 (grouped)
    {"beam_size": 4, "length_penalty": 0.0},
    {"beam_size": 4, "n_best": 2, "length_penalty": 0.0, "max_new_tokens": 6},   # the limit binds
])
def test_ct2_engine_gives_the_paper_paths_tokens(apps, options):
    run, qkv_app, ct2_app = apps
    body = {"texts": texts(run), **options}
    ours = qkv_app.post("/v1/translate", json=body).json()["translations"]
    theirs = ct2_app.post("/v1/translate", json=body).json()["translations"]
    if "max_new_tokens" not in options:
        assert_not_degenerate([run.tgt_tokenizer.encode(t["text"]) for t in ours])
    assert [t["hypotheses"][0]["tokens"] for t in theirs] == [t["hypotheses"][0]["tokens"] for t in ours]
    assert [len(t["hypotheses"]) for t in theirs] == [len(t["hypotheses"]) for t in ours]
    for a, b in zip(ours, theirs):     # the best; further n-best entries follow each engine's own bookkeeping
        assert b["hypotheses"][0]["log_prob"] == pytest.approx(a["hypotheses"][0]["log_prob"], abs=1e-3)
        assert b["hypotheses"][0]["score"] == pytest.approx(a["hypotheses"][0]["score"], abs=1e-3)


def test_beam_with_a_length_penalty_scores_on_qkvs_scale(apps):
    """CTranslate2 ranks by log p / len ** alpha; the reported score is qkv's GNMT one either way."""
    run, qkv_app, ct2_app = apps
    body = {"texts": texts(run, 8), "beam_size": 4, "length_penalty": 0.6}
    ours = qkv_app.post("/v1/translate", json=body).json()["translations"]
    theirs = ct2_app.post("/v1/translate", json=body).json()["translations"]
    same = [(a, b) for a, b in zip(ours, theirs) if a["text"] == b["text"]]
    assert len(same) >= 6
    for a, b in same:
        assert b["hypotheses"][0]["score"] == pytest.approx(a["hypotheses"][0]["score"], abs=1e-3)


def test_model_info_and_explain_name_the_engine_and_explain_traces_pytorch(apps):
    run, qkv_app, ct2_app = apps
    assert qkv_app.get("/v1/model").json()["engine"] == "qkv"
    assert ct2_app.get("/v1/model").json()["engine"] == "ct2"
    text = texts(run, 1)[0]
    ours, theirs = (app.post("/v1/explain", json={"text": text}).json() for app in (qkv_app, ct2_app))
    assert (ours["engine"], theirs["engine"]) == ("qkv", "ct2")            # who wrote the output
    assert theirs["output"] == ours["output"] and theirs["attention"] == ours["attention"]


def test_wrong_engine_options_are_one_line_errors(apps, tmp_path, capsys):
    run, _, _ = apps
    assert main(["serve", "--model", str(run.path), "--engine", "ct2"]) == 2
    assert "--ct2-model" in capsys.readouterr().err
    assert main(["serve", "--model", str(run.path), "--ct2-model", str(tmp_path)]) == 2
    assert "--engine ct2 only" in capsys.readouterr().err
    assert main(["serve", "--model", str(run.path), "--engine", "onnx"]) == 2
    assert "unknown engine" in capsys.readouterr().err
    other = export_run(tiny_run(tmp_path / "other"), "ct2", tmp_path / "other-ct2")
    with pytest.raises(QkvError, match="exported from another model"):
        create_app(run, ct2_model=other)
    with pytest.raises(QkvError, match="translation models"):
        create_app(tiny_run(tmp_path / "lm", "decoder-only"), ct2_model=other)
