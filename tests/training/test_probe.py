"""The speed probe (qkv.training.probe): its arithmetic, its sample of a validation, and a probed
run that fits its budget and is the run a fixed step count of that size gives."""

import pytest
import torch

from qkv import ConfigError
from qkv.run import load_run, load_run_config
from qkv.training import probe, train
from qkv.training.metrics import read_metrics
from qkv.training.probe import Costs, checkpoints, planned_seconds, steps_after, steps_for_budget, validations
from qkv.training.schedule import lr_at, make_scheduler, retarget
from tests.training.test_train import tiny_task


def test_validations_and_checkpoints_are_counted_as_the_loop_does_them():
    assert validations(2950, 1475) == 2                  # steps 1475 and 2950 (the last step is one of them)
    assert validations(3000, 1475) == 3                  # 1475, 2950 and the last step
    assert validations(10, 0) == 1                       # eval_every 0: only at the end
    assert checkpoints(2950, 1475) == 3                  # 1475, 2950 and the final save
    assert checkpoints(10, 0) == 1


def test_steps_fill_the_budget_with_the_overhead_counted():
    costs = Costs(step_s=0.125, valid_s=5.0, checkpoint_s=0.5)
    # 300 s, filled to 95%: 285 s. 2160 steps = 270 s, 3 validations (1000, 2000, 2160) = 15 s,
    # 5 checkpoints (500 ... 2000 and the final one) = 2.5 s: 287.5 s, too much; 2140 steps: 285 s.
    assert steps_for_budget(300, costs, eval_every=1000, checkpoint_every=500) == 2140
    assert planned_seconds(2140, costs, 1000, 500) == 285.0
    assert planned_seconds(2141, costs, 1000, 500) > 285.0
    assert steps_for_budget(300, Costs(0.125), 1000, 500) == 2280          # no overhead: 285 / 0.125
    assert steps_for_budget(300, costs, 1000, 500, fill=1.0) == 2260      # 282.5 + 15 + 2.5 = 300
    for step_s in (0.01, 0.0301, 0.07, 0.3, 1.7):                            # the largest that fits
        costs = Costs(step_s, valid_s=3.0, checkpoint_s=0.2)
        steps = steps_for_budget(300, costs, 1475, 1475)
        assert planned_seconds(steps, costs, 1475, 1475) <= 285 < planned_seconds(steps + 1, costs, 1475, 1475)


def test_a_faster_machine_trains_more_steps_and_a_tiny_budget_one():
    slow, fast = Costs(0.1, 4.0, 0.3), Costs(0.09, 3.6, 0.27)
    assert steps_for_budget(300, fast, 1475, 1475) > steps_for_budget(300, slow, 1475, 1475)
    assert steps_for_budget(1, Costs(5.0, 5.0, 5.0), 10, 10) == 1
    with pytest.raises(ValueError):
        steps_for_budget(300, Costs(0.0), 10, 10)


def test_the_timed_steps_take_a_few_seconds_of_the_budget():
    assert probe.timed_steps(0.07, 300) == int(10.0 / 0.07)   # 5 minutes: 10 s of steps
    assert probe.timed_steps(0.07, 60) == int(2.4 / 0.07)     # 1 minute: 4%
    assert probe.timed_steps(1.2, 3540) == 8                  # slow steps: still about 10 s
    assert probe.timed_steps(20.0, 3540) == probe.MIN_TIMED_STEPS


def test_a_sample_reads_spread_batches_and_scales_their_time():
    now = [0.0]
    sample = probe.Sample(0.2, clock=lambda: now[0])        # a fake clock
    read = []
    for batch in sample.take(range(20)):                  # 4 of 20, evenly spread, 2 s each
        read.append(batch)
        now[0] += 2.0
    assert read == [2, 7, 12, 17]
    assert sample.extra == 8.0 * (20 / 4 - 1)             # the 16 batches left out
    for _ in sample.take(range(3)):                       # a second pass (a translation's decoding): 1 of 3
        now[0] += 1.0
    assert sample.extra == 32.0 + 1.0 * 2
    assert list(probe.Sample().take([])) == []


def test_recipes_probe_unless_the_steps_are_fixed():
    assert probe.recipe_fill([]) == probe.FILL == 0.95
    assert probe.recipe_fill(["train.max_minutes=30"]) == 0.95
    assert probe.recipe_fill([], no_probe=True) is None
    assert probe.recipe_fill(["train.steps=100"]) is None and probe.recipe_fill([" train.steps = 7"]) is None
    assert probe.summary([{"kind": "train", "step": 1}])["used"] is False
    assert probe.summary([{"kind": "probe", "step": 0, "steps": 12}]) == {"used": True, "steps": 12}


def test_a_probed_run_fills_its_budget_and_equals_a_fixed_run_of_its_steps(tmp_path, device, monkeypatch):
    monkeypatch.setattr(probe, "REFIT_TOLERANCE", float("inf"))   # the probe's pace stands (the second look: below)
    keys = dict(schedule="cosine", warmup_steps=1, eval_every=40, checkpoint_every=40, max_minutes=0.02,
                device=device.type)
    probed = train(tiny_task(steps=100_000, **keys), tmp_path / "probed", quiet=True, fill_budget=0.95)
    records = read_metrics(tmp_path / "probed")
    record = next(r for r in records if r["kind"] == "probe")
    steps = record["steps"]
    assert 1 <= steps < 100_000 and record["config_steps"] == 100_000 and record["budget_s"] == pytest.approx(1.2)
    assert record["steps_per_s"] > 0 and record["probe_seconds"] > 0 and record["cpu"]
    assert (record["planned_s"] <= 0.95 * 1.2 or steps == 1) and record["timed_steps"] >= probe.MIN_TIMED_STEPS
    assert load_run_config(tmp_path / "probed")["train"]["steps"] == steps     # config.toml: the chosen steps
    assert not list((tmp_path / "probed").glob(".probe-*"))                     # its scratch checkpoint is gone
    trained = [r for r in records if r["kind"] == "train"]
    if probed.stopped == "finished":                       # the schedule ends at the chosen step
        assert probed.steps == steps and trained[-1]["lr"] == pytest.approx(0.0 if steps > 1 else 3e-3, abs=1e-12)
    # the probe's updates were undone (weights, data, random state): a fixed run of those steps
    # takes the same steps (dropout is on)
    train(tiny_task(steps=steps, **{**keys, "max_minutes": 0}), tmp_path / "fixed", quiet=True)
    fixed = [r for r in read_metrics(tmp_path / "fixed") if r["kind"] == "train"][:len(trained)]
    tol = 0.0 if device.type == "cpu" else 1e-5            # GPU kernels may add in a different order
    assert [(r["step"], r["lr"]) for r in trained] == [(r["step"], r["lr"]) for r in fixed]
    assert all(abs(a["loss"] - b["loss"]) <= tol for a, b in zip(trained, fixed))
    if probed.stopped == "finished":
        a, b = load_run(tmp_path / "probed", weights="last").model, load_run(tmp_path / "fixed", weights="last").model
        assert all(torch.allclose(x, y, rtol=0, atol=tol) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_the_faster_precision_is_chosen_and_its_timing_is_short():
    assert probe.faster({"bf16": 0.057, "fp32": 0.038}) == "fp32"      # the 5-minute model on an AMX Xeon
    assert probe.faster({"bf16": 0.24, "fp32": 0.29}) == "bf16"        # the long recipe's on the same machine
    assert probe.faster({"bf16": 0.1, "fp32": 0.1}) == probe.faster({"fp32": 0.1, "bf16": 0.1}) == "fp32"   # exact on a tie
    with pytest.raises(ValueError):
        probe.faster({"bf16": 0.0, "fp32": 0.1})
    assert probe.precision_steps(0.05, 300) == int(2.0 / 0.05)          # 5 minutes: 2 s in each
    assert probe.precision_steps(0.05, 60) == int(0.6 / 0.05)           # 1 minute: 1%
    assert probe.precision_steps(5.0, 3540) == probe.MIN_TIMED_STEPS


@pytest.mark.parametrize("forced", ["fp32", "bf16"])
def test_precision_auto_trains_in_what_the_probe_chose_and_records_it(tmp_path, monkeypatch, forced):
    """train.precision "auto" on a CPU with bf16: the probe times both, on the same batches, and the
    run is the run of the chosen precision (here forced, so both paths are checked on any CPU)."""
    from qkv.training import loop

    monkeypatch.setattr(loop, "cpu_has_fast_bf16", lambda: True)       # bf16 autocast runs (emulated) on any CPU
    monkeypatch.setattr(probe, "REFIT_TOLERANCE", float("inf"))
    timed = {}

    def choose(step_s):
        timed.update(step_s)
        return forced
    monkeypatch.setattr(probe, "faster", choose)
    keys = dict(schedule="cosine", warmup_steps=1, eval_every=0, checkpoint_every=0, max_minutes=0.02)
    probed = train(tiny_task(steps=100_000, **keys, precision="auto"), tmp_path / "auto", quiet=True, fill_budget=0.95)
    record = next(r for r in read_metrics(tmp_path / "auto") if r["kind"] == "probe")
    assert set(timed) == {"bf16", "fp32"} and all(s > 0 for s in timed.values())
    assert record["precision"] == forced and set(record["precision_steps_per_s"]) == {"bf16", "fp32"}
    assert load_run_config(tmp_path / "auto")["train"]["precision"] == forced    # a resumed run keeps it
    # the timing's updates were undone like the probe's: a fixed run in that precision takes the same steps
    train(tiny_task(steps=record["steps"], **{**keys, "max_minutes": 0}, precision=forced), tmp_path / "fixed", quiet=True)
    auto = [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "auto") if r["kind"] == "train"]
    fixed = [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "fixed") if r["kind"] == "train"][:len(auto)]
    assert auto == fixed and len(auto) == probed.steps >= 1
    # a precision given outright is not timed
    train(tiny_task(steps=100_000, **keys, precision="fp32"), tmp_path / "given", quiet=True, fill_budget=0.95)
    assert "precision" not in next(r for r in read_metrics(tmp_path / "given") if r["kind"] == "probe")


def test_the_probe_needs_a_budget(tmp_path):
    with pytest.raises(ConfigError, match="train.max_minutes, which is 0"):
        train(tiny_task(steps=5), tmp_path / "r", quiet=True, fill_budget=0.95)
    with pytest.raises(ConfigError, match=r"in \(0, 1\]"):
        train(tiny_task(steps=5, max_minutes=1), tmp_path / "s", quiet=True, fill_budget=1.5)


def test_the_second_look_takes_the_pace_of_the_steps_done_and_fits_the_rest():
    assert probe.refit_step(4725) == 472 and probe.refit_step(5) == 0 and probe.refit_step(30) == 3
    costs = Costs(step_s=0.7, valid_s=5.0, checkpoint_s=0.25)
    # 472 steps in 270 s with no validation yet and 4 checkpoints (100 ... 400): 269 s of steps
    assert probe.pace(270.0, 472, costs, 500, 100) == pytest.approx(269.0 / 472)
    assert probe.pace(1.0, 10, costs, 1, 1) == pytest.approx(0.1)           # overhead above the time: all of it
    faster = Costs(0.55, 5.0, 0.25)
    steps = steps_after(3540, 270.0, 472, faster, 500, 100)
    left = lambda n: 270.0 + planned_seconds(n, faster, 500, 100) - planned_seconds(472, faster, 500, 100)  # noqa: E731
    assert left(steps) <= 0.95 * 3540 < left(steps + 1)
    assert steps > steps_for_budget(3540, costs, 500, 100)          # faster than the probe said: more steps
    assert steps_after(100, 200.0, 50, faster, 500, 100) == 51      # over budget already: one more step
    with pytest.raises(ValueError):
        steps_after(100, 1.0, 5, Costs(0.0), 10, 10)


def test_a_schedule_retargeted_keeps_its_past_and_ends_at_the_new_last_step():
    def rates(total, retarget_at=None, new_total=None):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = make_scheduler(opt, "cosine", lr=1e-2, warmup=5, total=total, d_model=64, min_lr=1e-4)
        out = []
        for k in range(new_total or total):
            if k == retarget_at:
                retarget(sched, new_total)
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out
    long, moved = rates(60), rates(40, retarget_at=10, new_total=60)
    assert moved[:10] == rates(40)[:10]                       # the steps taken keep their rates
    assert moved[10:] == pytest.approx(long[10:], rel=1e-12)  # from there on: the schedule of 60 steps
    assert moved[-1] == pytest.approx(lr_at("cosine", 60, lr=1e-2, warmup=5, total=60, d_model=64, min_lr=1e-4))


def test_a_run_off_the_probes_pace_fits_its_steps_again(tmp_path, monkeypatch):
    monkeypatch.setattr(probe, "REFIT_TOLERANCE", -1.0)           # any difference: fit again
    keys = dict(schedule="cosine", warmup_steps=1, eval_every=40, checkpoint_every=40, max_minutes=0.05)
    result = train(tiny_task(steps=100_000, **keys), tmp_path / "r", quiet=True, fill_budget=0.95)
    records = read_metrics(tmp_path / "r")
    planned = next(r for r in records if r["kind"] == "probe")["steps"]
    refits = [r for r in records if r["kind"] == "refit"]
    if probe.refit_step(planned) == 0:
        pytest.skip(f"this machine's probe chose {planned} steps: too few to look again")
    assert len(refits) == 1 and refits[0]["step"] == probe.refit_step(planned)
    refit = refits[0]
    assert refit["steps_before"] == planned and refit["steps"] > refit["step"] and refit["steps_per_s"] > 0
    assert load_run_config(tmp_path / "r")["train"]["steps"] == refit["steps"]    # config.toml: the new count
    assert probe.summary(records)["refit"]["steps"] == refit["steps"]             # and the recipes' results.json
    trained = [r for r in records if r["kind"] == "train"]
    if result.stopped == "finished":                     # the schedule comes down at the new last step
        assert result.steps == refit["steps"] and trained[-1]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_passes_are_counted_in_whole_steps():
    assert probe.steps_for_passes(10, 1_003_776, 2048) == 4902     # Tiny Shakespeare's long recipe: 4901.25 -> 4902
    assert probe.steps_for_passes(1, 2048, 2048) == 1 and probe.steps_for_passes(0.001, 10, 2048) == 1
    with pytest.raises(ValueError):
        probe.steps_for_passes(1, 0, 2048)


def lm_config(text, **train_keys):
    return {
        "data": {"kind": "lm", "train_text": str(text), "tokenizer": "char", "block_size": 32},
        "model": {"d_model": 32, "n_heads": 2, "n_decoder_layers": 1, "d_ff": 64, "dropout": 0.0},
        "train": {"steps": 100_000, "batch_tokens": 256, "schedule": "cosine", "lr": 3e-3, "warmup_steps": 1,
                  "precision": "fp32", "threads": 1, "eval_every": 0, "checkpoint_every": 0, "eval_examples": 64,
                  **train_keys},
    }


def test_max_passes_caps_what_the_probe_plans_for_a_language_model(tmp_path, monkeypatch):
    monkeypatch.setattr(probe, "REFIT_TOLERANCE", -1.0)        # the second look fits again, and the cap holds
    text = tmp_path / "tiny.txt"
    text.write_text("the quick brown fox jumps over the lazy dog.\n" * 60)      # 2700 characters
    result = train(lm_config(text, max_minutes=1, max_passes=2), tmp_path / "capped", quiet=True, fill_budget=0.95)
    record = next(r for r in read_metrics(tmp_path / "capped") if r["kind"] == "probe")
    # the first 90% train: 2430 characters, 75 whole blocks of 32 = 2400 tokens; 2 passes of 256 a step
    assert record["passes_cap"] == 19 and record["capped"] is True and record["steps"] == 19
    assert result.steps == 19 and load_run_config(tmp_path / "capped")["train"]["steps"] == 19
    assert record["planned_s"] < 0.95 * 60                       # it ends before its budget, and says so
    # a cap the budget does not reach changes nothing
    train(lm_config(text, max_minutes=0.02, max_passes=1e6), tmp_path / "free", quiet=True, fill_budget=0.95)
    free = next(r for r in read_metrics(tmp_path / "free") if r["kind"] == "probe")
    assert free["capped"] is False and free["steps"] < free["passes_cap"]


def test_max_passes_is_for_language_models(tmp_path):
    with pytest.raises(ConfigError, match="train.max_passes caps .* data.kind is 'task'"):
        train(tiny_task(steps=5, max_minutes=1, max_passes=3), tmp_path / "r", quiet=True, fill_budget=0.95)
