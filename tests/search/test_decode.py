"""Decoding: the KV cache changes nothing but speed; beam, greedy and sampling agree where they must."""

from types import SimpleNamespace

import pytest
import torch

from qkv import ConfigError, ModelConfig, build_model
from qkv.search import (
    DecodeConfig,
    Sampler,
    StepDecoder,
    beam_search,
    generate,
    generate_stream,
    sample_search,
    translate_ids,
)
from tests.tiny import tiny_config

V = 40
PAD, BOS, EOS = 0, 1, 2


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models decode fastest on one thread (no fork/join per op), and timing stays steady."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def seq2seq(seed: int = 0, **kw):
    torch.manual_seed(seed)
    # untied: random outputs do not just repeat
    return build_model(tiny_config(V, **{"max_len": 48, "tie_embeddings": False, **kw})).eval()


def language_model(seed: int = 0, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(**{**dict(arch="decoder-only", tgt_vocab_size=V, d_model=32, n_heads=4, n_decoder_layers=2,
                                d_ff=64, dropout=0.0, max_len=48, norm_first=True), **kw})
    return build_model(cfg).eval()


# the options since 2017 together (a Llama): rotary positions, RMSNorm, SwiGLU, grouped-query attention
LLAMA = dict(positional="rope", norm="rmsnorm", activation="swiglu", n_kv_heads=2, bias=False, scale_embeddings=False)


# the levers since 2017 that are not Llama's: QK-norm (in self- and cross-attention) and a logit soft-cap small
# enough to bend these untrained logits
LEVERS = dict(qk_norm=True, logit_softcap=2.0)
ARCHS = ["encoder-decoder", "decoder-only", "llama", "encoder-decoder+levers", "llama+levers"]


def model_of(arch: str):
    levers = LEVERS if arch.endswith("+levers") else {}
    if arch.startswith("encoder-decoder"):
        return seq2seq(**levers)
    return language_model(**(LLAMA if arch.startswith("llama") else {}), **levers)


def sources(seed: int = 1) -> torch.Tensor:
    """Three sources of lengths 9, 6 and 3 (right-padded)."""
    src = torch.randint(4, V, (3, 9), generator=torch.Generator().manual_seed(seed))
    src[1, 6:] = PAD
    src[2, 3:] = PAD
    return src


def assert_same(a, b, atol=1e-5):
    assert [[h.tokens for h in x] for x in a] == [[h.tokens for h in x] for x in b]
    for x, y in zip(a, b):
        for h, g in zip(x, y):
            assert h.score == pytest.approx(g.score, abs=atol)
            assert h.log_prob == pytest.approx(g.log_prob, abs=atol)


# --- the cache is exact -------------------------------------------------------------------------


@pytest.mark.parametrize("dcfg", [
    DecodeConfig(),
    DecodeConfig(beam_size=4, n_best=3),
    DecodeConfig(sample=True, seed=7, temperature=1.3, top_k=20, top_p=0.95),
], ids=["greedy", "beam", "sample"])
def test_cached_and_uncached_decoding_agree(dcfg, device):
    model, src = seq2seq().to(device), sources().to(device)
    cached = translate_ids(model, src, dcfg)
    dcfg.use_cache = False
    uncached = translate_ids(model, src, dcfg)
    assert_same(cached, uncached, atol=1e-5 if device.type == "cpu" else 1e-4)
    assert any(len(set(h.tokens)) > 2 for x in cached for h in x)     # not a degenerate output


@pytest.mark.parametrize("arch", ARCHS)
def test_step_logits_with_and_without_cache_agree(arch):
    """Feeding the same tokens step by step gives the same logits either way (1e-5)."""
    model = model_of(arch)
    feed = torch.randint(4, V, (2, 12), generator=torch.Generator().manual_seed(3))
    kwargs = {}
    if arch.startswith("encoder-decoder"):
        memory, src_mask = model.encode(sources()[:2])
        kwargs = dict(memory=memory, src_mask=src_mask)
    with torch.inference_mode():
        fast = StepDecoder(model, use_cache=True, **kwargs)
        slow = StepDecoder(model, use_cache=False, **kwargs)
        chunks = [feed[:, :4]] + list(feed[:, 4:].split(1, dim=1))     # a prompt, then one at a time
        for i, ids in enumerate(chunks):
            if i == 3:                                                  # beams swap rows
                fast.reorder(torch.tensor([1, 0]))
                slow.reorder(torch.tensor([1, 0]))
            torch.testing.assert_close(fast.step(ids), slow.step(ids), atol=1e-5, rtol=0)


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
@pytest.mark.parametrize("arch", ARCHS)
def test_fast_steps_equal_the_paper_path(arch, padded):
    """qkv.fast.decoding.CachedSteps (no mask where nothing is hidden, last position only, the
    output weight transposed) gives the paper path's cached logits: model.decode / model(ids, cache)."""
    model = model_of(arch)
    feed = torch.randint(4, V, (3, 10), generator=torch.Generator().manual_seed(5))
    if padded:
        feed[2, 1] = PAD                                                # a padded key in the past
    kwargs = {}
    if arch.startswith("encoder-decoder"):
        src = sources() if padded else sources()[:1].repeat(3, 1)
        memory, src_mask = model.encode(src)
        kwargs = dict(memory=memory, src_mask=src_mask)
    with torch.inference_mode():
        fast = StepDecoder(model, **kwargs)
        paper = StepDecoder(model, fast=False, **kwargs)
        assert fast.steps is not None and paper.steps is None and paper.cache is not None
        rows = torch.arange(3)
        for i, ids in enumerate([feed[:, :3]] + list(feed[:, 3:].split(1, dim=1))):
            if i == 2:                                                  # beams swap rows
                rows = torch.tensor([2, 0, 1])
                fast.reorder(rows)
                paper.reorder(rows)
            if i == 5:                                                  # a row leaves the batch
                fast.reorder(torch.tensor([0, 2]))
                paper.reorder(torch.tensor([0, 2]))
                rows = rows[[0, 2]]
            ids = ids[rows]
            torch.testing.assert_close(fast.step(ids), paper.step(ids), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("use_cache", [True, False])
def test_decoding_stops_when_asked(use_cache):
    """Inside qkv.search.stoppable, every step asks first; the server uses it for clients that left."""
    from qkv.search import DecodingStopped, stoppable

    model, steps = seq2seq(), []
    model.decoder.register_forward_pre_hook(lambda m, args: steps.append(1))
    with stoppable(lambda: len(steps) >= 3), pytest.raises(DecodingStopped, match="stopped"):
        beam_search(model, sources(), DecodeConfig(beam_size=2, max_len_a=0, max_len_b=20, min_len=20,
                                                     use_cache=use_cache))
    assert len(steps) == 3
    assert len(translate_ids(model, sources(), DecodeConfig(max_len_a=0, max_len_b=5))) == 3   # outside: runs


def test_cached_decoding_feeds_one_token_and_encodes_cross_attention_once():
    model, src = seq2seq(), sources()
    widths, cross_kv = [], []
    model.decoder.register_forward_pre_hook(lambda m, args: widths.append(args[0].size(1)))
    model.decoder.layers[0].cross_attn.k_proj.register_forward_hook(lambda *_: cross_kv.append(1))
    beam_search(model, src, DecodeConfig(beam_size=3, max_len_a=0, max_len_b=8, min_len=8))
    assert widths == [1] * 8
    assert len(cross_kv) == 1


def test_decoder_only_cache_agrees_and_processes_the_prompt_once():
    model, prompt = language_model(), [5, 9, 11, 4, 30]
    for sampler in (None, Sampler(True, temperature=1.5, top_k=25, seed=4)):
        fast = generate(model, prompt, 20, sampler=sampler)
        if sampler is not None:
            sampler.generator.manual_seed(4)
        slow = generate(model, prompt, 20, sampler=sampler, use_cache=False)
        assert fast == slow and len(fast) > 0
    widths = []
    model.decoder.register_forward_pre_hook(lambda m, args: widths.append(args[0].size(1)))
    generate(model, prompt, 6, min_new_tokens=6)
    assert widths == [len(prompt)] + [1] * 5


def test_generate_streams_and_respects_limits():
    model = language_model()
    stream = generate_stream(model, [5, 6], 100, min_new_tokens=100)
    first = next(stream)                                   # a token arrives before the rest exist
    assert isinstance(first, int)
    assert not torch.is_inference_mode_enabled()           # the generator does not leak its mode
    rest = list(stream)
    assert len(rest) + 1 == model.cfg.max_len - 2 + 1       # positions run out at max_len
    assert generate(model, [], 3, min_new_tokens=3) != []  # empty prompt starts from <bos>


# --- the searches agree where they must ---------------------------------------------------------


def test_beam_size_one_is_greedy():
    model, src = seq2seq(seed=2), sources(seed=5)
    assert_same(beam_search(model, src, DecodeConfig(beam_size=1, length_penalty=0.0)),
                sample_search(model, src, DecodeConfig()))


def test_top_k_one_and_tiny_top_p_are_greedy():
    model, src = seq2seq(seed=2), sources(seed=5)
    greedy = translate_ids(model, src, DecodeConfig())
    assert_same(translate_ids(model, src, DecodeConfig(sample=True, top_k=1, seed=0)), greedy)
    assert_same(translate_ids(model, src, DecodeConfig(sample=True, top_p=1e-6, seed=0)), greedy)


def test_sampling_with_a_seed_reproduces():
    model, src = seq2seq(), sources()
    dcfg = DecodeConfig(sample=True, seed=11, temperature=2.0)
    first = translate_ids(model, src, dcfg)
    assert_same(first, translate_ids(model, src, dcfg))
    other = translate_ids(model, src, DecodeConfig(sample=True, seed=12, temperature=2.0))
    assert [x[0].tokens for x in other] != [x[0].tokens for x in first]


@pytest.mark.parametrize("dcfg", [DecodeConfig(beam_size=4, n_best=2), DecodeConfig()], ids=["beam", "greedy"])
def test_batched_decoding_equals_one_sentence_at_a_time(dcfg, device):
    model, src = seq2seq(seed=3).to(device), sources(seed=8).to(device)
    batched = translate_ids(model, src, dcfg)
    alone = [translate_ids(model, row[row != PAD][None], dcfg)[0] for row in src]
    assert_same(batched, alone, atol=1e-4)


class PrefixModel:
    """A stand-in with the encoder-decoder interface whose next-token probabilities depend on the
    previous token: after <bos>, A 0.6 / B 0.4; after A, <eos> 0.34 / A 0.33 / B 0.33; after B,
    <eos> 0.95. Greedy picks A <eos> (p = 0.204); the best sequence is B <eos> (p = 0.38)."""

    A, B = 4, 5

    def __init__(self):
        self.cfg = SimpleNamespace(pad_id=PAD, bos_id=BOS, eos_id=EOS, max_len=10)
        table = torch.full((6, 6), 1e-9)
        table[BOS, [self.A, self.B]] = torch.tensor([0.6, 0.4])
        table[self.A, [EOS, self.A, self.B]] = torch.tensor([0.34, 0.33, 0.33])
        table[self.B, [EOS, self.A, self.B]] = torch.tensor([0.95, 0.025, 0.025])
        table[[PAD, EOS, 3], EOS] = 1.0
        self.log_table = (table / table.sum(-1, keepdim=True)).log()

    def encode(self, src):
        return src[:, :, None].float(), (src != PAD)[:, None, None, :]

    def new_cache(self):
        return SimpleNamespace(length=0, reorder=lambda index, same_sources=False: None)

    def decode(self, tgt_in, memory, src_mask, cache=None):
        return self.log_table[tgt_in]                   # (B, T, V): depends on each position's token


def test_beam_search_finds_the_sequence_greedy_misses():
    model, src = PrefixModel(), torch.tensor([[7, 8, 9]])
    greedy = sample_search(model, src, DecodeConfig())[0][0]
    beam = beam_search(model, src, DecodeConfig(beam_size=2, n_best=2, length_penalty=0.0))[0]
    assert greedy.tokens == [PrefixModel.A]
    assert beam[0].tokens == [PrefixModel.B]
    assert beam[0].log_prob == pytest.approx(torch.tensor(0.38).log().item(), abs=1e-4)
    assert beam[0].score > beam[1].score > greedy.score - 1e-6


@pytest.mark.parametrize("dcfg", [DecodeConfig(beam_size=4, n_best=4), DecodeConfig(sample=True, seed=3)],
                         ids=["beam", "sample"])
def test_scores_are_the_models_log_probabilities(dcfg):
    """Rescoring every hypothesis with one teacher-forced forward pass gives its log_prob back,
    so beam bookkeeping (which row continues which hypothesis) matches the cached states."""
    model, src = seq2seq(), sources()
    for row, hyps in zip(src, translate_ids(model, src, dcfg)):
        for h in hyps:
            limit = int(1.5 * int((row != PAD).sum()) + 10)
            target = h.tokens + ([EOS] if len(h.tokens) < limit else [])
            tgt_in = torch.tensor([[BOS] + target[:-1]])
            with torch.no_grad():
                logp = model(row[None], tgt_in).log_softmax(-1)[0]
            expected = logp.gather(1, torch.tensor(target)[:, None]).sum().item()
            assert h.log_prob == pytest.approx(expected, abs=1e-4)


def test_length_penalty_and_limits():
    model, src = seq2seq(), sources()
    out = translate_ids(model, src, DecodeConfig(beam_size=3, max_len_a=0.5, max_len_b=2, min_len=2))
    for row, hyps in zip(src, out):
        limit = int(0.5 * int((row != PAD).sum()) + 2)
        assert 2 <= len(hyps[0].tokens) <= limit
        h = hyps[0]
        n = len(h.tokens) + (1 if len(h.tokens) < limit else 0)        # <eos> counts when produced
        assert h.score == pytest.approx(h.log_prob / ((5 + n) / 6) ** 0.6, abs=1e-5)
    capped = translate_ids(model, src, DecodeConfig(max_len_b=100, min_len=100))
    assert all(len(x[0].tokens) == model.cfg.max_len for x in capped)


def test_wrong_model_kind_and_bad_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="language model"):
        translate_ids(language_model(), sources(), DecodeConfig())
    with pytest.raises(ConfigError, match="translation"):
        generate(seq2seq(), [5], 3)
    for bad in (dict(beam_size=0), dict(n_best=3, beam_size=2), dict(temperature=0.0), dict(top_p=0.0),
                dict(sample=True, beam_size=4), dict(top_k=-1)):
        with pytest.raises(ConfigError):
            DecodeConfig(**bad)


def test_cached_steps_skip_masks_only_where_nothing_is_hidden(monkeypatch):
    import qkv.model.attention as attention

    masks = []
    real = attention.scaled_dot_product_attention

    def spy(q, k, v, mask=None, **kw):
        masks.append(mask)
        return real(q, k, v, mask=mask, **kw)

    model = seq2seq()
    monkeypatch.setattr(attention, "scaled_dot_product_attention", spy)
    dcfg = DecodeConfig(max_len_a=0.0, max_len_b=6, min_len=6)
    one = translate_ids(model, sources()[:1], dcfg)          # one sentence: no padding anywhere
    steps = masks[model.cfg.n_encoder_layers:]               # after the encoder's layers
    assert len(steps) == 6 * 2 * model.cfg.n_decoder_layers and all(m is None for m in steps)
    masks.clear()
    translate_ids(model, sources(), dcfg)                    # padded sources: cross-attention keeps its mask
    cross = masks[model.cfg.n_encoder_layers + 1 :: 2]
    assert all(m is not None for m in cross) and all(m is None for m in masks[model.cfg.n_encoder_layers :: 2])
    monkeypatch.undo()
    uncached = translate_ids(model, sources()[:1], DecodeConfig(max_len_a=0.0, max_len_b=6, min_len=6, use_cache=False))
    assert_same(one, uncached)
