"""Every number on the explain page can be recomputed from the page.

The test reads only the HTML: the matrix tables (tagged data-tensor="...") of each attention's
step-by-step section and of the final norm, with the rounding they are shown at. It recomputes
every shown tensor from the shown tensors before it and checks that the shown value lies within
what the rounding of the inputs and of the output allows (the inputs' half-units carried through
the step to first order, with a margin).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable

import pytest
import torch

from qkv import ModelConfig, build_model
from qkv.explain import trace
from qkv.explain import report
from qkv.explain.report import render_html

Shown = tuple[torch.Tensor, torch.Tensor]          # the values and, per entry, half a unit of the last digit shown


def parse_number(text: str) -> tuple[float, float]:
    text = html.unescape(text).strip()
    if text == "−∞":
        return float("-inf"), 0.0
    if text == "0":                                  # the page writes an exact 0 as "0"
        return 0.0, 0.0
    if "e" in text:
        return float(text), 0.5 * 10.0 ** (int(text.split("e")[1]) - 2)
    return float(text), 0.5 * 10.0 ** -len(text.split(".")[1])


def tables(chunk: str) -> dict[str, Shown]:
    """Every tagged table of a piece of the page, whole (nothing may be cut here)."""
    found = {}
    for name, body in re.findall(r"<table class='m' data-tensor='(\w+)'>(.*?)</table>", chunk, re.S):
        rows = [[parse_number(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
                for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]
        rows = [r for r in rows if r]
        assert "…" not in body and "⋮" not in body, f"{name} is cut; the test needs small inputs"
        assert name not in found, f"two tables named {name}"
        found[name] = (torch.tensor([[v for v, _ in r] for r in rows], dtype=torch.float64),
                       torch.tensor([[e for _, e in r] for r in rows], dtype=torch.float64))
    return found


def sections(page: str) -> dict[str, str]:
    """The step-by-step section of each attention kind shown on the page."""
    return dict(re.findall(r"<details data-attention='(\w+)'[^>]*>(.*?)</details>", page, re.S))


def check(what: str, f: Callable[..., torch.Tensor], shown: Shown, *inputs: Shown) -> None:
    """shown ≈ f(inputs): the error the inputs' rounding can carry (|∂f/∂input| times the
    half-units, to first order, with a margin of 50%) plus the output's own rounding."""
    values = tuple(v.clone() for v, _ in inputs)
    expected = f(*values)
    jac = torch.autograd.functional.jacobian(f, values)
    carried = sum((j.abs().reshape(expected.numel(), -1) @ e.reshape(-1)).reshape(expected.shape)
                  for j, (_, e) in zip(jac, inputs))
    tolerance = 1.5 * carried + shown[1] + 1e-9
    assert shown[0].shape == expected.shape, f"{what}: shape {tuple(shown[0].shape)} != {tuple(expected.shape)}"
    bad = (shown[0] - expected).abs() > tolerance
    assert not bad.any(), (f"{what} cannot be recomputed from the page: shown {shown[0][bad].tolist()}, "
                           f"recomputed {expected[bad].tolist()}, tolerance {tolerance[bad].tolist()}")


def layer_norm(x, g, b, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * g + b


def rms_norm(x, g, eps):
    return x / torch.sqrt((x**2).mean(-1, keepdim=True) + eps) * g


def rotate(x, angle):
    x1, x2 = x[:, 0::2], x[:, 1::2]
    cos, sin = torch.cos(angle[: x.size(0)]), torch.sin(angle[: x.size(0)])
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


def check_norm(chunk: str, m: dict[str, Shown], prefix: str, what: str) -> None:
    """<prefix>x = norm(<prefix>stream) with the gain, bias and ε shown in `chunk`."""
    kind, eps = re.search(r"data-norm='(\w+)' data-eps='([^']+)'", chunk).groups()
    eps = float(eps)
    stream, gain, out = m[prefix + "stream"], m[prefix + "gain"], m[prefix + "x"]
    if kind == "rmsnorm":
        assert prefix + "bias" not in m
        check(what, lambda x, g: rms_norm(x, g, eps), out, stream, gain)
    else:
        check(what, lambda x, g, b: layer_norm(x, g, b, eps), out, stream, gain, m[prefix + "bias"])


def recompute_attention(kind: str, chunk: str, pre_ln: bool, rope: bool, qk_norm: bool = False,
                        value_embeddings: bool = False) -> None:
    m = tables(chunk)
    if pre_ln:
        check_norm(chunk, m, "norm_", f"{kind}: x = norm(stream)")
        x = m["norm_x"]
    else:
        assert "norm_stream" not in m
        x = m["x"]
    source = m["memory"] if kind == "cross" else x
    biased = "b_q" in m
    q1, k1 = ("q_before_rope", "k_before_rope") if rope else ("q", "k")        # what RoPE turns, or Q and K
    q0, k0 = ("q_before_norm", "k_before_norm") if qk_norm else (q1, k1)      # what the projections make
    v0 = "v_before_embed" if value_embeddings else "v"                         # what W_V makes
    for name, inp, w, b in ((q0, x, "w_q", "b_q"), (k0, source, "w_k", "b_k"), (v0, source, "w_v", "b_v")):
        if biased:
            check(f"{kind}: {name} = x W + b", lambda a, w_, b_: a @ w_ + b_, m[name], inp, m[w], m[b])
        else:
            check(f"{kind}: {name} = x W", lambda a, w_: a @ w_, m[name], inp, m[w])
    if qk_norm:                                      # each row of d_head numbers through an RMSNorm
        eps = float(re.search(r"data-qk-norm-eps='([^']+)'", chunk).group(1))
        for before, gain, after in ((q0, "q_norm_gain", q1), (k0, "k_norm_gain", k1)):
            check(f"{kind}: {after} = RMSNorm({before}) g", lambda a, g: rms_norm(a, g, eps), m[after], m[before], m[gain])
    else:
        assert "q_before_norm" not in m and "q_norm_gain" not in m
    if value_embeddings:                             # V = x W_V + E_V[token]
        check(f"{kind}: V = x W_V + E_V[token]", lambda a, e: a + e, m["v"], m["v_before_embed"], m["value_embedding"])
    else:
        assert "v_before_embed" not in m and "value_embedding" not in m
    if rope:
        check(f"{kind}: Q rotated", rotate, m["q"], m["q_before_rope"], m["rope_angle"])
        check(f"{kind}: K rotated", rotate, m["k"], m["k_before_rope"], m["rope_angle"])
    else:
        assert "q_before_rope" not in m and "rope_angle" not in m
    check(f"{kind}: scores = Q Kᵀ", lambda q, k: q @ k.T, m["scores"], m["q"], m["k"])
    d = m["q"][0].size(1)
    check(f"{kind}: scaled = scores / √d", lambda s: s / math.sqrt(d), m["scaled"], m["scores"])
    masked_values, masked_err = m["masked"]
    hidden = torch.isinf(masked_values)
    visible = (masked_values.masked_fill(hidden, 0.0), masked_err)
    assert torch.equal(visible[0][~hidden], m["scaled"][0][~hidden])         # the mask only hides
    assert (kind == "dec") == bool(hidden.any())                             # causal here, no padding
    check(f"{kind}: weights = softmax(masked)",
          lambda s: torch.softmax(s.masked_fill(hidden, float("-inf")), dim=-1), m["weights"], visible)
    assert (m["weights"][0][hidden] == 0).all() and (m["weights"][1][hidden] == 0).all()   # exactly 0, shown as "0"
    check(f"{kind}: mixed = weights V", lambda w, v: w @ v, m["mixed"], m["weights"], m["v"])
    check(f"{kind}: head output = mixed W_O slice", lambda a, w: a @ w, m["head_out"], m["mixed"], m["w_o"])


@pytest.fixture(autouse=True)
def no_pictures(monkeypatch):
    """The pictures hold no numbers to read; drawing them would only cost time."""
    monkeypatch.setattr(report, "image", lambda fig, alt: "")


def page_of(cfg: ModelConfig, layer: int, head: int, seed: int = 0) -> tuple[str, torch.nn.Module]:
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    with torch.no_grad():                            # untrained but not near zero: biases and gains of all sizes
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "value_embed" in name:   # value embeddings start at 0
                p.add_(0.3 * torch.randn_like(p))
    src = [5, 6, 7, 8] if cfg.arch == "encoder-decoder" else [5, 6, 7, 8, 9]
    t = trace(model, src, [9, 10, 11] if cfg.arch == "encoder-decoder" else None)
    return render_html(t, layer=layer, head=head), model


SMALL = dict(src_vocab_size=16, tgt_vocab_size=16, d_model=8, d_ff=16, max_len=16, dropout=0.0)


@pytest.mark.parametrize("name, cfg, layer, head", [
    ("post-LN", ModelConfig(**SMALL, n_heads=2, n_encoder_layers=2, n_decoder_layers=2), 1, 1),
    ("pre-LN", ModelConfig(**SMALL, n_heads=2, n_encoder_layers=2, n_decoder_layers=2, norm_first=True), 1, 1),
    ("RoPE + RMSNorm + GQA", ModelConfig(**{**SMALL, "src_vocab_size": 0}, arch="decoder-only", n_heads=4,
                                         n_kv_heads=2, n_decoder_layers=2, norm_first=True, norm="rmsnorm",
                                         positional="rope", bias=False, activation="swiglu"), 0, 3),
    ("QK-norm + soft-cap, encoder-decoder", ModelConfig(**SMALL, n_heads=2, n_encoder_layers=1, n_decoder_layers=1,
                                                        qk_norm=True, logit_softcap=1.5), 0, 1),
    ("QK-norm + RoPE + GQA + soft-cap", ModelConfig(**{**SMALL, "src_vocab_size": 0}, arch="decoder-only", n_heads=4,
                                                    n_kv_heads=2, n_decoder_layers=1, norm_first=True, norm="rmsnorm",
                                                    positional="rope", qk_norm=True, logit_softcap=1.5), 0, 3),
    ("value embeddings + RoPE + GQA", ModelConfig(**{**SMALL, "src_vocab_size": 0}, arch="decoder-only", n_heads=4,
                                                  n_kv_heads=2, n_decoder_layers=2, norm_first=True, norm="rmsnorm",
                                                  positional="rope", bias=False, value_embeddings=True), 1, 2),
])
def test_every_shown_tensor_is_recomputed_from_the_page(name, cfg, layer, head):
    page, model = page_of(cfg, layer, head)
    kinds = sections(page)
    assert set(kinds) == ({"enc", "dec", "cross"} if cfg.arch == "encoder-decoder" else {"dec"})
    for kind, chunk in kinds.items():
        recompute_attention(kind, chunk, cfg.norm_first, rope=cfg.positional == "rope" and kind != "cross",
                            qk_norm=cfg.qk_norm, value_embeddings=cfg.value_embeddings and kind == "dec")
    if cfg.logit_softcap > 0:                        # the capped logits softmax reads, from the output layer's
        capped = page[page.index("data-softcap"):]
        cap = float(re.search(r"data-softcap='([^']+)'", capped).group(1))
        m = tables(capped)
        check("logits = cap tanh(z / cap)", lambda z: cap * torch.tanh(z / cap), m["logits"], m["raw_logits"])
        assert (m["logits"][0].abs() < cap).all() and (m["raw_logits"][0].abs() > cap).any()   # the cap bites
    else:
        assert "data-softcap" not in page
    if cfg.norm_first:
        final = page[page.index("data-final-norm"):]
        check_norm(final, tables(final), "final_", "h = final norm(last layer output)")
    else:
        assert "data-final-norm" not in page
    if cfg.positional == "rope":                     # Q and K: before the rotation first, then after
        chunk = kinds["dec"]
        names = ("q_before_norm", "k_before_norm", "q_norm_gain") if cfg.qk_norm else ()
        order = [chunk.index(f"data-tensor='{n}'")
                 for n in (*names, "q_before_rope", "k_before_rope", "rope_angle", "q", "k")]
        assert order == sorted(order)


def test_grouped_query_heads_name_and_show_their_key_value_head():
    cfg = ModelConfig(**{**SMALL, "src_vocab_size": 0}, arch="decoder-only", n_heads=4, n_kv_heads=2,
                      n_decoder_layers=1, norm_first=True, norm="rmsnorm", positional="rope", bias=False)
    page, model = page_of(cfg, 0, 3)
    assert "query heads 2..3 share key/value head 1" in page and "own W_K, W_V" not in page
    m = tables(sections(page)["dec"])
    attn = model.decoder.layers[0].self_attn
    for shown, linear, rows in ((m["w_q"], attn.q_proj, slice(6, 8)), (m["w_k"], attn.k_proj, slice(2, 4)),
                                (m["w_v"], attn.v_proj, slice(2, 4)), (m["w_o"], attn.out_proj, None)):
        weight = linear.weight.detach().double()
        expected = weight[rows].T if rows is not None else weight[:, 6:8].T     # W_O: the rows of head 3
        assert ((shown[0] - expected).abs() <= shown[1] + 1e-12).all()
