"""The reports' conclusions follow the measured numbers (fabricated here: no training)."""

from __future__ import annotations

from pathlib import Path

from qkv.history import modern
from qkv.history.modern import ModernConfig
from qkv.history.modern import conclusions as modern_conclusions
from qkv.history.report import conclusions, markdown

LABELS = {"rnn": "RNN (fixed vector)", "gru": "GRU (fixed vector)", "gru-attn": "GRU + attention",
          "transformer": "Transformer"}


def lab_results(accuracy: dict[str, float], steps: int = 800) -> dict:
    """A results.json as run_lab writes it: every model has `accuracy` at every length 2-10."""
    models = {}
    for name, acc in accuracy.items():
        models[name] = {
            "label": LABELS[name], "parameters": 1000, "steps": steps, "tokens_per_second": 1.0,
            "curve": [{"step": steps, "seconds": 1.0, "valid_loss": 1.0 - acc}],
            "accuracy_by_length": {str(n): acc for n in range(2, 21)} | {str(n): 0.0 for n in range(11, 21)},
            "accuracy_in_training_lengths": acc, "accuracy_beyond_training_lengths": 0.0,
            "gradient_flow_init": [1.0, 1.0], "gradient_flow_trained": [1.0, 1.0],
            "step_seconds_by_length": {"8": 0.01, "128": 0.1 if name == "transformer" else 0.2},
        }
    config = {"budget_seconds": 15.0, "max_steps": None, "clock": "cpu", "max_tokens": 1536, "lr": 2e-3,
              "warmup": 100, "label_smoothing": 0.1, "test_per_length": 40}
    return {"task": "reverse", "config": config, "train_lengths": [1, 10], "length_unit": "letters",
            "gradient_length": 2, "models": models, "total_seconds": 10.0}


def test_the_text_says_the_transformer_lost_when_it_did():
    results = lab_results({"rnn": 0.9, "gru": 0.7, "gru-attn": 0.6, "transformer": 0.2})
    text = "\n".join(conclusions(results))
    assert "1. RNN (fixed vector) 90.0%" in text and "4. Transformer 20.0%" in text
    assert "RNN (fixed vector) is best, 20.0 points ahead of GRU (fixed vector)" in text
    assert "favour the fixed vector by 30.0 points: attention did not win this run" in text
    assert "Too short" not in text
    report = markdown(results, with_attention=False)
    assert "## What this run measured" in report and "slowest RNN (fixed vector)" in report


def test_the_text_says_attention_won_when_it_did_and_calls_close_results_level():
    text = "\n".join(conclusions(lab_results({"rnn": 0.5, "gru-attn": 0.95, "transformer": 0.93})))
    assert "1. GRU + attention 95.0%" in text
    assert "GRU + attention and Transformer are level" in text
    assert "favour attention by 45.0 points" in text


def test_a_short_run_gets_the_caveat():
    few_steps = "\n".join(conclusions(lab_results({"rnn": 0.9, "transformer": 0.6}, steps=149)))
    assert few_steps.startswith("**Too short to rank.**") and "Transformer 149" in few_steps
    unlearned = "\n".join(conclusions(lab_results({"rnn": 0.2, "transformer": 0.089})))
    assert "**Too short to rank.**" in unlearned and "no model learned the task" in unlearned


def modern_results(losses: dict[str, float], steps: int = 600) -> dict:
    return {"variants": {name: {"label": modern.VARIANTS[name][0], "valid_loss": loss, "steps": steps}
                         for name, loss in losses.items()}}


def test_modern_conclusions_follow_the_losses():
    text = "\n".join(modern_conclusions(modern_results({"2017": 1.90, "rope": 1.80, "rmsnorm": 1.99, "all": 2.00})))
    assert "1. + RoPE 1.800" in text and "4. all (a Llama" in text
    assert "+ RoPE is best, 0.100 nats/char ahead" in text
    assert "Better than the 2017 model: + RoPE; worse: + RMSNorm, all (a Llama" in text
    assert "Too short" not in text
    level = "\n".join(modern_conclusions(modern_results({"2017": 1.80, "all": 1.79})))
    assert "all (a Llama: + no biases, no emb. scale) and 2017" in level and "are level" in level


def test_the_optimizer_step_is_judged_on_its_numbers():
    better = "\n".join(modern_conclusions(modern_results({"2017": 1.90, "all": 1.80, "muon": 1.70})))
    assert "1. all + Muon (AdamW on the rest) 1.700" in better
    assert "Muon on its matrices (1.700) is better than AdamW by 0.100 nats/char (1.800), in 600 steps against 600" in better
    worse = modern_results({"all": 1.72, "muon": 1.80})
    worse["variants"]["muon"].update(steps=500, tokens_per_second=10_000.0)
    worse["variants"]["all"].update(tokens_per_second=12_000.0)
    text = "\n".join(modern_conclusions(worse))
    assert "is worse than AdamW by 0.080 nats/char (1.720), in 500 steps against 600; a Muon step took 1.20x" in text
    level = "\n".join(modern_conclusions(modern_results({"all": 1.72, "muon": 1.70})))
    assert "Muon on its matrices (1.700) is level with AdamW: 0.020 apart" in level
    assert "The optimizer" not in "\n".join(modern_conclusions(modern_results({"2017": 1.9, "muon": 1.8})))
    short = "\n".join(modern_conclusions(modern_results({"all": 1.72, "muon": 1.70}, steps=100)))
    assert short.startswith("**Too short to rank.**") and "all + Muon (AdamW on the rest) 100" in short


def test_a_short_modern_run_gets_the_caveat():
    text = "\n".join(modern_conclusions(modern_results({"2017": 2.70, "all": 2.75}, steps=40)))
    assert text.startswith("**Too short to rank.**") and "fewer than" in text and "above 2.2" in text


def test_modern_default_data_does_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    repo = Path(__file__).resolve().parents[2]
    expected = repo.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
    monkeypatch.chdir(tmp_path)
    for mc in (ModernConfig(), ModernConfig.quick()):
        assert Path(mc.data).is_absolute() and Path(mc.data) == expected
    if expected.is_file():                                   # found from a directory far from the repository
        assert modern.read_text(ModernConfig().data)[:9] == "First Cit"
