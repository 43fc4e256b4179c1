"""qkv.fast.bf16: decoding with a bf16 copy of a trained model keeps its outputs (90% identical, BLEU
within 3 points of float32: on this 32-wide toy model with small margins bf16 moved BLEU by about 1,
as int8 does); refused where the CPU would emulate bf16."""

import pytest
import torch

from tests.interop_models import reverse_batch
from qkv import ConfigError
from qkv.search import DecodeConfig, translate_ids
from qkv.fast import bf16
from qkv.machine import cpu_has_fast_bf16
from qkv.run import load_run


def outputs(model, src, beam: int) -> list[list[int]]:
    dcfg = DecodeConfig(beam_size=beam, length_penalty=0.0, max_len_a=0.0, max_len_b=12)
    return [h[0].tokens for h in translate_ids(model, src, dcfg)]


@pytest.mark.skipif(not cpu_has_fast_bf16(), reason="this CPU has no native bf16 (AVX-512 BF16 or AMX)")
def test_bf16_decoding_keeps_the_outputs_of_a_trained_model(trained_reverse_run):
    import sacrebleu

    run = load_run(trained_reverse_run)
    fast = bf16.bf16_model(run.model)
    assert next(fast.parameters()).dtype == torch.bfloat16
    assert next(run.model.parameters()).dtype == torch.float32          # the run's model is untouched
    src, tgt = reverse_batch(torch.Generator().manual_seed(7), 64)
    tok = run.tgt_tokenizer
    refs = [" ".join(tok.decode([i for i in row if i > 3])) for row in tgt.tolist()]

    def bleu(out: list[list[int]]) -> float:
        return sacrebleu.corpus_bleu([" ".join(tok.decode(o)) for o in out], [refs]).score

    for beam in (1, 4):
        ours, theirs = outputs(run.model, src, beam), outputs(fast, src, beam)
        # a 200-step model (BLEU ~50) is unsure of many outputs, so 8-bit mantissas flip some of
        # them (84-90% identical measured); the quality check is the BLEU below
        assert sum(a == b for a, b in zip(ours, theirs)) >= 0.8 * len(ours)
        assert bleu(ours) > 30
        assert abs(bleu(theirs) - bleu(ours)) <= 3.0


@pytest.mark.skipif(not cpu_has_fast_bf16(), reason="this CPU has no native bf16 (AVX-512 BF16 or AMX)")
def test_bf16_copy_of_a_model_with_qk_norm_and_a_soft_cap_stays_close():
    """QK-norm's gains and the cap are the model's own modules: the bf16 copy computes them in bf16 (Q, K and
    the logits keep that dtype) within bf16's rounding of the float32 logits."""
    from qkv import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(src_vocab_size=24, tgt_vocab_size=24, d_model=32, n_heads=4, n_encoder_layers=1,
                                    n_decoder_layers=1, d_ff=64, dropout=0.0, qk_norm=True, logit_softcap=2.0)).eval()
    fast = bf16.bf16_model(model)
    src, tgt = reverse_batch(torch.Generator().manual_seed(7), 16)
    with torch.inference_mode():
        ours, theirs = model(src, tgt), fast(src, tgt)
    assert theirs.dtype == torch.bfloat16 and theirs.abs().max() <= 2.0
    torch.testing.assert_close(theirs.float(), ours, atol=0.1, rtol=0.05)


def test_bf16_is_refused_where_it_would_be_emulated(monkeypatch):
    monkeypatch.setattr(bf16, "cpu_has_fast_bf16", lambda: False)
    with pytest.raises(ConfigError, match="no native bf16"):
        bf16.bf16_model(torch.nn.Linear(2, 2))
