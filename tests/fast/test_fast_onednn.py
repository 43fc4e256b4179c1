"""qkv.fast.onednn: the decoder's linears through oneDNN give the paper path's tokens on a trained model."""

import pytest
import torch

from tests.interop_models import assert_not_degenerate, sample_sources
from qkv.search import DecodeConfig, translate_ids
from qkv.fast import onednn
from qkv.run import load_run

pytestmark = pytest.mark.skipif(not onednn._has_op(), reason="this PyTorch has no oneDNN linear op")


def outputs(model, src, beam: int) -> list[list[int]]:
    dcfg = DecodeConfig(beam_size=beam, length_penalty=0.0, max_len_a=0.0, max_len_b=12)
    return [h[0].tokens for h in translate_ids(model, src, dcfg)]


def test_onednn_linear_equals_nn_linear_and_shares_its_weights():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96)
    fast = onednn.OneDnnLinear(linear)
    assert fast.weight is linear.weight
    with torch.inference_mode():
        for rows in (1, 7, 8, 40):                          # below and above MIN_ROWS
            x = torch.randn(rows, 3, 64)
            torch.testing.assert_close(fast(x), linear(x), rtol=1e-5, atol=1e-5)


def test_onednn_model_gives_the_paper_paths_tokens(trained_reverse_run):
    run = load_run(trained_reverse_run)
    fast = onednn.onednn_model(run.model)
    assert any(isinstance(m, onednn.OneDnnLinear) for m in fast.modules())
    assert not any(isinstance(m, onednn.OneDnnLinear) for m in run.model.modules())     # untouched
    assert fast.src_embed.token.weight is run.model.src_embed.token.weight              # weights shared
    src = sample_sources(64)                                  # 64 rows: the oneDNN products run
    for beam in (1, 4):
        ours = outputs(run.model, src, beam)
        assert_not_degenerate(ours)
        assert outputs(fast, src, beam) == ours
    with torch.inference_mode():
        tgt = torch.full((64, 1), run.cfg.bos_id)
        torch.testing.assert_close(fast.decode(tgt, *fast.encode(src)), run.model.decode(tgt, *run.model.encode(src)),
                                   rtol=1e-4, atol=1e-4)


def test_onednn_model_of_a_model_with_qk_norm_and_a_soft_cap_equals_the_paper_path():
    """The levers live in the model's own modules (its norms and its cap), which the copy keeps."""
    from qkv import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(src_vocab_size=24, tgt_vocab_size=24, d_model=32, n_heads=4, n_encoder_layers=1,
                                    n_decoder_layers=1, d_ff=64, dropout=0.0, qk_norm=True, logit_softcap=2.0)).eval()
    fast = onednn.onednn_model(model)
    assert fast.softcap is not None and fast.decoder.layers[0].cross_attn.q_norm is not None
    src = sample_sources(64)
    with torch.inference_mode():
        tgt = torch.full((64, 3), model.cfg.bos_id)
        torch.testing.assert_close(fast.decode(tgt, *fast.encode(src)), model.decode(tgt, *model.encode(src)),
                                   rtol=1e-4, atol=1e-4)


def test_onednn_is_chosen_off_intel_x86_only():
    assert onednn.onednn_pays("AuthenticAMD", "x86_64") == onednn._has_op()
    assert not onednn.onednn_pays("GenuineIntel", "x86_64")
    assert not onednn.onednn_pays("", "aarch64")
