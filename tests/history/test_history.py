"""The history lab: recurrent models, additive attention, and the `qkv history` report."""

from __future__ import annotations

import json

import pytest
import torch

from qkv.cli import main
from qkv.search import DecodeConfig, translate_ids
from qkv.history import AttentionSeq2Seq, FeedForwardLM, LSTMLM, RecurrentConfig, Seq2Seq
from qkv.history.lab import LabConfig, build_model, gradient_flow, run_lab
from qkv.history.report import write_report
from qkv.tokenizers import CharTokenizer
from qkv.training.loss import label_smoothed_nll

V = 12  # 4 special tokens + 8 symbols


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared CPU: one thread avoids oversubscription (as the lab itself does)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small(cell: str = "gru", **kw) -> RecurrentConfig:
    return RecurrentConfig(src_vocab_size=V, tgt_vocab_size=V, cell=cell, d_embed=16, d_hidden=32, **kw)


def reverse_batch(n: int = 32, length: int = 5, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """src (n, L) random symbols; tgt_in = <bos> reversed; tgt_out = reversed <eos>."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, V, (n, length), generator=g)
    y = src.flip(1)
    tgt_in = torch.cat([torch.ones(n, 1, dtype=torch.long), y], dim=1)
    tgt_out = torch.cat([y, torch.full((n, 1), 2)], dim=1)
    return src, tgt_in, tgt_out


def fit(model: torch.nn.Module, step_loss, steps: int = 150, lr: float = 1e-2) -> float:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = step_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


SEQ2SEQ = [(Seq2Seq, "rnn"), (Seq2Seq, "lstm"), (Seq2Seq, "gru"), (AttentionSeq2Seq, "gru"), (AttentionSeq2Seq, "lstm")]


@pytest.mark.parametrize("cls,cell", SEQ2SEQ)
def test_seq2seq_learns_to_reverse_a_small_batch(cls, cell):
    torch.manual_seed(0)
    model = cls(small(cell))
    src, tgt_in, tgt_out = reverse_batch()

    def step_loss() -> torch.Tensor:
        loss, _, n = label_smoothed_nll(model(src, tgt_in), tgt_out)
        return loss / n

    with torch.no_grad():
        start = float(step_loss())
    assert start > 2.0                                  # about ln(12) = 2.5 before training
    assert fit(model, step_loss) < 0.3


@pytest.mark.parametrize("lm", [FeedForwardLM(RecurrentConfig(tgt_vocab_size=V, d_embed=16, d_hidden=32), window=3),
                                LSTMLM(RecurrentConfig(tgt_vocab_size=V, d_embed=16, d_hidden=32))])
def test_language_models_learn_a_periodic_sequence(lm):
    ids = torch.tensor([[4, 5, 6, 7, 8] * 6, [8, 7, 6, 5, 4] * 6])            # (2, 30)

    def step_loss() -> torch.Tensor:
        logits = lm(ids[:, :-1])
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())

    # the second row's successors differ from the first's, so a window of 2+ tokens is needed
    assert fit(lm, step_loss, steps=100) < 0.1


def test_additive_attention_weights_sum_to_one_and_skip_padding():
    torch.manual_seed(0)
    model = AttentionSeq2Seq(small())
    src, tgt_in, _ = reverse_batch(n=3, length=6)
    src[0, 4:] = 0                                                            # two pad positions
    src[1, 1:] = 0                                                            # one real token
    w = model.attention_weights(src, tgt_in)                                  # (B, T, S)
    assert w.shape == (3, tgt_in.size(1), 6)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, tgt_in.size(1)))
    assert torch.all(w[0, :, 4:] == 0) and torch.all(w[1, :, 1:] == 0)
    torch.testing.assert_close(w[1, :, 0], torch.ones(tgt_in.size(1)))
    assert torch.all(w[2] > 0)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_fixed_vector_decoder_sees_only_the_final_encoder_state(cell):
    torch.manual_seed(0)
    model = Seq2Seq(small(cell)).eval()
    src, tgt_in, _ = reverse_batch(n=4, length=7)
    src[0, 5:] = 0                                                            # row 0 ends at position 4
    memory, src_mask = model.encode(src)
    last = torch.tensor([4, 6, 6, 6])
    keep = torch.zeros_like(memory, dtype=torch.bool)
    keep[torch.arange(4), last] = True
    noisy = torch.where(keep, memory, torch.randn_like(memory) * 10)         # every other state replaced
    with torch.no_grad():
        torch.testing.assert_close(model.decode(tgt_in, noisy, src_mask), model.decode(tgt_in, memory, src_mask))
        changed_final = torch.where(keep, memory + 1.0, memory)
        assert not torch.allclose(model.decode(tgt_in, changed_final, src_mask), model.decode(tgt_in, memory, src_mask))
        # the attention model, by contrast, reads the states the fixed-vector model ignores
        attn = AttentionSeq2Seq(small(cell)).eval()
        memory, src_mask = attn.encode(src)
        noisy = torch.where(keep, memory, torch.randn_like(memory) * 10)
        assert not torch.allclose(attn.decode(tgt_in, noisy, src_mask), attn.decode(tgt_in, memory, src_mask))


@pytest.mark.parametrize("cls,cell", SEQ2SEQ)
def test_step_by_step_decoding_with_the_cache_matches_teacher_forcing(cls, cell):
    torch.manual_seed(0)
    model = cls(small(cell)).eval()
    src, tgt_in, _ = reverse_batch(n=3, length=6)
    src[0, 3:] = 0
    with torch.no_grad():
        full = model(src, tgt_in)
        memory, src_mask = model.encode(src)
        cache = model.new_cache()
        steps = [model.decode(tgt_in[:, :1], memory, src_mask, cache)]
        steps += [model.decode(tgt_in[:, t : t + 1], None, src_mask, cache) for t in range(1, tgt_in.size(1))]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)
    hyps = translate_ids(model, src, DecodeConfig(beam_size=3, max_len_a=1.0, max_len_b=2))   # reorder path
    assert len(hyps) == 3 and all(len(h[0].tokens) <= 8 for h in hyps)


@pytest.mark.parametrize("lm", [FeedForwardLM(RecurrentConfig(tgt_vocab_size=V), window=3), LSTMLM(RecurrentConfig(tgt_vocab_size=V))])
def test_language_model_cache_matches_full_pass(lm):
    ids = torch.randint(4, V, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = lm(ids)
        cache = lm.new_cache()
        steps = [lm(ids[:, :4], cache)] + [lm(ids[:, t : t + 1], cache) for t in range(4, 9)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)


def test_lab_models_have_comparable_parameter_counts():
    lab = LabConfig()
    counts = {name: build_model(name, 30, lab).num_parameters() for name in lab.models}
    target = counts["transformer"]
    assert all(abs(c - target) / target < 0.05 for c in counts.values()), counts


def test_gradient_vanishes_through_a_plain_rnn_but_not_through_attention():
    torch.manual_seed(0)
    tok = CharTokenizer.from_alphabet("abcdefgh")
    g = torch.Generator().manual_seed(0)
    pairs = []
    for _ in range(8):
        s = "".join("abcdefgh"[int(i)] for i in torch.randint(0, 8, (30,), generator=g))
        pairs.append((s, s[::-1]))
    lab = LabConfig()
    rnn = gradient_flow(build_model("rnn", tok.vocab_size, lab), pairs, tok)
    lstm = gradient_flow(build_model("lstm", tok.vocab_size, lab), pairs, tok)
    transformer = gradient_flow(build_model("transformer", tok.vocab_size, lab), pairs, tok)
    assert len(rnn) == 30
    assert rnn[0] / rnn[-1] < 1e-4                       # vanished over 30 + 30 steps
    assert lstm[0] / lstm[-1] > 100 * rnn[0] / rnn[-1]   # open forget gates carry it much further
    assert transformer[0] / transformer[-1] > 0.1        # one attention hop from any position


def tiny_lab(**kw) -> LabConfig:
    settings = dict(budget_seconds=0.3, max_steps=3, train_examples=200, valid_examples=20, test_per_length=10,
                    timing_lengths=(4, 8), timing_batch=2, evals=2, d_model=16, n_layers=1, clock="wall")
    return LabConfig(**{**settings, **kw})


def test_lab_writes_report_json_and_plots(tmp_path):
    results = run_lab(tiny_lab(task="addition"), log=lambda line: None)
    report = write_report(results, tmp_path)
    text = report.read_text()
    for name in ("accuracy_by_length", "training_curves", "step_time", "gradient_flow", "attention"):
        png = tmp_path / f"{name}.png"
        assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"
        assert f"({name}.png)" in text
    saved = json.loads((tmp_path / "results.json").read_text())
    assert list(saved["models"]) == ["rnn", "lstm", "gru", "gru-attn", "transformer"]
    for m in saved["models"].values():
        assert m["steps"] == 3 and m["parameters"] > 0 and m["tokens_per_second"] > 0
        assert {"2", "3", "4", "5", "6"} <= set(m["accuracy_by_length"])      # trained on 1-3 digits, tested to 6
        assert all(0.0 <= a <= 1.0 for a in m["accuracy_by_length"].values())
        assert len(m["gradient_flow_init"]) == saved["gradient_length"] >= 7  # e.g. "123456+78"
    assert "| GRU + attention |" in text
    write_report(saved, tmp_path / "again")                                  # re-rendering from the JSON works


def test_history_command_runs_and_rejects_bad_options(tmp_path, capsys):
    out = tmp_path / "h"
    assert main(["history", "--quick", "--models", "rnn,transformer", "--steps", "2", "--out", str(out)]) == 0
    assert (out / "report.md").is_file() and (out / "accuracy_by_length.png").is_file()
    assert not (out / "attention.png").exists()                              # no attention model was run
    saved = json.loads((out / "results.json").read_text())
    assert saved["task"] == "reverse" and saved["config"]["budget_seconds"] == 60.0
    assert set(saved["models"]["rnn"]["accuracy_by_length"]) == {str(n) for n in range(2, 21)}  # 1-10, tested to 20
    assert main(["history", "--models", "rnn,cnn", "--out", str(out)]) == 2
    assert main(["history", "--task", "poems", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'cnn'" in err and "unknown task 'poems'" in err and "Traceback" not in err
