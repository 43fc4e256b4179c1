"""The training loop: teacher forcing, label smoothing, AdamW with warmup, validation, checkpoints.

One optimizer step:

    for each of `accumulate` micro-batches (this rank's share of the global batch):
        logits = model(src, tgt_in)                      # (B, T, V), teacher forcing
        loss   = label-smoothed cross-entropy vs tgt_out # summed over real tokens, fp32
        (loss / tokens in the whole global step).backward()
    clip the gradient norm, AdamW step (or Muon + AdamW: qkv.training.optim), learning-rate schedule step

Dividing by the token count of the *whole* step (all micro-batches, all DDP ranks) makes the
gradient independent of how the step's tokens were split: accumulation and DDP give the same
update as one big batch.

    result = train(task_config("reverse"), "runs/reverse")     # the Python API (a dict, a TOML path or a RunConfig)
    qkv train --task reverse --out runs/reverse                 # the same from the shell

With `fill_budget` (the recipes: 0.95) a speed probe first times this run's own steps and sets
train.steps so that training ends near that share of train.max_minutes (qkv.training.probe).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import io
import math
import os
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qkv.config import ModelConfig
from qkv.errors import CheckpointError, ConfigError, TrainingError
from qkv.fast.dropout import use_fast_dropout
from qkv.fast.rmsnorm import use_fast_rmsnorm
from qkv.run.targets import describe_targets
from qkv.machine import cpu_has_fast_bf16
from qkv.run.fits import check_model_fits
from qkv.model import build_model
from qkv.training import distributed
from qkv.run import (
    NO_VERIFY_ENV,
    RunConfig,
    RunDir,
    load_run_config,
    load_tokenizers,
    load_weights,
    lock_run,
    save_run,
    save_weights,
    verifying,
    weights_step,
)
from qkv.training.inputs import Inputs, MicroBatches, prepare
from qkv.training.loss import label_smoothed_nll
from qkv.training.metrics import MetricsLog, bleu_applies, corpus_scores, headline_metric, is_better, plot_run
from qkv.training.progress import Progress
from qkv.training.optim import Optimizers
from qkv.training import probe


@dataclass
class TrainResult:
    """What a finished (or stopped) run reports."""

    run_dir: Path
    steps: int                          # optimizer steps done in total
    stopped: str                        # "finished", "target reached", "early stopping", "interrupted"
    metric: str                         # the early-stopping metric
    best: float | None                  # its best validation value
    valid: dict[str, Any] = field(default_factory=dict)   # the last validation record
    seconds: float = 0.0                # training time of every session (a resume adds its own to the checkpoint's)


def train(
    config: RunConfig | dict[str, Any] | str | os.PathLike[str] | None,
    out_dir: str | os.PathLike,
    overrides: list[str] | tuple[str, ...] = (),
    quiet: bool = False,
    resume: bool = False,
    fill_budget: float | None = None,
) -> TrainResult:
    """Train a model from `config` (a RunConfig, a dict of [model]/[train]/[data] sections or a
    TOML file) into `out_dir`.

    resume=True continues the run in `out_dir` from its train_state.pt (config = None reads its
    config.toml; `overrides` may still change e.g. train.steps).
    fill_budget (a share of train.max_minutes, e.g. 0.95): a speed probe before training replaces
    train.steps by the steps this machine does in that share of the budget (qkv.training.probe);
    config.toml records the chosen steps, metrics.jsonl the probe. Not on resume.
    """
    # one trainer per run directory: a second (e.g. two --resume at once) gets a one-line error
    locked = lock_run(out_dir, create=not resume) if distributed.from_env().is_main else contextlib.nullcontext()
    # torch.enable_grad: a caller's `torch.set_grad_enabled(False)` (a notebook that only looks at a
    # model, then trains or resumes its run) would otherwise stop the first backward()
    with locked, _global_settings_restored(), torch.enable_grad():
        trainer = Trainer(config, out_dir, overrides, quiet, resume, fill_budget)
        try:
            result = trainer.run()
            distributed.barrier()             # every rank is done with the process group before any leaves it
            return result
        finally:
            del trainer                       # the DDP wrapper (and its last gloo work) goes before its group
            gc.collect()
            distributed.cleanup()


@contextlib.contextmanager
def _global_settings_restored():
    """Training seeds torch's global generator (train.seed) and sets the CPU thread count
    (train.threads); the caller gets both back as they were when training ends."""
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_rng_state(rng)
        torch.set_num_threads(threads)


def _started_by_training(run_dir: Path) -> bool:
    """Whether a run directory's config.toml was written by `qkv train` (it has a [train] section):
    a run killed before its first checkpoint starts again in place; an imported model is kept."""
    try:
        return "train" in load_run_config(run_dir)
    except CheckpointError:
        return False


class Trainer:
    """Holds the model, optimizer, data stream and bookkeeping of one run."""

    def __init__(self, config, out_dir, overrides=(), quiet=False, resume=False, fill_budget=None):
        self.run_dir = Path(out_dir)
        self.dir = RunDir(self.run_dir)
        if resume:
            config = _resume_config(self.run_dir, config)
        elif config is None:
            raise ConfigError("give a config (e.g. task_config('reverse')) or resume=True")
        elif self.dir.state.exists():              # checked on every rank, before any collective
            raise ConfigError(
                f"{self.run_dir} already holds a run; continue it with `qkv train --resume {self.run_dir}` "
                f"or choose another --out"
            )
        elif self.dir.weights().exists() and not _started_by_training(self.run_dir):
            raise ConfigError(f"{self.run_dir} already holds a model ({self.dir.weights().name}) that training did not write "
                              f"(imported or copied); choose another --out")
        self.rc = RunConfig.parse(config, overrides)
        if not resume:
            self.rc.check_paths()
        self.tc, self.dc = self.rc.train, self.rc.data
        self.resume = resume
        self.fill_budget = None if resume else probe.checked_fill(fill_budget, self.tc.max_minutes)

        self.dist = distributed.from_env()
        self.device = distributed.device_for(self.tc.device, self.dist)
        self.dist = distributed.setup(self.device)
        self.threads = distributed.set_threads(self.tc.threads, self.dist) if self.device.type == "cpu" else 0
        self.is_main = self.dist.is_main
        self.out = Progress(quiet or not self.is_main)
        torch.manual_seed(self.tc.seed)

        self.inputs = self._prepare_inputs()
        if self.dist.enabled:                 # several machines: each read its own copy of the data
            distributed.check_same_everywhere(_fingerprint(self.inputs), "the training data or its tokenizers",
                                              self.device)
        if self.dc.kind == "task" or self.dc.prepared:     # config.toml says what was used, not the file defaults
            tok = self.inputs.tgt_tokenizer
            self.dc.tokenizer, self.dc.vocab_size = tok.kind, tok.vocab_size
        self.cfg = self._model_config()
        self.config = self.rc.to_dict()
        self.config["model"] = self.cfg.to_dict()       # config.toml records the model as built
        copies = self.dist.local_world if self.device.type == "cpu" else 1
        check_model_fits(self.cfg, self.device, training=True, copies=copies)
        self.model = build_model(self.cfg).to(self.device)
        use_fast_dropout(self.model)          # the fast layer: same masks in law, drawn ~3x cheaper on CPUs
        use_fast_rmsnorm(self.model)          # the same RMSNorm, its backward written out (QK-norm, Llama-style)
        self.dtype = _autocast_dtype(self.tc.precision, self.device)
        self.optimizer = Optimizers(self.model, self.tc, self.cfg.d_model,    # AdamW, or Muon + AdamW; with schedules
                                    shard=(self.dist.rank, self.dist.world))
        self.stream = MicroBatches(self.inputs, self.dist.rank, self.dist.world, self.rc.lm_rows)
        self.step = 0
        self.best: float | None = None
        self.bad_evals = 0
        self.metric = _metric_name(self.tc.metric, self.dc.kind)
        self.log = MetricsLog(self.run_dir)
        self._saved_step: int | None = None      # the step of the checkpoint on disk
        self._seconds_before = 0.0                # training time of the sessions before this one (train_state.pt)
        self._session_start: float | None = None  # when this session's training began (after the speed probe)
        if resume:
            self._load_state()
        self.net = self._wrap(self.model)

    # --- setup -------------------------------------------------------------------------------

    def _prepare_inputs(self) -> Inputs:
        tokenizers = None
        if self.resume:
            cfg = ModelConfig.from_dict(self.rc.model)
            tokenizers = load_tokenizers(self.run_dir, cfg)
        return prepare(self.dc, self.tc.batch_tokens, self.tc.seed, self.rc.max_len, tokenizers)

    def _model_config(self) -> ModelConfig:
        model = dict(self.rc.model)
        tgt = self.inputs.tgt_tokenizer
        if self.inputs.is_lm:
            model.update(arch="decoder-only", src_vocab_size=0, tgt_vocab_size=tgt.vocab_size)
            model.setdefault("n_encoder_layers", 0)
            model["max_len"] = max(int(model.get("max_len", 0)), self.dc.block_size)
        else:
            model.update(arch="encoder-decoder", src_vocab_size=self.inputs.src_tokenizer.vocab_size,
                         tgt_vocab_size=tgt.vocab_size)
        return ModelConfig.from_dict(model)

    def _wrap(self, model: nn.Module) -> nn.Module:
        net = model
        if self.tc.compile:
            net = torch.compile(net)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            net = DDP(net, device_ids=ids)
        return net

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> TrainResult:
        probed = self.fit_steps_to_budget(self.fill_budget) if self.fill_budget else None
        refit_at = probe.refit_step(self.tc.steps) if probed is not None else 0
        start = self._session_start = time.perf_counter()
        if self.is_main:
            self._write_start()
            if probed is not None:
                self.log.append(probed)
            if not self.resume:
                self.log.append(self.optimizer.record())     # the split: which tensors each optimizer updates
        self.out.start(self._describe(), self.tc.steps, self.step)
        stopped = "finished"
        last_valid: dict[str, Any] = {}
        with _interrupt_flag() as interrupted:
            while self.step < self.tc.steps:
                stats = self.train_step()
                self.out.advance(self.step, stats)
                if self.step % self.tc.log_every == 0 or self.step == self.tc.steps:
                    self._log_train(stats)
                if self.step == refit_at:
                    self.refit_steps(start)
                if self._due(self.tc.eval_every) or self.step == self.tc.steps:
                    last_valid, stop = self.validate_and_track()
                    if stop:
                        stopped = stop
                        break
                if self._due(self.tc.checkpoint_every):
                    self.save_checkpoint()
                if distributed.any_flag(interrupted.is_set(), self.device) if self.dist.enabled else interrupted.is_set():
                    stopped = "interrupted"
                    break
                if self._out_of_time(start):
                    stopped = "time limit"
                    if not self._due(self.tc.eval_every):
                        last_valid, _ = self.validate_and_track()
                    break
        self.save_checkpoint()
        self.out.stop()
        if self.is_main:
            if stopped != "interrupted":          # the run came to its end: `qkv.train(reuse=True)` loads it as it is
                self.log.append({"kind": "end", "step": self.step, "stopped": stopped})
            plot_run(self.run_dir)
        seconds = self._trained_seconds()
        self.out.finish(stopped, self.step, self.metric, self.best, self.run_dir, seconds)
        return TrainResult(self.run_dir, self.step, stopped, self.metric, self.best, last_valid, seconds)

    def _trained_seconds(self) -> float:
        """Training time so far, every session: what the checkpoint recorded plus this session's."""
        now = 0.0 if self._session_start is None else time.perf_counter() - self._session_start
        return self._seconds_before + now

    def _due(self, every: int) -> bool:
        return every > 0 and self.step % every == 0

    def _out_of_time(self, start: float) -> bool:
        """True once train.max_minutes of this session have passed (the same answer on every rank)."""
        late = self.tc.max_minutes > 0 and time.perf_counter() - start >= self.tc.max_minutes * 60
        return distributed.any_flag(late, self.device) if self.dist.enabled else late

    # --- the speed probe (qkv.training.probe) -----------------------------------------------

    def fit_steps_to_budget(self, fill: float) -> dict[str, Any]:
        """Time this run's steps (after untimed warm-up), a validation on a sample of its batches
        and a checkpoint; set train.steps so the run ends near `fill` of train.max_minutes and
        build the optimizer and schedule for it. The probe's updates are undone: the run is the
        one a fixed train.steps of that count gives. Returns the metrics.jsonl record."""
        from qkv.machine import cpu_name

        began = time.perf_counter()
        budget = self.tc.max_minutes * 60
        weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        data, rng = self.stream.state(), torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        try:
            warm = 0.0
            for _ in range(probe.WARMUP_STEPS):
                warm = self.train_step()["seconds"]
            warm = distributed.all_reduce_sum([warm], self.device)[0] / self.dist.world   # every rank: the same count
            precisions = self._time_precisions(warm, budget) if self._precision_open() else None
            timed = probe.timed_steps(warm, budget)
            step_s = self._seconds_per_step(timed)
            valid_s = checkpoint_s = 0.0
            if self.is_main:                      # rank 0 validates and saves while the others wait
                valid_s, checkpoint_s = self._validation_seconds(), self._checkpoint_seconds()
            step_s, valid_s, checkpoint_s = distributed.all_reduce_sum([step_s, valid_s, checkpoint_s], self.device)
            step_s /= self.dist.world
        finally:
            self.model.load_state_dict(weights)
            self.stream.load_state(data)
            torch.set_rng_state(rng)
            if cuda_rng:
                torch.cuda.set_rng_state_all(cuda_rng)
            self.step = 0
        costs = probe.Costs(step_s, valid_s, checkpoint_s)
        self._plan = (budget, costs, fill)                     # for refit_steps
        configured, steps = self.tc.steps, probe.steps_for_budget(budget, costs, self.tc.eval_every,
                                                                  self.tc.checkpoint_every, fill)
        cap = self._passes_cap()
        capped = cap is not None and steps > cap
        if capped:
            steps = cap
        self.tc.steps = self.config["train"]["steps"] = steps
        self.optimizer = Optimizers(self.model, self.tc, self.cfg.d_model,     # the schedule ends at `steps`
                                    shard=(self.dist.rank, self.dist.world))
        seconds = time.perf_counter() - began
        planned = probe.planned_seconds(steps, costs, self.tc.eval_every, self.tc.checkpoint_every)
        aim = (f"for {self.tc.max_passes:g} passes over the training text (train.max_passes), in {planned / 60:.1f} of "
               f"{budget / 60:g} min" if capped else f"to end near {fill:.0%} of {budget / 60:g} min")
        chose = "" if precisions is None else (
            f"bf16 {1 / precisions['bf16']:,.1f} and fp32 {1 / precisions['fp32']:,.1f} steps/s -> {self.tc.precision}; ")
        self.out.print(f"speed probe: {chose}{probe.WARMUP_STEPS} warm-up + {timed} timed steps, {1 / step_s:,.1f} steps/s; "
                       f"a validation ~{valid_s:.1f} s, a checkpoint ~{checkpoint_s:.2f} s -> {steps:,} steps "
                       f"(config: {configured:,}) {aim}; took {seconds:.1f} s")
        return {"kind": "probe", "step": 0, "probe_seconds": round(seconds, 2), "warmup_steps": probe.WARMUP_STEPS,
                "timed_steps": timed, "steps_per_s": round(1 / step_s, 3), "step_s": step_s,
                "validation_s": round(valid_s, 3), "validations": probe.validations(steps, self.tc.eval_every),
                "checkpoint_s": round(checkpoint_s, 3), "checkpoints": probe.checkpoints(steps, self.tc.checkpoint_every),
                "budget_s": budget, "fill": fill, "planned_s": round(planned, 2), "steps": steps,
                "config_steps": configured, "processes": self.dist.world, "cpu": cpu_name(),
                **({"precision": self.tc.precision, "precision_steps_per_s": {k: round(1 / v, 3) for k, v in precisions.items()}}
                   if precisions is not None else {}),
                **({"passes_cap": cap, "capped": capped} if cap is not None else {})}

    def _seconds_per_step(self, steps: int) -> float:
        """This rank's mean wall time of the next `steps` training steps (the speed probe's timing)."""
        t0 = time.perf_counter()
        for _ in range(steps):
            self.train_step()
        return (time.perf_counter() - t0) / steps

    def _precision_open(self) -> bool:
        """train.precision "auto" on a CPU that has bf16: the probe times bf16 and fp32 and keeps the faster."""
        return self.tc.precision == "auto" and self.device.type == "cpu" and self.dtype is not None

    def _time_precisions(self, warm_step_s: float, budget: float) -> dict[str, float]:
        """Seconds a step in bf16 autocast and in fp32, on the same batches (the data position is set
        back between them), every rank's mean; the run then trains in the faster (self.dtype), and
        train.precision names it, so config.toml records it and a resumed run keeps it."""
        steps, start = probe.precision_steps(warm_step_s, budget), self.stream.state()
        step_s: dict[str, float] = {}
        for name, dtype in (("bf16", torch.bfloat16), ("fp32", None)):
            self.stream.load_state(start)
            self.dtype = dtype
            for _ in range(probe.PRECISION_WARMUP):
                self.train_step()
            step_s[name] = self._seconds_per_step(steps)
        summed = distributed.all_reduce_sum(list(step_s.values()), self.device)
        step_s = {name: s / self.dist.world for name, s in zip(step_s, summed)}
        chosen = probe.faster(step_s)
        self.dtype = torch.bfloat16 if chosen == "bf16" else None
        self.tc.precision = self.config["train"]["precision"] = chosen
        return step_s

    def _passes_cap(self) -> int | None:
        """train.max_passes in steps (a language model: the steps that read its training text that
        many times, every rank's micro-batches counted), or None without a cap."""
        if not self.tc.max_passes:
            return None
        per_pass = len(self.inputs.train) * self.dc.block_size          # the text's tokens, in whole blocks
        per_step = self.rc.lm_rows * self.dc.block_size * self.tc.accumulate * self.dist.world
        return probe.steps_for_passes(self.tc.max_passes, per_pass, per_step)

    def refit_steps(self, start: float) -> None:
        """The probe's second look (qkv.training.probe): the pace of the steps done since `start`;
        more than REFIT_TOLERANCE off the probe's, train.steps is fitted again for the time left, the
        schedules end there, config.toml records it and metrics.jsonl gets a record of kind "refit"."""
        budget, costs, fill = self._plan
        elapsed = distributed.all_reduce_sum([time.perf_counter() - start], self.device)[0] / self.dist.world
        step_s = probe.pace(elapsed, self.step, costs, self.tc.eval_every, self.tc.checkpoint_every)
        if abs(step_s / costs.step_s - 1) <= probe.REFIT_TOLERANCE:
            return
        before = self.tc.steps
        steps = probe.steps_after(budget, elapsed, self.step, probe.Costs(step_s, costs.valid_s, costs.checkpoint_s),
                                  self.tc.eval_every, self.tc.checkpoint_every, fill)
        cap = self._passes_cap()
        if cap is not None:
            steps = max(self.step + 1, min(steps, cap))
        if steps == before:                                   # the cap holds it where it was
            return
        self.tc.steps = self.config["train"]["steps"] = steps
        self.optimizer.retarget(steps)
        self.out.retotal(steps)
        self.out.print(f"step {self.step}: {1 / step_s:,.2f} steps/s against the probe's {1 / costs.step_s:,.2f} "
                       f"-> {steps:,} steps (was {before:,}) to end near {fill:.0%} of {budget / 60:g} min")
        if self.is_main:
            self.dir.write_config(self.config)
            self.log.append({"kind": "refit", "step": self.step, "elapsed_s": round(elapsed, 2),
                             "steps_per_s": round(1 / step_s, 3), "probe_steps_per_s": round(1 / costs.step_s, 3),
                             "steps_before": before, "steps": steps})

    def _validation_seconds(self) -> float:
        """One validation's time, from a sample of its batches (probe.Sample)."""
        sample = probe.Sample()
        start = time.perf_counter()
        self.validate(sample)
        return time.perf_counter() - start + sample.extra

    def _checkpoint_seconds(self) -> float:
        """One checkpoint's time, written to a scratch folder in the run directory and deleted."""
        real = self.dir
        with tempfile.TemporaryDirectory(prefix=".probe-", dir=self.run_dir) as scratch:
            self.dir = RunDir(scratch)
            try:
                start = time.perf_counter()
                self.save_checkpoint(gather=False)
                return time.perf_counter() - start
            finally:
                self.dir, self._saved_step = real, None

    def train_step(self) -> dict[str, float]:
        """One optimizer update over `accumulate` micro-batches; returns loss, tokens, lr, time."""
        t0 = time.perf_counter()
        self.net.train()
        micro = [self.stream.next() for _ in range(self.tc.accumulate)]
        local_tokens = sum(_target_tokens(b, self.cfg.pad_id) for b in micro)
        all_tokens = distributed.all_reduce_sum([float(local_tokens)], self.device)[0]
        scale = self.dist.world / all_tokens        # DDP averages over ranks: undo, divide by all tokens
        loss_sum = nll_sum = 0.0
        seen = 0
        for i, batch in enumerate(micro):
            sync = i == len(micro) - 1
            with self._no_sync(not sync), self._autocast():
                logits, target = self._forward(self.net, batch)
            loss, nll, _ = label_smoothed_nll(logits, target, self.tc.label_smoothing, self.cfg.pad_id)
            with self._no_sync(not sync):
                (loss * scale).backward()
            loss_sum += float(loss.detach())
            nll_sum += float(nll)
            seen += _all_tokens(batch, self.cfg.pad_id)
        # the gradient norm is the same on every DDP rank (gradients are all-reduced), so all stop together
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tc.clip_norm or math.inf)
        if not (math.isfinite(loss_sum) and math.isfinite(float(norm))):
            self._diverged(loss_sum, float(norm))
        lr = self.optimizer.lr
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.step += 1
        return {"loss_sum": loss_sum, "nll_sum": nll_sum, "tokens": local_tokens, "all_tokens": seen,
                "lr": lr, "seconds": time.perf_counter() - t0}

    def _diverged(self, loss: float, norm: float) -> None:
        """Stop before a non-finite update reaches the weights; the last checkpoint stays as it was."""
        what = f"the loss is {loss}" if not math.isfinite(loss) else f"the gradient norm is {norm}"
        kept = (f"the last good checkpoint ({self.dir.state.name}, step {self._saved_step}) is kept"
                if self._saved_step is not None else "no checkpoint was written")
        raise TrainingError(
            f"training diverged at step {self.step + 1}: {what}; stopped before the update, {kept} "
            f"in {self.run_dir}; lower train.lr, raise train.warmup_steps or use train.precision=fp32"
        )

    def _forward(self, model: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, T, V) and their targets (B, T); the loss skips padded targets."""
        if self.inputs.is_lm:
            x, y = batch
            return model(x.to(self.device)), y.to(self.device)
        b = batch.to(self.device)
        return model(b.src, b.tgt_in), b.tgt_out

    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _no_sync(self, skip: bool):
        return self.net.no_sync() if skip and self.dist.enabled else contextlib.nullcontext()

    def _log_train(self, stats: dict[str, float]) -> None:
        loss, nll, tokens = distributed.all_reduce_sum(
            [stats["loss_sum"], stats["nll_sum"], float(stats["tokens"])], self.device)
        if self.is_main:
            self.log.append({
                "kind": "train", "step": self.step, "loss": loss / tokens, "nll": nll / tokens,
                "lr": stats["lr"], "tokens_per_s": stats["all_tokens"] * self.dist.world / stats["seconds"],
                "epoch": self.stream.epoch,
            })

    # --- validation --------------------------------------------------------------------------

    def validate_and_track(self) -> tuple[dict[str, Any], str | None]:
        """Validate on rank 0, keep the best weights, decide (for all ranks) whether to stop."""
        record: dict[str, Any] = {}
        stop = None
        if self.is_main:
            record = {"kind": "valid", "step": self.step, **self.validate()}
            value = record.get(self.metric)
            improved = value is not None and is_better(self.metric, value, self.best)
            if improved:
                self.best, self.bad_evals = value, 0
                save_weights(self.dir.weights(), self.model, step=self.step)
            else:
                self.bad_evals += 1
            record["best"] = improved
            self.log.append(record)
            self.out.validation(record, self.tc.steps, show_bleu=bleu_applies(self.dc.kind))
            stop = self._stop_reason(value)
        flag = distributed.broadcast_flag(stop is not None, self.device)
        if self.dist.enabled and flag and stop is None:
            stop = "early stopping"
        return record, stop if flag else None

    def _stop_reason(self, value: float | None) -> str | None:
        if value is None:
            return None
        target = self.tc.target_metric
        if target and (value >= target if is_better(self.metric, 1.0, 0.0) else value <= target):
            return "target reached"
        if self.tc.patience and self.bad_evals >= self.tc.patience:
            return "early stopping"
        return None

    @torch.no_grad()
    def validate(self, sample: probe.Sample | None = None) -> dict[str, float]:
        """Teacher-forced loss/perplexity on the validation set (+ bpc, exact match, BLEU, chrF).
        With `sample` (the speed probe), only a few evenly spread batches, timed."""
        model = self.model
        model.eval()
        try:
            nll, tokens = self._valid_nll(model, sample)
            out = {"loss": nll / tokens, "ppl": math.exp(min(nll / tokens, 50.0))}
            if self.inputs.is_lm:
                if getattr(self.inputs.tgt_tokenizer, "kind", "") == "char":
                    out["bpc"] = out["loss"] / math.log(2)
            else:
                out.update(self._decode_scores(model, sample))
        finally:
            model.train()
        return out

    def _valid_nll(self, model: nn.Module, sample: probe.Sample | None = None) -> tuple[float, int]:
        nll_sum, tokens = 0.0, 0
        if self.inputs.is_lm:
            rows = self.rc.lm_rows
            batches: Any = itertools.islice(self.inputs.valid.eval_batches(rows), max(1, self.tc.eval_examples // rows))
        else:
            batches = self.inputs.valid.eval_batches()
        for batch in sample.take(batches) if sample is not None else batches:
            with self._autocast():
                logits, target = self._forward(model, batch)
            _, nll, n = label_smoothed_nll(logits, target, 0.0, self.cfg.pad_id)
            nll_sum, tokens = nll_sum + float(nll), tokens + n
        return nll_sum, max(tokens, 1)

    def _decode_scores(self, model: nn.Module, sample: probe.Sample | None = None) -> dict[str, float]:
        """Greedy-decode up to eval_examples validation sources; exact match, BLEU and chrF."""
        from qkv.data.batching import Seq2SeqBatches, restore_order
        from qkv.search import DecodeConfig, translate_ids

        pairs = self.inputs.valid_pairs[: self.tc.eval_examples]
        src_tok, tgt_tok = self.inputs.src_tokenizer, self.inputs.tgt_tokenizer
        data = Seq2SeqBatches(src_tok.encode_batch([s for s, _ in pairs]), None, self.tc.batch_tokens)
        dcfg = DecodeConfig(max_len_a=self.tc.max_decode_ratio, max_len_b=10)
        order, hyps = [], []
        batches = data.eval_batches()
        for batch in sample.take(batches) if sample is not None else batches:
            with self._autocast():
                out = translate_ids(model, batch.src.to(self.device), dcfg)
            order.extend(batch.indices.tolist())
            hyps.extend(tgt_tok.decode(h[0].tokens) for h in out)
        if sample is not None:                  # the probe's few batches: their sentences only
            pairs = [pairs[i] for i in order]
        else:
            hyps = restore_order(order, hyps)
        refs = [tgt_tok.decode(tgt_tok.encode(t)) for _, t in pairs]   # what the tokenizer can express
        return corpus_scores(hyps, refs)

    # --- files -------------------------------------------------------------------------------

    def _write_start(self) -> None:
        if self.resume:
            self.log.truncate_after(self.step)
            self.dir.write_config(self.config)
            return
        self.dir.metrics.unlink(missing_ok=True)
        # model.safetensors comes with the first validation: never untrained weights that look usable
        save_run(self.run_dir, self.model, self.config, self.inputs.src_tokenizer, self.inputs.tgt_tokenizer,
                 weights=None)

    def save_checkpoint(self, gather: bool = True) -> None:
        """One consistent checkpoint (rank 0): last.safetensors (+ step-<N>.safetensors), each
        stamped with the step, then train_state.pt, written last, with the same weights and
        everything else resume needs. A kill before train_state.pt is replaced leaves the previous
        checkpoint whole: resume reads train_state.pt alone and then rewrites last.safetensors.
        Every rank calls it: first the ranks gather Muon's momentum, split between them
        (`gather=False`: rank 0 alone, the speed probe's timing, whose state is thrown away)."""
        if gather:
            self.optimizer.gather()
        if not self.is_main:
            return
        save_weights(self.dir.weights("last"), self.model, step=self.step)
        if self.tc.keep_checkpoints:
            self._keep_step_weights()
        state = {
            "format": 2,
            "step": self.step,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            **self.optimizer.state_dict(),      # "optimizer", "scheduler" (AdamW's) and, with Muon, "muon"
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "data": self.stream.state(),
            "best": self.best,
            "bad_evals": self.bad_evals,
            "seconds": self._trained_seconds(),     # a resumed run goes on counting from here
        }
        if self.inputs.fingerprint is not None:
            state["corpus"] = self.inputs.fingerprint      # resume checks that the prepared corpus is the same
        buf = io.BytesIO()
        torch.save(state, buf)
        self.dir.write_state(buf.getvalue())
        self._saved_step = self.step

    def _keep_step_weights(self) -> None:
        """step-<N>.safetensors for this step; only the newest train.keep_checkpoints stay."""
        save_weights(self.dir.step_weights(self.step), self.model, step=self.step)
        for old in self.dir.step_checkpoints()[: -self.tc.keep_checkpoints]:
            old.unlink(missing_ok=True)

    def _load_state(self) -> None:
        path = self.dir.state
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: nothing to resume; start the run without --resume")
        data = self.dir.read_state()              # checked against its recorded hash
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            self.optimizer.load_state_dict(state)
            if "model" in state:
                self.model.load_state_dict(state["model"], strict=True)
        except CheckpointError:
            raise
        except Exception as exc:  # pickle/zip errors of a torn or foreign file, or a mismatched optimizer
            raise CheckpointError(f"{path} is corrupted or from another model ({_first_line(exc)}); "
                                  f"start a new run or restore the file") from None
        self._check_corpus(state.get("corpus"))
        step = state["step"]
        last = self.dir.weights("last")
        if "model" not in state:                # written before train_state.pt held the weights
            load_weights(last, self.model)
            stamped = weights_step(last)
            if stamped is not None and stamped != step:
                raise CheckpointError(
                    f"{last} is from step {stamped} but {path} from step {step} (a kill between the two "
                    f"writes); this run cannot continue exactly: start a new run"
                )
        if self.is_main:
            self._drop_later_files(step)
        self.step, self.best, self.bad_evals = step, state["best"], state["bad_evals"]
        self._seconds_before = float(state.get("seconds", 0.0))    # not in checkpoints before 2026-12-04
        self._saved_step = step
        self.stream.load_state(state["data"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    def _check_corpus(self, recorded: str | None) -> None:
        """Resume only on the prepared corpus the run was trained on (its fingerprint: file sizes,
        counts, content and tokenizer hashes), unless QKV_NO_VERIFY=1 says it changed on purpose."""
        current = self.inputs.fingerprint
        if recorded is None or current is None or recorded == current or not verifying():
            return
        raise CheckpointError(
            f"{self.dc.prepared} is not the prepared corpus this run was trained on (its fingerprint changed: "
            f"prepared again, from other text?); resume with that corpus, start a new run, or set "
            f"{NO_VERIFY_ENV}=1 to continue on this one on purpose"
        )

    def _drop_later_files(self, step: int) -> None:
        """Undo what a killed run wrote after its last complete checkpoint: last.safetensors goes
        back to the checkpoint's weights, step files past it go (resume writes them again)."""
        last = self.dir.weights("last")
        if weights_step(last) != step:
            save_weights(last, self.model, step=step)
        for path in self.dir.step_checkpoints():
            if weights_step(path) is not None and weights_step(path) > step:
                path.unlink(missing_ok=True)

    def _describe(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        what = self.dc.task if self.dc.kind == "task" else self.dc.kind
        where = f"{self.device.type}" + (f" x{self.dist.world} (DDP)" if self.dist.enabled else "")
        threads = f", {self.threads} threads" if self.threads else ""
        prec = self.dtype and str(self.dtype).replace("torch.", "") or "fp32"
        return (f"{what}: {n / 1e6:.2f}M parameters, {where}{threads}, {prec}, -> {self.run_dir}\n"
                f"{describe_targets(self.cfg)}" + (f"\n{self.optimizer.describe()}" if self.tc.optimizer != "adamw" else ""))


def _fingerprint(inputs: Inputs) -> str:
    """What every DDP rank must agree on: the kind and size of the data and the tokenizers' content."""
    import json

    tokenizers = [t.to_dict() if t is not None else None for t in (inputs.src_tokenizer, inputs.tgt_tokenizer)]
    return json.dumps([inputs.kind, len(inputs.train), len(inputs.valid), inputs.dropped, tokenizers],
                      sort_keys=True, default=str)


def _resume_config(run_dir: Path, config: Any) -> Any:
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory not found: {run_dir}; nothing to resume")
    return config if config is not None else load_run_config(run_dir)


def _metric_name(metric: str, kind: str) -> str:
    return headline_metric(kind) if metric == "auto" else metric


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast where the hardware runs it fast; None means plain fp32."""
    if precision == "fp32":
        return None
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    else:
        supported = cpu_has_fast_bf16()
    if precision == "bf16" and not supported:
        raise ConfigError(f"train.precision=bf16 is not supported on this {device.type}; use fp32")
    return torch.bfloat16 if supported else None


def _target_tokens(batch, pad_id: int) -> int:
    if isinstance(batch, tuple):
        return int((batch[1] != pad_id).sum())
    return batch.n_tgt_tokens


def _all_tokens(batch, pad_id: int) -> int:
    """Source + target tokens (what tokens/s counts)."""
    if isinstance(batch, tuple):
        return batch[0].numel()
    return batch.n_src_tokens + batch.n_tgt_tokens


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]


class _Flag:
    def __init__(self) -> None:
        self.value = False

    def set(self) -> None:
        self.value = True

    def is_set(self) -> bool:
        return self.value


@contextlib.contextmanager
def _interrupt_flag():
    """Ctrl-C / SIGTERM set a flag: the loop finishes its step, saves a checkpoint and stops.
    A second Ctrl-C interrupts at once."""
    flag = _Flag()

    def handler(signum, frame):
        if flag.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.set()

    try:
        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        yield flag
        return
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)
