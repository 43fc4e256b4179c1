"""What training reads from config.toml: the [train] and [data] sections, and task defaults.

A full config is a dict of sections, exactly the TOML file:

    [model]  ModelConfig (vocabulary sizes are filled in from the tokenizers)
    [train]  TrainConfig: optimizer, schedule, batch size, steps, validation, checkpoints
    [data]   DataConfig: a built-in task, parallel files, a multi30k-style directory or LM text

`task_config("reverse")` is the tuned default for a built-in task (what `qkv train --task
reverse` runs); every value can be overridden with `--set section.key=value`.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import asdict, dataclass
from typing import Any

from qkv.config import ModelConfig, apply_overrides, check_ranges, from_dict, unknown_key_message
from qkv.errors import ConfigError
from qkv.train.schedule import SCHEDULES

PRECISIONS = ("fp32", "bf16", "auto")
DATA_KINDS = ("task", "translation", "lm")
TOKENIZERS = ("char", "word", "bpe")
SECTIONS = ("model", "train", "data")


@dataclass
class TrainConfig:
    """How to train. `lr` is the peak rate for "cosine"/"constant" and the paper's factor for "noam"."""

    steps: int = 2000                 # optimizer updates
    batch_tokens: int = 4096          # per micro-batch and process: sentences x longest padded side (LM: rows x block)
    accumulate: int = 1               # micro-batches per optimizer update
    schedule: str = "noam"            # noam | cosine | linear | constant
    lr: float = 1.0
    warmup_steps: int = 400
    min_lr: float = 0.0               # cosine floor
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-9
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    clip_norm: float = 1.0            # 0 disables gradient clipping
    precision: str = "auto"           # fp32 | bf16 | auto (bf16 autocast where the CPU/GPU has it)
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
    keep_checkpoints: int = 0         # also keep the last N checkpoints as step-<N>.safetensors (for averaging)

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        check_ranges("train", self, TRAIN_RANGES)


# The valid values of every numeric [train] option (interval notation; all floats must be finite).
_POSITIVE, _COUNT, _FRACTION = "[1, inf)", "[0, inf)", "[0, 1)"
TRAIN_RANGES = {
    "steps": _POSITIVE, "batch_tokens": _POSITIVE, "log_every": _POSITIVE,
    "accumulate": "[1, 4096]",        # the micro-batches of a step are held together (their tokens are counted first)
    "eval_examples": _POSITIVE, "warmup_steps": _COUNT, "eval_every": _COUNT, "checkpoint_every": _COUNT,
    "threads": "[0, 4096]", "seed": f"[0, {2**63 - 1}]", "patience": _COUNT, "keep_checkpoints": _COUNT,
    "lr": "(0, inf)", "min_lr": _COUNT, "beta1": _FRACTION, "beta2": _FRACTION, "eps": "(0, inf)",
    "weight_decay": _COUNT, "label_smoothing": _FRACTION, "clip_norm": _COUNT, "target_metric": _COUNT,
    "max_decode_ratio": "(0, inf)", "max_minutes": _COUNT,
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
        if self.kind not in DATA_KINDS:
            raise ConfigError(f"data.kind must be one of {', '.join(DATA_KINDS)}; got {self.kind!r}")
        if self.tokenizer not in TOKENIZERS:
            raise ConfigError(f"data.tokenizer must be one of {', '.join(TOKENIZERS)}; got {self.tokenizer!r}")
        check_ranges("data", self, DATA_RANGES)


DATA_RANGES = {
    "train_size": "[1, 10000000]", "valid_size": "[1, 10000000]",    # synthetic tasks: ~10 s per million
    "min_len": "[0, inf)", "max_len": "[0, inf)",
    "valid_fraction": "[0, 1)", "vocab_size": "[5, inf)", "min_freq": "[1, inf)", "max_tokens": "[1, inf)",
    "block_size": "[1, inf)",
}


# ---------------------------------------------------------------------------------------------
# Built-in task defaults, tuned to reach >= 99% exact match in a few CPU minutes
# ---------------------------------------------------------------------------------------------

# Pre-LN without dropout learns these exact, noise-free mappings fastest; small batches mean
# many cheap updates, which is what a 2-core CPU does best.
_SMALL_MODEL = dict(d_model=128, n_heads=4, n_encoder_layers=2, n_decoder_layers=2, d_ff=512,
                    dropout=0.0, norm_first=True, max_len=128)
_SMALL_TRAIN = dict(batch_tokens=1200, schedule="cosine", lr=3e-3, warmup_steps=100, eval_every=200,
                    checkpoint_every=200, metric="exact_match", target_metric=0.995)
_TASK_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "reverse": {"model": _SMALL_MODEL, "train": dict(_SMALL_TRAIN, steps=1000)},
    "dates": {"model": _SMALL_MODEL, "train": dict(_SMALL_TRAIN, steps=1000)},
}
_GENERIC_TASK = _TASK_DEFAULTS["reverse"]


def task_config(task: str = "reverse") -> dict[str, Any]:
    """The tuned default config (a dict of sections) for built-in task `task`."""
    from qkv.data.tasks import TASKS

    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}{_nearest(task, TASKS)}")
    base = copy.deepcopy(_TASK_DEFAULTS.get(task, _GENERIC_TASK))
    base["data"] = {"kind": "task", "task": task}
    return base


def parse_config(config: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Apply `--set` overrides, reject unknown sections/keys, return the complete config dict.

    The result has every [train] and [data] key filled with its default, so config.toml records
    exactly what ran. [model] keeps only the keys given (vocabulary sizes come later).
    """
    config = apply_overrides(config, list(overrides))
    for section in config:
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section [{section}]{_nearest(section, SECTIONS)}")
    train = from_dict(TrainConfig, config.get("train", {}), "train")
    data = from_dict(DataConfig, config.get("data", {}), "data")
    model = dict(config.get("model", {}))
    _check_model_keys(model)
    return {"model": model, "train": asdict(train), "data": asdict(data)}


def _nearest(name: str, valid) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; choose one of {', '.join(valid)}"


def _check_model_keys(model: dict[str, Any]) -> None:
    valid = list(ModelConfig.__dataclass_fields__)
    for key in model:
        if key not in valid:
            raise ConfigError(unknown_key_message(f"model.{key}", key, valid, "model"))


def command_config(task: str | None, config_file: str | None) -> tuple[dict[str, Any], str]:
    """The config that `qkv train --task T` or `--config F` names, and its default run directory."""
    from pathlib import Path

    from qkv.config import load_toml

    if task and config_file:
        raise ConfigError("give either --task or --config, not both")
    if config_file:
        return load_toml(config_file), str(Path("runs") / Path(config_file).stem)
    task = task or "reverse"
    return task_config(task), str(Path("runs") / task)
