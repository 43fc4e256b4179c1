"""The pages' one table of words (qkv.explain.i18n): both languages say the same things, every key
a page asks for exists, and `qkv explain --lang ko` writes a page with no English left in it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from qkv import ConfigError, ModelConfig, build_model
from qkv.cli import main
from qkv.explain import report, trace
from qkv.explain.i18n import ENGLISH_NAMES, LANGUAGES, PLACEHOLDER, STRINGS, Words, check_lang, msg
from qkv.explain.report import render_html
from qkv.run import save_run
from qkv.tokenizers import CharTokenizer
from tests.words import english_left, visible_text

STATIC = Path(__file__).parents[2] / "src" / "qkv" / "serve" / "static"


def test_both_languages_have_the_same_keys_and_placeholders():
    assert set(LANGUAGES) == set(STRINGS) == set(ENGLISH_NAMES) == {"en", "ko"}
    assert STRINGS["en"].keys() == STRINGS["ko"].keys()
    for key, english in STRINGS["en"].items():
        korean = STRINGS["ko"][key]
        assert sorted(PLACEHOLDER.findall(english)) == sorted(PLACEHOLDER.findall(korean)), key
        for value in (english, korean):
            rest = PLACEHOLDER.sub("", value)
            assert "{" not in rest and "}" not in rest, f"{key}: only {{name}} is special"
            assert key.endswith("_html") or "<" not in value, f"{key}: markup only in _html keys"


def test_every_key_the_explorer_asks_for_exists():
    js, page = (STATIC / "explorer.js").read_text(), (STATIC / "index.html").read_text()
    asked = set(re.findall(r'data-i18n(?:-aria)?="([\w.\-]+)"', page))
    asked |= set(re.findall(r'\b(?:t|msg|fill\([^,]+,)\s*\(?\s*"([a-z]+\.[\w.\-]+)"', js))
    assert len(asked) > 40
    assert asked <= STRINGS["en"].keys(), asked - STRINGS["en"].keys()


def test_words_fill_messages_nested_and_escape_html():
    ko = Words("ko")
    assert ko("kind.title_head", layer=1, kind=msg("kind.cross"), head=0) == "층 1 교차 어텐션, 헤드 0"
    assert Words("en").html("page.title", run="r", text="<b>") == "How r reads “&lt;b&gt;”"
    assert "<code>&lt;bos&gt;</code>" in ko.html("page.tokens.target_p_html")
    with pytest.raises(ConfigError, match=r"--lang must be one of en \(English\), ko \(Korean\); got 'xx'"):
        check_lang("xx")


def make_run(path: Path, **model) -> Path:
    tok = CharTokenizer.train(["abcdefghijklmnopqrstuvwxyz "])
    arch = model.get("arch", "encoder-decoder")
    cfg = ModelConfig(src_vocab_size=0 if arch == "decoder-only" else tok.vocab_size, tgt_vocab_size=tok.vocab_size,
                      d_model=16, n_heads=2, n_encoder_layers=2, n_decoder_layers=2, d_ff=32, max_len=32, **model)
    torch.manual_seed(0)
    return save_run(path, build_model(cfg), {}, None if arch == "decoder-only" else tok, tok)


def test_qkv_explain_lang_ko_writes_a_korean_page(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(report, "image", lambda fig, alt: "")         # pictures: the test below
    run, out = make_run(tmp_path / "run"), tmp_path / "ko.html"
    assert main(["explain", "--model", str(run), "hello", "--layer", "1", "--head", "1", "--lang", "ko",
                 "--out", str(out)]) == 0
    page = out.read_text()
    text = visible_text(page)
    assert english_left(text) == []
    assert "<html lang='ko'>" in page and "run 모델이 읽는 과정: “hello”" in page
    for korean in ("1. 토큰 (token)", "2. 임베딩 (embedding)과 위치", "위치 인코딩 (positional encoding)",
                   "3. 어텐션, 단계별로 (층 1, 헤드 1)", "쿼리 (query)", "키 (key)", "값 (value)", "소프트맥스 (softmax)",
                   "마스크 (mask)", "교차 어텐션 (cross-attention)", "정규화 (normalization", "층 1 교차 어텐션, 헤드 1",
                   "7. 다음 토큰 확률", "학습 기록"):
        assert korean in text, korean
    assert "학습 기록" in capsys.readouterr().err                       # the page's notes, as printed


@pytest.mark.parametrize("model", [
    {"norm_first": True},
    {"arch": "decoder-only", "n_kv_heads": 1, "norm_first": True, "norm": "rmsnorm", "positional": "rope",
     "bias": False, "activation": "swiglu"},
    {"norm_first": True, "qk_norm": True, "logit_softcap": 1.5},
    {"arch": "decoder-only", "n_kv_heads": 1, "norm_first": True, "norm": "rmsnorm", "positional": "rope",
     "qk_norm": True, "logit_softcap": 1.5, "value_embeddings": True},
])
def test_every_kind_of_page_has_no_english_left(tmp_path, monkeypatch, model):
    """Pre-LN (its norm steps and final norm), RoPE, RMSNorm, grouped-query attention, SwiGLU, QK-norm
    (step 1a, before RoPE too), the logit soft-cap and value embeddings (step 1c)."""
    monkeypatch.setattr(report, "image", lambda fig, alt: "")         # the pictures hold no page text
    torch.manual_seed(0)
    cfg = ModelConfig(src_vocab_size=0 if model.get("arch") == "decoder-only" else 16, tgt_vocab_size=16, d_model=8,
                      n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=16, max_len=16, **model)
    t = trace(build_model(cfg).eval(), [5, 6, 7], [8, 9] if cfg.arch == "encoder-decoder" else None)
    ko, en = render_html(t, lang="ko"), render_html(t, lang="en")
    assert english_left(visible_text(ko)) == [] and english_left(visible_text(en), "en") == []
    assert "마지막 정규화" in ko and len(english_left(visible_text(en))) > 20      # the check does find English
    if model.get("qk_norm"):
        assert "1a. 헤드마다 쿼리와 키 정규화 (QK 정규화, QK-norm)" in ko and "로짓 소프트 캡 (logit soft-cap)" in ko
        assert "1a. Normalize each head's queries and keys (QK-norm)" in visible_text(en) and "The logit soft-cap" in en
    if model.get("value_embeddings"):
        assert "1c. 토큰마다 값 임베딩을 V에 더하기" in ko and "값 임베딩 (value embeddings)" in ko
        assert "1c. Add each token's value embedding to V" in visible_text(en)


def test_korean_pictures_use_a_font_with_hangul():
    """Labelled in Korean where a font with Hangul is installed (Debian's fonts-nanum), else in English:
    never boxes for missing glyphs."""
    import warnings

    from qkv.explain import plots

    assert plots.picture_language("en") == "en"
    lang = plots.picture_language("ko")
    assert lang == ("ko" if plots.hangul_font() else "en")
    torch.manual_seed(0)
    cfg = ModelConfig(src_vocab_size=16, tgt_vocab_size=16, d_model=8, n_heads=2, n_encoder_layers=1,
                      n_decoder_layers=1, d_ff=16, max_len=16)
    a = trace(build_model(cfg).eval(), [5, 6, 7], [8]).attention("cross", 0)
    with warnings.catch_warnings(), plots.fonts_for(lang):
        warnings.simplefilter("error")                                 # "Glyph ... missing from font(s)"
        assert plots.png_bytes(plots.attention_heatmap(a, 1, lang)).startswith(b"\x89PNG")
