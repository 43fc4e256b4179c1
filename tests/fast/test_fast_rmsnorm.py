"""qkv.fast.rmsnorm.FastRMSNorm is qkv's RMSNorm: the same output bit for bit, the same gradients
within rounding, the paper path when an explanation records, the same parameters after the swap."""

import pytest
import torch

from qkv import ModelConfig, build_model
from qkv.fast.rmsnorm import FastRMSNorm, use_fast_rmsnorm
from qkv.model.layers import RMSNorm
from qkv.model.record import recording


def _pair(width: int) -> tuple[RMSNorm, FastRMSNorm]:
    paper = RMSNorm(width)
    with torch.no_grad():
        paper.weight.copy_(torch.rand(width) + 0.5)          # a gain that is not all ones
    fast = FastRMSNorm(width)
    fast.load_state_dict(paper.state_dict())
    return paper, fast


@pytest.mark.parametrize("autocast", [False, True])
def test_fast_rmsnorm_is_rmsnorm(autocast):
    torch.manual_seed(0)
    paper, fast = _pair(32)
    x = torch.randn(3, 4, 7, 32) * 3
    if autocast:
        x = x.bfloat16()                                     # q and k under bf16 autocast
    up = torch.randn(3, 4, 7, 32)                            # a gradient from above
    outs, grads = [], []
    for norm in (paper, fast):
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = norm(xi)
        (y.float() * up).sum().backward()
        outs.append(y)
        grads.append((xi.grad, norm.weight.grad))
    assert outs[0].dtype == outs[1].dtype and torch.equal(outs[0], outs[1])          # the same forward
    (gx_paper, gw_paper), (gx_fast, gw_fast) = grads
    assert gx_paper.dtype == gx_fast.dtype == x.dtype
    if autocast:                # bf16 gradients: at most one rounding step of bf16 apart
        assert torch.allclose(gx_fast.float(), gx_paper.float(), rtol=2 ** -7, atol=1e-3)
    else:
        assert torch.allclose(gx_fast, gx_paper, rtol=1e-5, atol=1e-6)
    assert torch.allclose(gw_fast, gw_paper, rtol=1e-5, atol=1e-5)
    assert gx_fast.abs().max() > 0.1 and gw_fast.abs().max() > 0.1                 # not trivially equal


def test_only_the_weight_or_only_the_input_needs_a_gradient():
    paper, fast = _pair(16)
    x = torch.randn(5, 16)
    fast(x).sum().backward()                                 # the input needs none
    paper(x).sum().backward()
    assert torch.allclose(fast.weight.grad, paper.weight.grad, rtol=1e-5, atol=1e-6)
    fast.weight.requires_grad_(False)
    xi = x.clone().requires_grad_(True)
    fast(xi).sum().backward()
    assert xi.grad is not None and fast.weight.grad is not None


def test_the_swap_keeps_the_model_and_a_recording_reads_the_paper_path():
    cfg = ModelConfig(arch="decoder-only", src_vocab_size=0, tgt_vocab_size=50, d_model=32, n_heads=4,
                      n_decoder_layers=2, d_ff=64, norm="rmsnorm", norm_first=True, qk_norm=True,
                      positional="rope", activation="swiglu", dropout=0.0, max_len=16)
    torch.manual_seed(0)
    model = build_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(4, 50, (2, 9))
    paper_logits = model(ids)
    # every RMSNorm: 2 per layer, the final one, and the queries' and keys' of each attention
    assert use_fast_rmsnorm(model) == 2 * 2 + 1 + 2 * 2
    assert all(type(m) is not RMSNorm for m in model.modules())
    state = model.state_dict()
    assert state.keys() == before.keys() and all(torch.equal(state[k], before[k]) for k in state)
    assert torch.equal(model(ids), paper_logits)
    norm = next(m for m in model.modules() if isinstance(m, FastRMSNorm))
    with recording(model) as calls:
        model(ids)
    assert "rms" in calls.of(norm)[0]                         # the paper path's own tensors, as explain reads them


def test_the_trainer_trains_with_the_fast_rmsnorm(tmp_path):
    from qkv.training.loop import Trainer
    from tests.training.test_probe import lm_config

    text = tmp_path / "tiny.txt"
    text.write_text("the quick brown fox jumps over the lazy dog.\n" * 60)
    config = lm_config(text, steps=2)
    config["model"].update(norm="rmsnorm", norm_first=True, qk_norm=True, positional="rope")
    trainer = Trainer(config, tmp_path / "run", quiet=True)
    norms = [m for m in trainer.model.modules() if isinstance(m, RMSNorm)]
    assert len(norms) == 2 + 1 + 2 and all(type(m) is FastRMSNorm for m in norms)
