"""qkv.fast.muon.FastMuon is torch.optim.Muon: the same update, momentum and state, with the
Newton-Schulz iterations of same-shaped matrices batched."""

import pytest
import torch

from qkv.fast.muon import FastMuon

# the Tiny Shakespeare recipe's kinds: square attention maps, wide and tall feed-forward maps
SHAPES = [(96, 96)] * 3 + [(256, 96)] * 2 + [(96, 256)] * 2 + [(40, 72)]


def _pair(nesterov: bool, weight_decay: float, adjust_lr_fn):
    torch.manual_seed(0)
    weights = [torch.randn(s) * 0.05 for s in SHAPES]
    a = [torch.nn.Parameter(w.clone()) for w in weights]
    b = [torch.nn.Parameter(w.clone()) for w in weights]
    kw = dict(lr=0.02, momentum=0.95, nesterov=nesterov, weight_decay=weight_decay, adjust_lr_fn=adjust_lr_fn)
    return a, b, torch.optim.Muon(a, **kw), FastMuon(b, **kw)


@pytest.mark.parametrize("nesterov, weight_decay, adjust_lr_fn",
                         [(True, 0.0, None), (False, 0.1, "match_rms_adamw")])
def test_a_fast_muon_step_is_torchs_muon_step(nesterov, weight_decay, adjust_lr_fn):
    a, b, slow, fast = _pair(nesterov, weight_decay, adjust_lr_fn)
    for step in range(4):
        grads = [torch.randn(s) for s in SHAPES]
        for pa, pb, g in zip(a, b, grads):
            pa.grad, pb.grad = g.clone(), g.clone()
        before = [p.detach().clone() for p in a]
        slow.step()
        fast.step()
        for i, (pa, pb, w) in enumerate(zip(a, b, before)):
            moved = (pa.detach() - w).abs().max()
            assert moved > 1e-4, (step, i)                       # the step did something ...
            # ... and both moved the same: within bf16's rounding of the orthogonalised update
            assert (pa.detach() - pb.detach()).abs().max() <= 0.005 * moved, (step, i)
            assert torch.equal(slow.state[pa]["momentum_buffer"], fast.state[pb]["momentum_buffer"]), (step, i)


def test_matrices_without_a_gradient_are_left_alone_and_the_state_dict_is_torchs():
    a, b, slow, fast = _pair(True, 0.0, None)
    for p in b[1:]:
        p.grad = torch.randn(p.shape)
    b0 = b[0].detach().clone()
    fast.step()
    assert torch.equal(b[0].detach(), b0) and b[0] not in fast.state
    for p in a[1:]:
        p.grad = torch.randn(p.shape)
    slow.step()
    s, f = slow.state_dict(), fast.state_dict()
    assert s["param_groups"] == f["param_groups"] and set(s["state"]) == set(f["state"])
    slow.load_state_dict(f)                                    # a checkpoint of one loads in the other
