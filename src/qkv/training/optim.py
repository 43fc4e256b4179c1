"""The optimizers of a run: AdamW on every tensor, or Muon on the hidden matrices and AdamW on the rest.

`train.optimizer = "adamw"` (the default) is the paper's Adam with decoupled weight decay
(Loshchilov & Hutter, 2019) on every parameter. `train.optimizer = "muon"` hands the weight
matrices of the encoder and decoder layers (the attention projections W_Q, W_K, W_V, W_O and the
feed-forward W_1, W_2) to `torch.optim.Muon` (as `qkv.fast.muon.FastMuon`, the same step with the
Newton-Schulz iterations of same-shaped matrices batched; Jordan et al., 2024, "Muon: An optimizer for hidden
layers in neural networks"): momentum, then the update matrix orthogonalised by a few
Newton-Schulz iterations. Everything else (embeddings, the output layer, norms, biases, learned
positional tables) stays on AdamW, as Muon's authors prescribe.

Both follow `train.schedule`: AdamW's curve peaks at `train.lr`, Muon's is the same curve scaled
so that it peaks at `train.muon_lr`.

In a DDP run (`shard=(rank, world)`) every rank has the same averaged gradients, so each rank
orthogonalises only its share of the matrices (balanced by size) and sends the updated matrices to
the others: the Newton-Schulz work is split instead of repeated on every rank, and the weights are
the ones an unsplit step gives. Each rank keeps the momentum of its own share; `gather()` (every rank)
brings all of it to every rank before rank 0 writes a checkpoint.

    optim = Optimizers(model, tc, d_model)
    loss.backward(); optim.step(); optim.zero_grad()      # both optimizers, then both schedules
    optim.set_lr(1e-3); optim.step()                      # a rate set by hand (qkv history --modern: by time)
    Optimizers(ddp_model, tc, d_model, shard=(rank, world))   # DDP: Muon's matrices split between the ranks
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from qkv.errors import CheckpointError
from qkv.fast.muon import FastMuon
from qkv.run import TrainConfig
from qkv.training.schedule import make_scheduler, peak_lr, retarget


def hidden_matrices(model: nn.Module) -> list[str]:
    """The names of the weight matrices of the linear maps inside the encoder and decoder layers."""
    names = []
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear) and ".layers." in f".{module_name}":
            names.append(f"{module_name}.weight")
    return names


class Optimizers:
    """The run's optimizer(s), stepped together, each with its learning-rate schedule."""

    def __init__(self, model: nn.Module, tc: TrainConfig, d_model: int, shard: tuple[int, int] = (0, 1)):
        self.kind = tc.optimizer
        self.rank, self.world = shard
        params = dict(model.named_parameters())
        muon_names = set(hidden_matrices(model)) if tc.optimizer == "muon" else set()
        self.muon_names = [name for name in params if name in muon_names]
        self.adamw_names = [name for name in params if name not in muon_names]
        self.muon_params = [params[name] for name in self.muon_names]
        self.adamw_params = [params[name] for name in self.adamw_names]
        schedule: dict[str, Any] = dict(lr=tc.lr, warmup=tc.warmup_steps, total=tc.steps, d_model=d_model,
                                        min_lr=tc.min_lr, decay_fraction=tc.decay_fraction)
        self.adamw = torch.optim.AdamW(
            self.adamw_params, lr=1.0, betas=(tc.beta1, tc.beta2), eps=tc.eps,
            weight_decay=tc.weight_decay, fused=True,    # one kernel per step instead of ~10 per tensor
        )
        self.scheduler = make_scheduler(self.adamw, tc.schedule, **schedule)
        self.muon: torch.optim.Muon | None = None        # FastMuon: torch's Muon, same-shaped matrices batched
        self.muon_scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        self.muon_scale = tc.muon_lr / peak_lr(tc.schedule, **schedule)    # the same curve, peaking at muon_lr
        if self.muon_params:
            self.muon = FastMuon(self.muon_params, lr=1.0, momentum=tc.muon_momentum,
                                 weight_decay=tc.muon_weight_decay)
            self.muon_scheduler = make_scheduler(self.muon, tc.schedule, scale=self.muon_scale, **schedule)
        owner = owners([p.numel() for p in self.muon_params], self.world)     # the rank that updates each matrix
        self.shares = [[p for p, r in zip(self.muon_params, owner) if r == rank] for rank in range(self.world)]

    @property
    def lr(self) -> float:
        """AdamW's current rate (Muon's is train.muon_lr / train.lr times it)."""
        return float(self.adamw.param_groups[0]["lr"])

    def set_lr(self, lr: float) -> None:
        """Set the rate of the next `step()` by hand: AdamW's to `lr`, Muon's to the same share of
        its peak (train.muon_lr / peak of train.schedule, times `lr`). For a caller that schedules by
        something else than steps (`qkv history --modern`: by time); call it before every step(),
        whose schedule step it overrides."""
        for group in self.adamw.param_groups:
            group["lr"] = lr
        if self.muon is not None:
            for group in self.muon.param_groups:
                group["lr"] = lr * self.muon_scale

    def step(self) -> None:
        self.adamw.step()
        if self.muon is not None:
            if self.world > 1:
                for rank, share in enumerate(self.shares):
                    if rank != self.rank:
                        for p in share:
                            p.grad = None     # torch's Muon skips a matrix without a gradient: its owner updates it
            self.muon.step()
            if self.world > 1:
                self._share(lambda p: p.data)
        self.scheduler.step()
        if self.muon_scheduler is not None:
            self.muon_scheduler.step()

    def retarget(self, steps: int) -> None:
        """Every schedule ends at `steps` from now on (the speed probe's second fit)."""
        retarget(self.scheduler, steps)
        if self.muon_scheduler is not None:
            retarget(self.muon_scheduler, steps)

    def zero_grad(self) -> None:
        self.adamw.zero_grad(set_to_none=True)
        if self.muon is not None:
            self.muon.zero_grad(set_to_none=True)

    def _share(self, tensor_of: Any) -> None:
        """Every rank's matrices (or their momentum: `tensor_of(p)`) sent from their owner to all ranks,
        one flat broadcast per rank."""
        for rank, share in enumerate(self.shares):
            if not share:
                continue
            tensors = [tensor_of(p) for p in share]
            flat = torch.cat([t.reshape(-1) for t in tensors])
            dist.broadcast(flat, src=rank)
            if rank != self.rank:
                for t, part in zip(tensors, flat.split([t.numel() for t in tensors])):
                    t.copy_(part.view_as(t))

    def gather(self) -> None:
        """Bring every matrix's Muon momentum to every rank (a collective: all ranks call it) so that
        rank 0's `state_dict()` is the whole state. Nothing to do in one process or without Muon."""
        if self.muon is None or self.world == 1:
            return
        for p in self.muon_params:
            state = self.muon.state[p]
            if "momentum_buffer" not in state:          # before this rank's first step of the matrix
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        self._share(lambda p: self.muon.state[p]["momentum_buffer"])   # type: ignore[union-attr]

    def state_dict(self) -> dict[str, Any]:
        """train_state.pt's keys: "optimizer" and "scheduler" (AdamW's), and "muon" with Muon."""
        state: dict[str, Any] = {"optimizer": self.adamw.state_dict(), "scheduler": self.scheduler.state_dict()}
        if self.muon is not None and self.muon_scheduler is not None:
            state["muon"] = {"optimizer": self.muon.state_dict(), "scheduler": self.muon_scheduler.state_dict()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved, now = ("muon" if "muon" in state else "adamw"), ("muon" if self.muon is not None else "adamw")
        if saved != now:
            raise CheckpointError(f"this run was trained with train.optimizer={saved!r}, not {now!r}; "
                                  f"resume it with the optimizer it was trained with, or start a new run")
        self.adamw.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.muon is not None and self.muon_scheduler is not None:
            self.muon.load_state_dict(state["muon"]["optimizer"])
            self.muon_scheduler.load_state_dict(state["muon"]["scheduler"])

    def record(self) -> dict[str, Any]:
        """The split, for metrics.jsonl (kind "optimizer"): which tensors each optimizer updates."""
        def group(names: list[str], params: list[nn.Parameter]) -> dict[str, Any]:
            return {"tensors": names, "parameters": sum(p.numel() for p in params)}

        split = {"adamw": group(self.adamw_names, self.adamw_params)}
        if self.muon is not None:
            split["muon"] = {**group(self.muon_names, self.muon_params), "ranks": self.world}
        return {"kind": "optimizer", "step": 0, "optimizer": self.kind, **split}

    def describe(self) -> str:
        """One line: which optimizer updates how many tensors and parameters."""
        def size(params: list[nn.Parameter]) -> str:
            return f"{sum(p.numel() for p in params) / 1e6:.2f}M"

        adamw = f"AdamW on {len(self.adamw_params)} tensors ({size(self.adamw_params)})"
        if self.muon is None:
            return f"optimizer: {adamw}"
        split = f", split between {self.world} ranks" if self.world > 1 else ""
        return f"optimizer: Muon on {len(self.muon_params)} matrices ({size(self.muon_params)}{split}), {adamw}"


def owners(sizes: list[int], world: int) -> list[int]:
    """The rank that updates each matrix: largest first, each to the rank with the least so far
    (ties to the lower rank), so the ranks' Newton-Schulz work is about even."""
    load = [0] * world
    owner = [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        owner[i] = min(range(world), key=lambda r: load[r])
        load[owner[i]] += sizes[i]
    return owner
