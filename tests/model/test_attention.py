"""Scaled dot-product and multi-head attention: the maths, the masks, parity with torch.nn."""

import math

import pytest
import torch
from torch import nn

from qkv import EncoderDecoder, ModelConfig
from qkv.errors import ShapeError
from qkv.model.attention import KVCache, MultiHeadAttention, scaled_dot_product_attention
from qkv.model.masks import causal_mask, combine, padding_mask


def _qkv(b=2, h=3, tq=5, tk=7, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, tq, d, generator=g), torch.randn(b, h, tk, d, generator=g), torch.randn(b, h, tk, d, generator=g))


def test_explicit_path_is_the_formula():
    q, k, v = _qkv()
    out, w = scaled_dot_product_attention(q, k, v, return_weights=True)
    expected_w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), dim=-1)
    torch.testing.assert_close(w, expected_w)
    torch.testing.assert_close(out, expected_w @ v)


@pytest.mark.parametrize("masked", ["none", "padding", "causal", "random"])
def test_explicit_equals_fused(masked, device):
    q, k, v = (t.to(device) for t in _qkv(tq=6, tk=6))
    g = torch.Generator().manual_seed(1)
    mask = {
        "none": None,
        "padding": torch.tensor([[True] * 6, [True] * 3 + [False] * 3])[:, None, None, :],
        "causal": causal_mask(6),
        "random": torch.rand(2, 3, 6, 6, generator=g) > 0.4,
    }[masked]
    mask = None if mask is None else mask.to(device)
    fused, none = scaled_dot_product_attention(q, k, v, mask=mask)
    explicit, w = scaled_dot_product_attention(q, k, v, mask=mask, return_weights=True)
    assert none is None
    torch.testing.assert_close(fused, explicit, atol=1e-5 if device.type == "cpu" else 1e-4, rtol=0)
    # rows sum to 1 (or 0 where every key is masked), and masked entries are exactly 0
    sums = w.sum(-1)
    if mask is not None:
        full = mask.expand_as(w)
        assert torch.all(w[~full] == 0)
        any_key = full.any(-1)
        torch.testing.assert_close(sums[any_key], torch.ones_like(sums[any_key]))
        assert torch.all(sums[~any_key] == 0)
    else:
        torch.testing.assert_close(sums, torch.ones_like(sums))


def test_fully_masked_row_gives_zeros_not_nan():
    q, k, v = _qkv(b=1, h=1, tq=3, tk=3)
    mask = torch.tensor([[True, True, False], [False, False, False], [True, False, False]])
    for return_weights in (False, True):
        out, w = scaled_dot_product_attention(q, k, v, mask=mask, return_weights=return_weights)
        assert not torch.isnan(out).any()
        assert torch.all(out[0, 0, 1] == 0)
        if w is not None:
            assert torch.all(w[0, 0, 1] == 0)


def test_causal_mask_shapes():
    m = causal_mask(3)
    assert m.tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    # two cached past positions: the new queries see all of the past
    assert causal_mask(2, 4).tolist() == [[True, True, True, False], [True, True, True, True]]
    with pytest.raises(ShapeError):
        causal_mask(3, 2)


def test_padding_mask_and_combine():
    ids = torch.tensor([[5, 6, 0], [7, 0, 0]])
    m = padding_mask(ids, pad_id=0)
    assert m.shape == (2, 1, 1, 3)
    assert m[1, 0, 0].tolist() == [True, False, False]
    both = combine(m, causal_mask(3), None)
    assert both.shape == (2, 1, 3, 3)
    assert both[0, 0].tolist() == [[True, False, False], [True, True, False], [True, True, False]]


def test_bad_inputs_raise_clear_errors():
    q, k, v = _qkv()
    with pytest.raises(ShapeError, match="d_k"):
        scaled_dot_product_attention(q, k[..., :4], v)
    with pytest.raises(ShapeError, match="boolean"):
        scaled_dot_product_attention(q, k, v, mask=torch.ones(5, 7))
    with pytest.raises(ShapeError, match="does not fit"):
        scaled_dot_product_attention(q, k, v, mask=torch.ones(5, 6, dtype=torch.bool))
    with pytest.raises(ShapeError, match="divisible"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ShapeError, match=r"\(B, T, 16\)"):
        MultiHeadAttention(16, 4)(torch.randn(2, 3, 8))


def _copy_into_torch_mha(ours: MultiHeadAttention) -> nn.MultiheadAttention:
    ref = nn.MultiheadAttention(ours.d_model, ours.n_heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    return ref.eval()


@pytest.mark.parametrize("kind", ["self", "causal", "cross"])
def test_multihead_attention_matches_torch(kind, device):
    torch.manual_seed(0)
    d, h, b, t, s = 32, 4, 3, 6, 9
    ours = MultiHeadAttention(d, h, cross=(kind == "cross")).eval()
    ref = _copy_into_torch_mha(ours).to(device)
    ours = ours.to(device)
    x = torch.randn(b, t, d).to(device)
    memory = torch.randn(b, s, d).to(device) if kind == "cross" else None
    kv = memory if kind == "cross" else x
    lengths = torch.tensor([kv.size(1), kv.size(1) - 2, 3], device=device)
    key_ok = torch.arange(kv.size(1), device=device)[None, :] < lengths[:, None]  # (B, T_k)
    mask = key_ok[:, None, None, :]
    attn_mask = None
    if kind == "causal":
        mask = mask & causal_mask(t).to(device)
        attn_mask = ~causal_mask(t).to(device)                                     # torch: True = blocked
    out, w = ours(x, memory, mask=mask, need_weights=True)
    ref_out, ref_w = ref(x, kv, kv, key_padding_mask=~key_ok, attn_mask=attn_mask, need_weights=True)
    tol = 1e-5 if device.type == "cpu" else 1e-4
    torch.testing.assert_close(out, ref_out, atol=tol, rtol=1e-5)
    torch.testing.assert_close(w.mean(1), ref_w, atol=tol / 10, rtol=1e-5)
    fused, _ = ours(x, memory, mask=mask)
    torch.testing.assert_close(fused, ref_out, atol=tol, rtol=1e-5)


def test_kv_cache_grows_and_reorders():
    cache = KVCache()
    parts = [torch.randn(2, 1, n, 4) for n in (3, 20, 1)]
    for p in parts:
        k, v = cache.append(p, -p)
    full = torch.cat(parts, dim=2)
    assert cache.length == 24
    torch.testing.assert_close(k, full)
    torch.testing.assert_close(v, -full)
    cache.reorder(torch.tensor([1, 1]))
    torch.testing.assert_close(cache.k, full[[1, 1]])
    k, _ = cache.append(parts[0][:, :, :1], parts[0][:, :, :1])                 # appends after a reorder
    torch.testing.assert_close(k, torch.cat([full[[1, 1]], parts[0][:, :, :1]], dim=2))


def test_kv_cache_reorders_beams_in_place():
    # beam search reshuffles rows at every step: in place, rows read before they are overwritten,
    # and the spare capacity stays (the next step appends without growing)
    cache = KVCache()
    full = torch.randn(4, 2, 5, 3)
    cache.append(full, -full)
    ptr, capacity = cache._k.data_ptr(), cache._k.size(2)
    index = torch.tensor([2, 0, 1, 1])                                           # a cycle and a copy
    cache.reorder(index)
    assert cache._k.data_ptr() == ptr and cache._k.size(2) == capacity
    torch.testing.assert_close(cache.k, full[index])
    torch.testing.assert_close(cache.v, -full[index])
    cache.reorder(torch.arange(4))                                               # nothing moves
    torch.testing.assert_close(cache.k, full[index])
    new = torch.randn(4, 2, 1, 3)
    k, _ = cache.append(new, new)
    assert cache._k.data_ptr() == ptr
    torch.testing.assert_close(k, torch.cat([full[index], new], dim=2))
    cache.reorder(torch.tensor([3, 0]))                                          # rows leave: a new buffer
    torch.testing.assert_close(cache.k, torch.cat([full[index], new], dim=2)[[3, 0]])


def test_beam_reorder_leaves_the_encoder_side_alone():
    # beams of one sentence share the encoder's keys/values: reordering them copies nothing there
    cfg = ModelConfig(src_vocab_size=11, tgt_vocab_size=11, d_model=8, n_heads=2, n_encoder_layers=1,
                      n_decoder_layers=1, d_ff=16, dropout=0.0)
    model = EncoderDecoder(cfg).eval()
    src = torch.randint(4, 11, (4, 5))
    with torch.no_grad():
        memory, src_mask = model.encode(src)
        cache = model.new_cache()
        model.decode(torch.full((4, 1), cfg.bos_id), memory, src_mask, cache)
    cross_k = cache.cross_attn[0].k
    self_k = cache.self_attn[0].k.clone()
    cache.reorder(torch.tensor([1, 1, 3, 2]), same_sources=True)
    assert cache.cross_attn[0].k.data_ptr() == cross_k.data_ptr()               # untouched, not copied
    torch.testing.assert_close(cache.self_attn[0].k, self_k[[1, 1, 3, 2]])
    cache.reorder(torch.tensor([2, 0]))                                          # sentences leave
    torch.testing.assert_close(cache.cross_attn[0].k, cross_k[[2, 0]])
