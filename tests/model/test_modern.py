"""The changes since 2017 as model options: RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases.

Each is checked against its defining property; the defaults leave the 2017 model unchanged."""

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qkv import ConfigError, ModelConfig, build_model
from qkv.config import load_toml
from qkv.files import save_toml
from qkv.search import Sampler, StepDecoder, generate
from qkv.model.attention import MultiHeadAttention
from qkv.model.layers import FeedForward, RMSNorm, RotaryPositionalEncoding, swiglu_width
from qkv.run import load_run, save_run
from qkv.tokenizers import CharTokenizer

V = 40
MODERN = dict(positional="rope", norm="rmsnorm", activation="swiglu", n_kv_heads=2, bias=False,
              norm_first=True, scale_embeddings=False)


def lm(seed: int = 0, **kw):
    torch.manual_seed(seed)
    base = dict(arch="decoder-only", tgt_vocab_size=V, d_model=32, n_heads=4, n_decoder_layers=2,
                d_ff=96, dropout=0.0, max_len=64, norm_first=True, tie_embeddings=False)
    return build_model(ModelConfig(**{**base, **kw})).eval()


# --- RoPE -----------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(m=st.integers(0, 200), n=st.integers(0, 200), shift=st.integers(0, 50), seed=st.integers(0, 2**16))
def test_rope_scores_depend_only_on_the_relative_offset(m, n, shift, seed):
    """<R_m q, R_n k> = <R_{m+s} q, R_{n+s} k>: the score sees m - n, never m or n alone."""
    rope = RotaryPositionalEncoding(max_len=256, d_head=16)
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)
    score = (rope(q, m) * rope(k, n)).sum()
    shifted = (rope(q, m + shift) * rope(k, n + shift)).sum()
    assert score.item() == pytest.approx(shifted.item(), abs=1e-4)


def test_rope_is_a_rotation_of_each_pair_by_pos_times_its_frequency():
    rope = RotaryPositionalEncoding(max_len=8, d_head=4, theta=10000.0)
    x = torch.tensor([[[[1.0, 0.0, 1.0, 0.0]]]])                       # (1, 1, 1, 4)
    pos = 3
    out = rope(x, pos)[0, 0, 0]
    for i, freq in enumerate([1.0, 10000.0 ** (-2 / 4)]):
        assert out[2 * i].item() == pytest.approx(math.cos(pos * freq), abs=1e-6)
        assert out[2 * i + 1].item() == pytest.approx(math.sin(pos * freq), abs=1e-6)
    y = torch.randn(2, 3, 5, 4)
    assert torch.allclose(rope(y).norm(dim=-1), y.norm(dim=-1), atol=1e-5)   # lengths kept


def test_rope_model_has_no_added_positions_and_checks_max_len():
    model = lm(positional="rope")
    assert model.embed.position is None
    with pytest.raises(Exception, match="max_len"):
        model(torch.randint(4, V, (1, 65)))


# --- RMSNorm --------------------------------------------------------------------------------------


def test_rmsnorm_equals_its_formula_and_torch():
    norm = RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 16))
    x = torch.randn(3, 5, 16) * 3 + 1
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected)
    ref = torch.nn.RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        ref.weight.copy_(norm.weight)
    torch.testing.assert_close(norm(x), ref(x))


def test_rmsnorm_replaces_every_layernorm():
    model = lm(norm="rmsnorm")
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    assert sum(isinstance(m, RMSNorm) for m in model.modules()) == 2 * 2 + 1   # two per layer + final


# --- SwiGLU ---------------------------------------------------------------------------------------


def test_swiglu_is_gated_and_parameter_matched():
    cfg = ModelConfig(arch="decoder-only", tgt_vocab_size=V, d_model=64, n_heads=4, d_ff=256,
                      activation="swiglu", bias=False)
    ff = FeedForward(cfg).eval()
    relu = FeedForward(ModelConfig(arch="decoder-only", tgt_vocab_size=V, d_model=64, n_heads=4, d_ff=256, bias=False))
    assert swiglu_width(256) == 171 and ff.w1.out_features == ff.w3.out_features == 171
    n_swiglu = sum(p.numel() for p in ff.parameters())
    n_relu = sum(p.numel() for p in relu.parameters())
    assert abs(n_swiglu - n_relu) / n_relu < 0.01
    x = torch.randn(2, 3, 64)
    expected = ff.w2(torch.nn.functional.silu(ff.w1(x)) * ff.w3(x))
    torch.testing.assert_close(ff(x), expected)


# --- grouped-query / multi-query attention ---------------------------------------------------------


def test_gqa_with_as_many_kv_heads_as_heads_is_multi_head_attention():
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4)
    gqa = MultiHeadAttention(32, 4, n_kv_heads=4)
    gqa.load_state_dict(mha.state_dict())
    x = torch.randn(2, 7, 32)
    torch.testing.assert_close(gqa(x)[0], mha(x)[0])
    assert lm(n_kv_heads=4).state_dict().keys() == lm().state_dict().keys()


def test_gqa_shares_each_kv_head_with_a_group_of_query_heads():
    """GQA equals multi-head attention whose key/value heads are copies within each group."""
    torch.manual_seed(0)
    gqa = MultiHeadAttention(32, 4, n_kv_heads=2)
    mha = MultiHeadAttention(32, 4)
    with torch.no_grad():
        mha.q_proj.load_state_dict(gqa.q_proj.state_dict())
        mha.out_proj.load_state_dict(gqa.out_proj.state_dict())
        for name in ("k_proj", "v_proj"):
            w, b = getattr(gqa, name).weight.view(2, 8, 32), getattr(gqa, name).bias.view(2, 8)
            getattr(mha, name).weight.copy_(w.repeat_interleave(2, dim=0).reshape(32, 32))
            getattr(mha, name).bias.copy_(b.repeat_interleave(2, dim=0).reshape(32))
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(gqa(x)[0], mha(x)[0])


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_kv_cache_holds_n_kv_heads(n_kv_heads):
    """Multi-query attention's cache is 1/H of multi-head attention's."""
    model = lm(n_kv_heads=n_kv_heads)
    step = StepDecoder(model, fast=False)
    with torch.inference_mode():
        step.step(torch.randint(4, V, (3, 6)))
    cache = step.cache.self_attn[0]
    assert cache.k.shape == (3, n_kv_heads, 6, 8) and cache.v.shape == (3, n_kv_heads, 6, 8)
    full = 4 * 6 * 8
    assert cache.k[0].numel() == full * n_kv_heads // 4


def test_config_validates_the_new_fields():
    base = dict(arch="decoder-only", tgt_vocab_size=V, d_model=32, n_heads=4)
    with pytest.raises(ConfigError, match="n_kv_heads"):
        ModelConfig(**base, n_kv_heads=3)
    with pytest.raises(ConfigError, match="norm"):
        ModelConfig(**base, norm="batchnorm")
    with pytest.raises(ConfigError, match="rope"):
        ModelConfig(arch="decoder-only", tgt_vocab_size=V, d_model=12, n_heads=4, positional="rope")


# --- no biases ------------------------------------------------------------------------------------


def test_bias_false_leaves_no_bias_in_any_linear_or_norm():
    model = lm(**MODERN)
    assert not [n for n, _ in model.named_parameters() if "bias" in n]
    for kw in (dict(), dict(activation="swiglu"), dict(arch="encoder-decoder", src_vocab_size=V)):
        plain = lm(bias=False, **kw)                                    # only LayerNorm's own bias remains
        linears = [m for m in plain.modules() if isinstance(m, torch.nn.Linear)]
        assert linears and all(m.bias is None for m in linears)


# --- decoding: cached == uncached, fast == paper ---------------------------------------------------


@pytest.mark.parametrize("options", [dict(positional="rope"), dict(n_kv_heads=1), dict(n_kv_heads=2), MODERN],
                         ids=["rope", "mqa", "gqa", "modern"])
def test_cached_and_uncached_generation_agree(options):
    model = lm(**options)
    feed = torch.randint(4, V, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        cached = StepDecoder(model, use_cache=True)
        uncached = StepDecoder(model, use_cache=False)
        paper = StepDecoder(model, fast=False)
        for ids in [feed[:, :4]] + list(feed[:, 4:].split(1, dim=1)):
            a, b, c = cached.step(ids), uncached.step(ids), paper.step(ids)
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
            torch.testing.assert_close(a, c, atol=2e-6, rtol=1e-5)
    prompt = [5, 9, 11, 4]
    cached = generate(model, prompt, 15, min_new_tokens=15, sampler=Sampler(True, temperature=1.5, seed=4))
    uncached = generate(model, prompt, 15, min_new_tokens=15, sampler=Sampler(True, temperature=1.5, seed=4),
                        use_cache=False)
    assert cached == uncached and len(set(cached)) > 2


def test_modern_encoder_decoder_cache_agrees():
    """The options also fit the translation model (RoPE in self-attention only, GQA everywhere)."""
    from qkv.search import DecodeConfig, translate_ids

    torch.manual_seed(0)
    cfg = ModelConfig(src_vocab_size=V, tgt_vocab_size=V, d_model=32, n_heads=4, n_encoder_layers=2,
                      n_decoder_layers=2, d_ff=64, dropout=0.0, max_len=48, tie_embeddings=False, **MODERN)
    model = build_model(cfg).eval()
    src = torch.randint(4, V, (3, 9), generator=torch.Generator().manual_seed(1))
    src[1, 6:] = 0
    for dcfg in (DecodeConfig(), DecodeConfig(beam_size=3)):
        cached = translate_ids(model, src, dcfg)
        dcfg.use_cache = False
        assert [[h.tokens for h in x] for x in cached] == [[h.tokens for h in x] for x in translate_ids(model, src, dcfg)]


def test_modern_model_trains_and_never_sees_the_future():
    model = lm(**MODERN)
    ids = torch.randint(4, V, (2, 10))
    base = model(ids)
    changed = ids.clone()
    changed[:, 6:] = 4
    torch.testing.assert_close(model(changed)[:, :6], base[:, :6])
    model.train()
    loss = torch.nn.functional.cross_entropy(model(ids).flatten(0, 1), ids.flatten())
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


# --- old checkpoints and configs still load -------------------------------------------------------


def test_old_runs_without_the_new_fields_still_load(tmp_path):
    tok = CharTokenizer.from_alphabet("abcdefghij klmnopqrstuvwxyz ABCDEFGHIJKL,.;!?'")
    model = lm(tgt_vocab_size=tok.vocab_size)
    run = save_run(tmp_path / "run", model, {}, None, tok)
    new_fields = {"norm", "n_kv_heads", "rope_theta"}
    config = load_toml(run / "config.toml")
    config["model"] = {k: v for k, v in config["model"].items() if k not in new_fields}
    save_toml(run / "config.toml", config)
    # the weights' metadata as an older qkv wrote it
    from safetensors.torch import load_file, save_file
    weights = run / "model.safetensors"
    raw = weights.read_bytes()
    meta = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])["__metadata__"]
    old_cfg = {k: v for k, v in json.loads(meta["qkv_model_config"]).items() if k not in new_fields}
    save_file(load_file(weights), weights, metadata={"format": "pt", "qkv_model_config": json.dumps(old_cfg)})
    loaded = load_run(run)
    assert loaded.cfg.norm == "layernorm" and loaded.cfg.kv_heads == loaded.cfg.n_heads
    ids = torch.randint(4, tok.vocab_size, (1, 8))
    torch.testing.assert_close(loaded.model(ids), model(ids))


# --- the explanation shows the new steps ------------------------------------------------------------


def test_trace_and_report_show_the_rope_rotation_and_the_rmsnorm():
    from qkv.explain import trace
    from qkv.explain.report import render_html

    model = lm(**MODERN)
    ids = [5, 9, 11, 4, 30, 7]
    t = trace(model, ids)
    torch.testing.assert_close(t.logits, model(torch.tensor([ids]))[0])
    a = t.attention("dec", 1)
    rope = model.decoder.layers[1].self_attn.rope
    torch.testing.assert_close(a.q, rope(a.q_before_rope[None])[0])              # q is Q rotated
    torch.testing.assert_close(a.k, rope(a.k_before_rope[None])[0])
    torch.testing.assert_close(a.scores, a.q @ a.k.transpose(-2, -1))            # the scores use the rotated ones
    assert a.n_kv_heads == 2 and torch.equal(a.k[0], a.k[1]) and not torch.equal(a.k[1], a.k[2])   # GQA groups
    block = t.decoder_layers[0].self_block
    torch.testing.assert_close(block.rms, torch.sqrt(block.input.pow(2).mean(-1, keepdim=True) + 1e-5))
    assert t.tgt.positional.abs().sum() == 0                                      # nothing added to the embedding
    html = render_html(t)
    for text in ("Rotate queries and keys by their positions (RoPE)", "Q rotated", "K before", "RMSNorm(x) = x",
                 "SwiGLU", "since 2017"):
        assert text in html, text
    plain = render_html(trace(lm(), ids))
    assert "RoPE" not in plain and "RMSNorm(x)" not in plain
