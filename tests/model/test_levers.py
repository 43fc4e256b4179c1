"""Levers since 2017 beyond Llama's: QK-norm, the logit soft-cap, an untied output layer, value embeddings.

Each is checked against its formula computed by hand; the defaults leave the 2017 model unchanged."""

import math

import pytest
import torch

from qkv import ConfigError, ModelConfig, build_model
from qkv.errors import ShapeError
from qkv.config import from_dict
from qkv.model.layers import LogitSoftCap, self_attention
from qkv.model.record import recording
from qkv.run import load_run, save_run
from qkv.search import DecodeConfig, Sampler, StepDecoder, generate, translate_ids
from qkv.tokenizers import CharTokenizer
from qkv.training.optim import hidden_matrices

V = 40
LM = dict(arch="decoder-only", tgt_vocab_size=V, d_model=32, n_heads=4, n_decoder_layers=2, d_ff=64, dropout=0.0,
          max_len=48, norm_first=True)
SEQ2SEQ = dict(src_vocab_size=V, tgt_vocab_size=V, d_model=32, n_heads=4, n_encoder_layers=2, n_decoder_layers=2,
               d_ff=64, dropout=0.0, max_len=48)


def model(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_model(ModelConfig(**kw)).eval()


def perturb_gains(m: torch.nn.Module) -> None:
    """Gains of all sizes, so that a forgotten gain cannot pass for 1."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "q_norm" in name or "k_norm" in name:
                p.copy_(0.5 + torch.rand_like(p))


# --- QK-norm -------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [dict(), dict(positional="rope"), dict(n_kv_heads=2, positional="rope")],
                         ids=["plain", "rope", "gqa+rope"])
def test_qk_norm_equals_the_hand_computation(options):
    """softmax(q̂ k̂ᵀ / √d) v with q̂ = q / √(mean(q²) + ε) · g_q per head (before RoPE), the same for k."""
    torch.manual_seed(0)
    cfg = ModelConfig(**{**LM, **options, "qk_norm": True})
    attn = self_attention(cfg).eval()
    perturb_gains(attn)
    x = torch.randn(2, 6, 32)
    d, eps, group = cfg.d_head, cfg.layer_norm_eps, cfg.n_heads // cfg.kv_heads

    def heads(t: torch.Tensor) -> torch.Tensor:                         # (B, T, h d) -> (B, h, T, d)
        return t.view(2, 6, -1, d).transpose(1, 2)

    def rms(t: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return t / torch.sqrt(t.pow(2).mean(-1, keepdim=True) + eps) * g

    q = rms(heads(x @ attn.q_proj.weight.T + attn.q_proj.bias), attn.q_norm.weight)
    k = rms(heads(x @ attn.k_proj.weight.T + attn.k_proj.bias), attn.k_norm.weight)
    v = heads(x @ attn.v_proj.weight.T + attn.v_proj.bias)
    if attn.rope is not None:
        q, k = attn.rope(q), attn.rope(k)
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)
    expected = (weights @ v).transpose(1, 2).reshape(2, 6, 32) @ attn.out_proj.weight.T + attn.out_proj.bias
    torch.testing.assert_close(attn(x)[0], expected, atol=1e-5, rtol=1e-5)
    with recording(attn) as rec:
        attn(x, need_weights=True)
    call = rec.of(attn)[0]
    torch.testing.assert_close(call["scores"], q @ k.transpose(-2, -1), atol=1e-5, rtol=1e-5)


def test_qk_norm_bounds_the_scores_however_large_the_projections_grow():
    """|q̂ · k̂| <= d_head · max|g_q| · max|g_k|: scaling W_Q and W_K by 1000 leaves the scores bounded
    (and the same), where without QK-norm they grow by 10⁶."""
    x = torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(1))
    scores = {}
    for qk_norm in (False, True):
        for scale in (1.0, 1000.0):
            torch.manual_seed(0)
            attn = self_attention(ModelConfig(**LM, qk_norm=qk_norm, bias=False)).eval()
            with torch.no_grad():
                attn.q_proj.weight.mul_(scale)
                attn.k_proj.weight.mul_(scale)
            with recording(attn) as rec:
                attn(x)
            scores[qk_norm, scale] = rec.of(attn)[0]["scores"]
    bound = 8 * 1.0 * 1.0                                                   # d_head = 8, gains at their init 1
    assert scores[True, 1000.0].abs().max() <= bound
    torch.testing.assert_close(scores[True, 1000.0], scores[True, 1.0], atol=1e-3, rtol=1e-4)
    assert scores[False, 1000.0].abs().max() > 1e5 * scores[False, 1.0].abs().max()


def test_qk_norm_adds_two_gains_per_attention_that_stay_on_adamw():
    plain, normed = model(**SEQ2SEQ), model(**SEQ2SEQ, qk_norm=True)
    added = set(normed.state_dict()) - set(plain.state_dict())
    attentions = 2 + 2 * 2                                                  # encoder self; decoder self + cross
    assert len(added) == 2 * attentions and all(n.endswith(("q_norm.weight", "k_norm.weight")) for n in added)
    assert normed.decoder.layers[0].cross_attn.q_norm is not None           # cross-attention too
    assert normed.num_parameters() - plain.num_parameters() == 2 * attentions * 8
    assert not [n for n in hidden_matrices(normed) if "_norm" in n]          # Muon takes matrices only


@pytest.mark.parametrize("arch", ["decoder-only", "encoder-decoder"])
def test_qk_norm_with_the_kv_cache_agrees_with_no_cache(arch):
    """Cached keys are stored normalized (and rotated): step-by-step logits equal the full forward's."""
    options = dict(qk_norm=True, positional="rope", n_kv_heads=2, norm="rmsnorm", logit_softcap=3.0)
    m = model(**(LM if arch == "decoder-only" else SEQ2SEQ), **options)
    perturb_gains(m)
    feed = torch.randint(4, V, (2, 10), generator=torch.Generator().manual_seed(3))
    kwargs = {}
    if arch == "encoder-decoder":
        src = torch.randint(4, V, (2, 7), generator=torch.Generator().manual_seed(4))
        src[1, 5:] = 0
        kwargs = dict(zip(("memory", "src_mask"), m.encode(src)))
    with torch.inference_mode():
        steps = [StepDecoder(m, **kwargs), StepDecoder(m, fast=False, **kwargs), StepDecoder(m, use_cache=False, **kwargs)]
        for ids in [feed[:, :3]] + list(feed[:, 3:].split(1, dim=1)):
            fast, paper, uncached = (s.step(ids) for s in steps)
            torch.testing.assert_close(fast, paper, atol=2e-6, rtol=1e-5)
            torch.testing.assert_close(fast, uncached, atol=1e-5, rtol=0)
    if arch == "encoder-decoder":
        beam = DecodeConfig(beam_size=3)
        cached = translate_ids(m, src, beam)
        beam.use_cache = False
        assert [[h.tokens for h in x] for x in cached] == [[h.tokens for h in x] for x in translate_ids(m, src, beam)]


def test_qk_norm_and_the_cap_keep_bf16_under_autocast():
    """The norms' gains are float32; under bf16 autocast Q and K stay in the dtype of V, and the logits in bf16."""
    m = model(**SEQ2SEQ, qk_norm=True, logit_softcap=30.0, norm="rmsnorm")
    ids = torch.randint(4, V, (2, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        logits = m(ids, ids)
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), m(ids, ids), atol=0.1, rtol=0.05)


# --- logit soft-cap ------------------------------------------------------------------------------


@pytest.mark.parametrize("base", [LM, SEQ2SEQ], ids=["decoder-only", "encoder-decoder"])
def test_softcap_logits_are_cap_tanh_of_the_uncapped_ones(base):
    plain, capped = model(**base), model(**base, logit_softcap=2.0)
    capped.load_state_dict(plain.state_dict())                            # the cap has no parameters
    ids = torch.randint(4, V, (3, 9), generator=torch.Generator().manual_seed(2))
    args = (ids, ids) if "src_vocab_size" in base else (ids,)
    raw, out = plain(*args), capped(*args)
    assert raw.abs().max() > 2.0                                             # the cap bites
    torch.testing.assert_close(out, 2.0 * torch.tanh(raw / 2.0))
    assert out.abs().max() < 2.0
    small = raw.abs() < 0.1                                                  # about the identity near 0
    torch.testing.assert_close(out[small], raw[small], atol=1e-3, rtol=0)


def test_softcap_is_the_formula_and_keeps_the_dtype():
    cap = LogitSoftCap(30.0)
    z = torch.tensor([-1e4, -30.0, 0.0, 1.0, 30.0, 1e4])
    torch.testing.assert_close(cap(z), 30.0 * torch.tanh(z / 30.0))
    assert cap(z).abs().max() <= 30.0 and cap(z)[2] == 0
    assert cap(z.bfloat16()).dtype == torch.bfloat16
    assert "cap=30.0" in repr(cap)


def test_softcap_applies_to_decoding_and_training():
    m = model(**LM, logit_softcap=1.5)
    prompt = [5, 9, 11]
    with torch.inference_mode():
        step = StepDecoder(m).step(torch.tensor([prompt]))                 # the fast cached step
    assert step.abs().max() < 1.5
    torch.testing.assert_close(step, m(torch.tensor([prompt]))[:, -1])
    sampled = generate(m, prompt, 8, min_new_tokens=8, sampler=Sampler(True, temperature=1.0, seed=1))
    assert len(sampled) == 8
    m.train()
    loss = torch.nn.functional.cross_entropy(m(torch.tensor([prompt + sampled]))[0, :-1], torch.tensor(prompt[1:] + sampled))
    loss.backward()                                                          # the gradient flows through tanh
    assert m.lm_head.weight.grad is not None and m.lm_head.weight.grad.abs().sum() > 0


def test_the_levers_are_off_by_default_and_checked():
    cfg = ModelConfig(**LM)
    assert cfg.qk_norm is False and cfg.logit_softcap == 0.0
    m = build_model(cfg)
    assert m.softcap is None and all(a.q_norm is None and a.k_norm is None for a in m.modules() if hasattr(a, "q_norm"))
    with pytest.raises(ConfigError, match=r"model.logit_softcap must be in \[0, inf\), got -1.0"):
        ModelConfig(**LM, logit_softcap=-1.0)
    with pytest.raises(ConfigError, match="model.logit_softcap must be a finite number"):
        ModelConfig(**LM, logit_softcap=float("inf"))
    with pytest.raises(ConfigError, match="model.qk_norm must be true or false"):
        from_dict(ModelConfig, {**LM, "qk_norm": "yes"}, "model")
    with pytest.raises(ConfigError, match="model.logit_softcap must be a number"):
        from_dict(ModelConfig, {**LM, "logit_softcap": "30"}, "model")


# --- untied output layer -------------------------------------------------------------------------


@pytest.mark.parametrize("base", [LM, SEQ2SEQ], ids=["decoder-only", "encoder-decoder"])
def test_an_untied_output_layer_is_its_own_matrix_and_round_trips(base, tmp_path):
    tied, untied = model(**base), model(**base, tie_embeddings=False, qk_norm=True, logit_softcap=5.0)
    embed = untied.tgt_embed if "src_vocab_size" in base else untied.embed
    assert untied.lm_head.weight is not embed.token.weight
    attentions = 6 if "src_vocab_size" in base else 2
    assert untied.num_parameters() - tied.num_parameters() == V * 32 + attentions * 2 * 8   # W_vocab; g_Q, g_K
    ids = torch.randint(4, V, (2, 6))
    args = (ids, ids) if "src_vocab_size" in base else (ids,)
    untied.train()
    untied(*args).logsumexp(-1).sum().backward()
    assert embed.token.weight.grad is not None and not torch.equal(embed.token.weight.grad, untied.lm_head.weight.grad)
    untied.eval()
    tok = CharTokenizer.from_alphabet("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ")
    assert tok.vocab_size == V
    run = save_run(tmp_path / "run", untied, {}, tok if "src_vocab_size" in base else None, tok)
    loaded = load_run(run)
    assert loaded.cfg.tie_embeddings is False and loaded.cfg.qk_norm and loaded.cfg.logit_softcap == 5.0
    torch.testing.assert_close(loaded.model(*args), untied(*args))


# --- value embeddings ----------------------------------------------------------------------------


def fill_value_embeddings(m: torch.nn.Module, seed: int = 5) -> None:
    """Tables of real size (they start at zero, which would let a forgotten table pass)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "value_embed" in name:
                p.copy_(torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("options", [dict(), dict(n_kv_heads=2, positional="rope")], ids=["plain", "gqa+rope"])
def test_value_embeddings_equal_the_hand_computation(options):
    """softmax(q kᵀ / √d) (v + E_V[ids]) with E_V's row split into the key/value heads like v."""
    cfg = ModelConfig(**{**LM, **options, "value_embeddings": True})
    torch.manual_seed(0)
    attn = self_attention(cfg).eval()
    fill_value_embeddings(attn)
    x, ids = torch.randn(2, 6, 32), torch.randint(0, V, (2, 6), generator=torch.Generator().manual_seed(1))
    d, group = cfg.d_head, cfg.n_heads // cfg.kv_heads

    def heads(t: torch.Tensor) -> torch.Tensor:                         # (B, T, h d) -> (B, h, T, d)
        return t.view(2, 6, -1, d).transpose(1, 2)

    q, k = heads(x @ attn.q_proj.weight.T + attn.q_proj.bias), heads(x @ attn.k_proj.weight.T + attn.k_proj.bias)
    v = heads(x @ attn.v_proj.weight.T + attn.v_proj.bias) + heads(attn.value_embed.weight[ids])
    if attn.rope is not None:
        q, k = attn.rope(q), attn.rope(k)
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)
    expected = (weights @ v).transpose(1, 2).reshape(2, 6, 32) @ attn.out_proj.weight.T + attn.out_proj.bias
    torch.testing.assert_close(attn(x, ids=ids)[0], expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ShapeError, match="attention with value embeddings needs the ids of its"):
        attn(x)


def test_value_embeddings_start_at_zero_so_the_model_starts_as_the_one_without():
    plain, embedded = model(**LM), model(**LM, value_embeddings=True)
    missing, unexpected = embedded.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == [f"decoder.layers.{i}.self_attn.value_embed.weight" for i in range(2)] and not unexpected
    assert all(float(p.detach().abs().max()) == 0 for n, p in embedded.named_parameters() if "value_embed" in n)
    ids = torch.randint(4, V, (3, 9), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(embedded(ids), plain(ids))
    fill_value_embeddings(embedded)
    assert (embedded(ids) - plain(ids)).abs().max() > 1e-2                  # and a learned table changes it


def test_value_embeddings_are_one_table_per_layer_on_adamw_and_round_trip(tmp_path):
    plain, embedded = model(**LM, n_kv_heads=2), model(**LM, n_kv_heads=2, value_embeddings=True)
    assert embedded.num_parameters() - plain.num_parameters() == 2 * V * 2 * 8      # layers x V x H_kv d_head
    assert not [n for n in hidden_matrices(embedded) if "value_embed" in n]         # an embedding: not Muon's
    fill_value_embeddings(embedded)
    tok = CharTokenizer.from_alphabet("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ")
    loaded = load_run(save_run(tmp_path / "run", embedded, {}, None, tok))
    ids = torch.randint(4, V, (2, 6))
    assert loaded.cfg.value_embeddings is True
    torch.testing.assert_close(loaded.model(ids), embedded(ids))


def test_value_embeddings_with_the_kv_cache_agree_with_no_cache():
    """The cached values already hold their tokens' embeddings: step-by-step logits equal the full forward's
    on the fast cached path, the paper's and without a cache; sampling runs through them."""
    m = model(**LM, value_embeddings=True, positional="rope", n_kv_heads=2, norm="rmsnorm")
    fill_value_embeddings(m)
    feed = torch.randint(4, V, (2, 10), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        steps = [StepDecoder(m), StepDecoder(m, fast=False), StepDecoder(m, use_cache=False)]
        for ids in [feed[:, :3]] + list(feed[:, 3:].split(1, dim=1)):
            fast, paper, uncached = (s.step(ids) for s in steps)
            torch.testing.assert_close(fast, paper, atol=2e-6, rtol=1e-5)
            torch.testing.assert_close(fast, uncached, atol=1e-5, rtol=0)
    assert len(generate(m, [5, 9], 6, min_new_tokens=6, sampler=Sampler(True, temperature=1.0, seed=1))) == 6


def test_value_embeddings_are_for_decoder_only_models_and_keep_bf16():
    assert ModelConfig(**LM).value_embeddings is False
    with pytest.raises(ConfigError, match="model.value_embeddings is for decoder-only models"):
        ModelConfig(**SEQ2SEQ, value_embeddings=True)
    with pytest.raises(ConfigError, match="model.value_embeddings must be true or false"):
        from_dict(ModelConfig, {**LM, "value_embeddings": 1}, "model")
    m = model(**LM, value_embeddings=True)
    fill_value_embeddings(m)
    ids = torch.randint(4, V, (2, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        logits = m(ids)                                                      # float32 table, bf16 values
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), m(ids), atol=0.1, rtol=0.05)
