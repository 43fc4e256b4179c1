"""qkv.explain.trace: the traced numbers are the model's numbers, and they obey the paper's equations."""

import json
import math

import pytest
import torch

from qkv import ConfigError, DataError, ModelConfig, build_model
from qkv.explain import trace
from qkv.tokenizers import CharTokenizer
from tests.tiny import tiny_config

V = 20
SRC = [5, 6, 7, 8, 2]
TGT = [9, 10, 11]


def make_model(arch: str = "encoder-decoder", norm_first: bool = False, seed: int = 0):
    cfg = tiny_config(V, arch, max_len=32, norm_first=norm_first, dropout=0.1)
    torch.manual_seed(seed)
    return build_model(cfg).eval()


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("arch", ["encoder-decoder", "decoder-only"])
def test_logits_equal_forward(arch, norm_first):
    model = make_model(arch, norm_first)
    t = trace(model, SRC, TGT)
    with torch.no_grad():
        if arch == "encoder-decoder":
            ref = model(torch.tensor([SRC]), torch.tensor([[1] + TGT]))[0]
        else:
            ref = model(torch.tensor([SRC + TGT]))[0]
    torch.testing.assert_close(t.logits, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(t.probs.sum(-1), torch.ones(ref.size(0)))


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same tensor of the forward pass: the same memory, shape and strides (not a copy)."""
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("arch", ["encoder-decoder", "decoder-only"])
def test_recorded_tensors_are_the_forwards_own(arch, norm_first):
    """The trace holds the tensors the model's forward computed (qkv.model.record), not a re-run:
    each step's output is the next step's input, object for object, and what the trace derives
    from them differs from the forward's own result by exactly 0."""
    model = make_model(arch, norm_first)
    t = trace(model, SRC, TGT)
    first = t.encoder_layers[0] if arch == "encoder-decoder" else t.decoder_layers[0]
    assert same(first.self_block.input, (t.src or t.tgt).sum)             # embedding -> first layer
    for stack in (t.encoder_layers, t.decoder_layers):
        for layer, nxt in zip(stack, stack[1:]):
            assert same(layer.output, nxt.self_block.input)                   # layer -> next layer
        for layer in stack:
            blocks = [(layer.self_attn, layer.self_block), (layer.cross_attn, layer.cross_block)]
            for att, block in blocks:
                if att is None:
                    continue
                assert same(att.x, block.fn_input) and same(att.out, block.fn_output)
                assert same(block.fn_input, block.input) is (not norm_first)   # post-LN: no norm before
                masked = att.scaled.masked_fill(~att.mask, float("-inf"))
                assert torch.equal(att.weights, torch.softmax(masked, dim=-1).masked_fill(~att.mask, 0.0))
                assert torch.equal(att.scaled, att.scores / math.sqrt(att.d_head))
            assert same(layer.ff.input, layer.ff_block.fn_input) and same(layer.ff.output, layer.ff_block.fn_output)
            after_attn = layer.cross_block or layer.ff_block                  # the residual stream goes on
            assert same(layer.self_block.output, after_attn.input)
            if layer.cross_block is not None:
                assert same(layer.cross_block.output, layer.ff_block.input)
    if arch == "encoder-decoder":
        assert same(t.memory, t.encoder_layers[-1].output) is (not norm_first)   # pre-LN: a final norm
        assert all(same(layer.cross_attn.memory, t.memory) for layer in t.decoder_layers)
    assert torch.equal(model.lm_head(t.final), t.logits)                     # the output layer, exactly
    assert same(t.final, t.decoder_layers[-1].output) is (not norm_first)


def test_trace_runs_in_eval_mode_and_restores_training():
    model = make_model().train()                     # dropout 0.1 would make the trace random
    a, b = trace(model, SRC, TGT), trace(model, SRC, TGT)
    assert torch.equal(a.logits, b.logits)
    assert model.training


@pytest.mark.parametrize("arch", ["encoder-decoder", "decoder-only"])
def test_weights_are_softmax_of_scaled_scores(arch):
    t = trace(make_model(arch, norm_first=True), SRC, TGT)
    for a in t.attentions():
        scores = a.q @ a.k.transpose(-2, -1)
        torch.testing.assert_close(a.scores, scores)
        torch.testing.assert_close(a.scaled, scores / math.sqrt(a.d_head))
        expected = torch.softmax(a.scaled.masked_fill(~a.mask, float("-inf")), dim=-1)
        torch.testing.assert_close(a.weights, expected)
        torch.testing.assert_close(a.mixed, a.weights @ a.v)
        assert a.weights.shape == (4, len(a.query_tokens), len(a.key_tokens))


def test_head_outputs_add_up_to_the_attention_output():
    model = make_model()
    t = trace(model, SRC, TGT)
    layer = model.decoder.layers[1].cross_attn
    a = t.attention("cross", 1)
    torch.testing.assert_close(a.head_outputs.sum(0) + layer.out_proj.bias, a.out)
    merged = a.mixed.transpose(0, 1).reshape(a.mixed.size(1), -1)             # (T, d_model)
    torch.testing.assert_close(layer.out_proj(merged), a.out, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["encoder-decoder", "decoder-only"])
def test_future_is_hidden_exactly(arch):
    t = trace(make_model(arch), SRC, TGT)
    for layer in t.decoder_layers:
        w = layer.self_attn.weights                                            # (H, T, T)
        future = torch.ones(w.shape[-2:], dtype=torch.bool).triu(1)
        assert torch.all(w[:, future] == 0.0)
        assert torch.all(w[:, ~future] > 0.0)


def test_padding_gets_zero_weight():
    t = trace(make_model(), SRC + [0, 0], TGT + [0])
    for a in t.attentions():
        pad_keys = torch.tensor([tok == "<pad>" for tok in a.key_tokens])
        assert pad_keys.any()
        assert torch.all(a.weights[..., pad_keys] == 0.0)
    cross = t.attention("cross", 0)
    assert cross.key_tokens[-2:] == ["<pad>", "<pad>"] and not cross.mask[:, -2:].any()


def test_embedding_is_scaled_token_plus_position():
    model = make_model()
    t = trace(model, SRC, TGT)
    emb = t.src
    torch.testing.assert_close(emb.token_embedding, model.src_embed.token.weight[SRC] * math.sqrt(32))
    torch.testing.assert_close(emb.sum, emb.token_embedding + emb.positional)
    assert emb.scale == pytest.approx(math.sqrt(32))


def test_residual_streams_chain():
    t = trace(make_model(norm_first=False), SRC, TGT)
    first = t.encoder_layers[0]
    assert torch.equal(first.self_block.input, t.src.sum)
    torch.testing.assert_close(first.self_block.residual, first.self_block.input + first.self_attn.out)
    assert torch.equal(first.ff.input, first.self_block.output)             # post-LN: FFN sees the stream
    assert torch.equal(t.encoder_layers[1].self_block.input, first.output)
    assert t.memory is not None and torch.equal(t.memory, t.encoder_layers[-1].output)


def test_tokens_and_json_summary():
    tok = CharTokenizer.train(["abc de"])
    model = make_model()
    cfg = model.cfg
    assert tok.vocab_size <= cfg.tgt_vocab_size
    t = trace(model, "ab c", "cb", src_tokenizer=tok, tgt_tokenizer=tok)
    assert t.src.tokens == ["a", "b", "␣", "c"]
    assert t.tgt.tokens == ["<bos>", "c", "b"]
    assert [s["target"]["token"] for s in t.top_k(3)] == ["c", "b", "<eos>"]
    data = json.loads(json.dumps(t.to_dict(k=3)))
    kinds = [(a["kind"], a["layer"]) for a in data["attention"]]
    assert kinds == [("enc", 0), ("enc", 1), ("dec", 0), ("cross", 0), ("dec", 1), ("cross", 1)]
    cross = data["attention"][3]
    assert cross["query_tokens"] == t.tgt.tokens and cross["key_tokens"] == t.src.tokens
    assert len(cross["weights"]) == 4 and len(cross["weights"][0]) == 3 and len(cross["weights"][0][0]) == 4
    assert len(data["top_k"]) == 3 and len(data["top_k"][0]["top"]) == 3


def test_decoder_only_reads_the_prompt_as_generate_does():
    tok = CharTokenizer.train(["abc de"])
    model = make_model("decoder-only")
    t = trace(model, "abc", tgt_tokenizer=tok)
    assert t.tgt.tokens == ["a", "b", "c"]
    assert t.src is None and t.encoder_layers == []
    assert t.next_ids == [tok.encode("b")[0], tok.encode("c")[0], None]
    assert trace(model, "", tgt_tokenizer=tok).tgt.tokens == ["<bos>"]


def test_bad_requests_raise_one_line_errors():
    model = make_model()
    t = trace(model, SRC, TGT)
    with pytest.raises(ConfigError, match="layers 0..1"):
        t.attention("enc", 5)
    with pytest.raises(ConfigError, match="kind"):
        t.attention("sideways", 0)
    with pytest.raises(ConfigError, match="no encoder"):
        trace(make_model("decoder-only"), SRC).attention("enc", 0)
    with pytest.raises(DataError, match="outside the vocabulary"):
        trace(model, [5, 99])
    with pytest.raises(DataError, match="at most 32"):
        trace(model, [5] * 40)
    with pytest.raises(ConfigError, match="no tokenizer"):
        trace(model, "text")


def test_byte_level_bpe_tokens_are_readable():
    from qkv.tokenizers import BPETokenizer

    tok = BPETokenizer.train(["the cat sat on the mat\nthe dog"] * 10, vocab_size=280, min_freq=2)
    cfg = ModelConfig(arch="decoder-only", tgt_vocab_size=tok.vocab_size, d_model=16, n_heads=2,
                      n_decoder_layers=1, d_ff=32, max_len=64)
    t = trace(build_model(cfg), "the cat\nsat", tgt_tokenizer=tok)
    assert "".join(t.tgt.tokens) == "the␣cat↵sat"
    assert not any("Ġ" in s or "Ċ" in s for s in t.tgt.tokens)
