"""A run's configuration: one typed `RunConfig`, parsed and range-checked once, at the edge.

A config is the TOML file a run records as config.toml, in three sections:

    [model]  ModelConfig (vocabulary sizes are filled in from the tokenizers)
    [train]  TrainConfig: optimizer, schedule, batch size, steps, validation, checkpoints
    [data]   DataConfig: a built-in task, parallel files, a multi30k-style directory or LM text

    cfg = RunConfig.parse("recipes/multi30k_de_en.toml", ["train.steps=100"])   # a file, a dict or a RunConfig
    cfg.train.lr, cfg.data.kind, cfg.model["d_model"], cfg.to_dict()

Paths in a config file (data.dir, data.train_src, data.prepared, ...) are read relative to the
file's own folder, as in any config file; `qkv.data.tasks.task_config("reverse")` is the tuned
default of a built-in task. Every value can be overridden with `--set section.key=value`.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from qkv.config import ModelConfig, apply_overrides, check_choices, check_ranges, from_dict, load_toml, unknown_key_message
from qkv.errors import ConfigError


SCHEDULES = ("noam", "cosine", "linear", "wsd", "constant")   # qkv.training.schedule makes them
OPTIMIZERS = ("adamw", "muon")                          # qkv.training.optim makes them
PRECISIONS = ("fp32", "bf16", "auto")
DATA_KINDS = ("task", "translation", "lm")
TOKENIZERS = ("char", "word", "bpe")
SECTIONS = ("model", "train", "data")


@dataclass
class TrainConfig:
    """How to train. `lr` is the peak rate for "cosine", "linear", "wsd" and "constant", and the paper's factor for "noam"."""

    steps: int = 2000                 # optimizer updates
    batch_tokens: int = 4096          # per micro-batch and process: sentences x longest padded side (LM: rows x block)
    accumulate: int = 1               # micro-batches per optimizer update
    optimizer: str = "adamw"          # adamw | muon (Muon on the layers' weight matrices, AdamW on the rest)
    schedule: str = "noam"            # noam | cosine | linear | wsd | constant
    lr: float = 1.0
    warmup_steps: int = 400
    min_lr: float = 0.0               # the floor that cosine, linear and wsd end at
    decay_fraction: float = 0.2       # wsd: the last fraction of the steps that decays to min_lr
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-9
    weight_decay: float = 0.0
    muon_lr: float = 0.02             # Muon's peak rate (its schedule has the same shape as AdamW's)
    muon_momentum: float = 0.95
    muon_weight_decay: float = 0.0
    label_smoothing: float = 0.1
    clip_norm: float = 1.0            # 0 disables gradient clipping
    precision: str = "auto"           # fp32 | bf16 | auto (bf16 autocast where the CPU/GPU has it; with the
                                      # speed probe on a CPU, the faster of bf16 and fp32, timed: qkv.training.probe)
    compile: bool = False             # torch.compile the model
    device: str = "auto"              # auto (CUDA if present) | cpu | cuda | cuda:1 ...
    threads: int = 0                  # CPU threads; 0 = all cores (split between local DDP ranks)
    seed: int = 0
    log_every: int = 10               # steps between metrics.jsonl lines
    eval_every: int = 200             # steps between validations (0: only at the end)
    checkpoint_every: int = 200       # steps between last.safetensors + train_state.pt
    eval_examples: int = 500          # validation examples decoded for exact match / BLEU
    metric: str = "auto"              # early-stopping metric: auto | loss | exact_match | bleu | chrf
    patience: int = 0                 # validations without improvement before stopping (0: never)
    target_metric: float = 0.0        # stop as soon as the metric reaches this (0: never)
    max_decode_ratio: float = 1.5     # greedy validation decodes up to ratio * src_len + 10 tokens
    max_minutes: float = 0.0          # stop (validate, save) after this much training time (0: no limit)
    max_passes: float = 0.0           # language models: the speed probe plans at most this many passes over the training text (0: no limit)
    keep_checkpoints: int = 0         # also keep the last N checkpoints as step-<N>.safetensors (for averaging)

    def __post_init__(self) -> None:
        check_choices("train", self, {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "precision": PRECISIONS})
        check_ranges("train", self, TRAIN_RANGES)


# The valid values of every numeric [train] option (interval notation; all floats must be finite).
_POSITIVE, _COUNT, _FRACTION = "[1, inf)", "[0, inf)", "[0, 1)"
TRAIN_RANGES = {
    "steps": _POSITIVE, "batch_tokens": _POSITIVE, "log_every": _POSITIVE,
    "accumulate": "[1, 4096]",        # the micro-batches of a step are held together (their tokens are counted first)
    "eval_examples": _POSITIVE, "warmup_steps": _COUNT, "eval_every": _COUNT, "checkpoint_every": _COUNT,
    "threads": "[0, 4096]", "seed": f"[0, {2**63 - 1}]", "patience": _COUNT, "keep_checkpoints": _COUNT,
    "lr": "(0, inf)", "min_lr": _COUNT, "beta1": _FRACTION, "beta2": _FRACTION, "eps": "(0, inf)",
    "weight_decay": _COUNT, "muon_lr": "(0, inf)", "muon_momentum": _FRACTION, "muon_weight_decay": _COUNT,
    "decay_fraction": "(0, 1]", "label_smoothing": _FRACTION, "clip_norm": _COUNT, "target_metric": _COUNT,
    "max_decode_ratio": "(0, inf)", "max_minutes": _COUNT, "max_passes": _COUNT,
}


@dataclass
class DataConfig:
    """What to train on. `kind` picks which of the other keys matter.

    task:         a built-in synthetic task (`task`, `train_size`, `valid_size`, `min_len`, `max_len`)
    translation:  parallel text: `dir` + `src_lang`/`tgt_lang` (multi30k-style: train.de, val.de,
                  ...) or explicit `train_src`/`train_tgt`/`valid_src`/`valid_tgt` files
    lm:           monolingual text `train_text` (+ `valid_text`, or the last `valid_fraction`)
                  cut into contiguous blocks of `block_size` tokens
    prepared:     (translation or lm) a directory written by `qkv prepare`; training reads its
                  memory-mapped token files and tokenizer instead of the file keys
    """

    kind: str = "task"
    task: str = "reverse"
    train_size: int = 20000
    valid_size: int = 500
    min_len: int = 0                  # 0: the task's own default
    max_len: int = 0
    dir: str = ""
    src_lang: str = ""
    tgt_lang: str = ""
    train_src: str = ""
    train_tgt: str = ""
    valid_src: str = ""
    valid_tgt: str = ""
    train_text: str = ""
    valid_text: str = ""
    valid_fraction: float = 0.1
    tokenizer: str = "bpe"            # char | word | bpe (files only; tasks bring their own)
    vocab_size: int = 8000
    min_freq: int = 2
    shared_vocab: bool = True         # one tokenizer for source and target
    max_tokens: int = 128             # drop training pairs longer than this (tokens, either side)
    block_size: int = 256             # language models: tokens per training block
    prepared: str = ""                # a directory written by `qkv prepare`: read translation/lm data from it

    def __post_init__(self) -> None:
        check_choices("data", self, {"kind": DATA_KINDS, "tokenizer": TOKENIZERS})
        check_ranges("data", self, DATA_RANGES)


DATA_RANGES = {
    "train_size": "[1, 10000000]", "valid_size": "[1, 10000000]",    # synthetic tasks: ~10 s per million
    "min_len": "[0, inf)", "max_len": "[0, inf)",
    "valid_fraction": "[0, 1)", "vocab_size": "[5, inf)", "min_freq": "[1, inf)", "max_tokens": "[1, inf)",
    "block_size": "[1, inf)",
}


# data keys that name files or folders: read relative to the config file's folder
PATH_KEYS = ("dir", "train_src", "train_tgt", "valid_src", "valid_tgt", "train_text", "valid_text", "prepared")


@dataclass
class RunConfig:
    """The whole configuration of a run, typed: [model] as given, [train] and [data] complete.

    `model` holds only the keys the config gives: the vocabulary sizes (and for a language model
    the architecture) come from the data, so the complete `ModelConfig` is made by the trainer and
    recorded in the run's config.toml.
    """

    model: dict[str, Any]
    train: TrainConfig
    data: DataConfig

    @classmethod
    def parse(cls, config: RunConfig | dict[str, Any] | str | os.PathLike[str],
              overrides: Sequence[str] = (), base_dir: str | os.PathLike[str] | None = None) -> RunConfig:
        """A RunConfig from a TOML file, a dict of sections or another RunConfig, with `--set`
        overrides applied; unknown sections and keys, wrong types and out-of-range values are
        one-line ConfigErrors. Relative data paths of a file are read against the file's folder
        (of a dict: against `base_dir`, if given, else the working directory)."""
        if isinstance(config, RunConfig):
            config = config.to_dict()
        elif isinstance(config, (str, os.PathLike)):
            path = Path(config)
            config, base_dir = load_toml(path), path.parent
        elif not isinstance(config, dict):
            raise ConfigError(f"a config is a TOML file, a dict of sections or a RunConfig, "
                              f"not {type(config).__name__}")
        config = apply_overrides(config, list(overrides))
        for section in config:
            if section not in SECTIONS:
                raise ConfigError(f"unknown config section [{section}]{_nearest(section, SECTIONS)}")
        train = from_dict(TrainConfig, config.get("train", {}), "train")
        data = from_dict(DataConfig, config.get("data", {}), "data")
        if train.max_passes and data.kind != "lm":
            raise ConfigError(f"train.max_passes caps the speed probe's steps in passes over a language model's text "
                              f"(data.kind = 'lm'); this run's data.kind is {data.kind!r}: remove train.max_passes")
        model = dict(config.get("model", {}))
        _check_model_keys(model)
        if base_dir is not None:
            for key in PATH_KEYS:
                value = getattr(data, key)
                if value and not Path(value).is_absolute():
                    setattr(data, key, str(Path(base_dir) / value))
        return cls(model, train, data)

    def to_dict(self) -> dict[str, Any]:
        """The sections as plain data (what config.toml holds)."""
        return {"model": dict(self.model), "train": asdict(self.train), "data": asdict(self.data)}

    @property
    def max_len(self) -> int:
        """The longest sequence the model will take: [model] max_len or ModelConfig's default."""
        return int(self.model.get("max_len", ModelConfig.max_len))

    @property
    def lm_rows(self) -> int:
        """A language model's micro-batch in rows: train.batch_tokens // data.block_size (at least 1)."""
        return max(1, self.train.batch_tokens // self.data.block_size)

    def check_paths(self, base: str | os.PathLike[str] | None = None) -> None:
        """Every data path the config names exists, or one line naming the key and the folder."""
        for key in PATH_KEYS:
            value = getattr(self.data, key)
            if value and not Path(value).exists():
                where = f" (read relative to {base})" if base is not None else ""
                raise ConfigError(f"data.{key} = {value!r} does not exist{where}; paths in a config file "
                                  f"are relative to the file's folder")


def parse_config(config: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """`RunConfig.parse(config, overrides).to_dict()`: every [train] and [data] key filled with its default."""
    return RunConfig.parse(config, overrides).to_dict()


def _nearest(name: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; choose one of {', '.join(valid)}"


def _check_model_keys(model: dict[str, Any]) -> None:
    valid = list(ModelConfig.__dataclass_fields__)
    for key in model:
        if key not in valid:
            raise ConfigError(unknown_key_message(f"model.{key}", key, valid, "model"))


