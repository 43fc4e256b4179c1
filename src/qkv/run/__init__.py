"""The home of a run: its configuration, its directory and loading it.

    from qkv.run import RunConfig, RunDir, load_run
    cfg = RunConfig.parse("recipes/multi30k_de_en.toml", ["train.steps=100"])   # typed, checked once
    d = RunDir("runs/de-en")          # every file name: d.config, d.weights("last"), d.state, d.metrics
    run = load_run("runs/de-en")      # Run: config, ModelConfig, model (eval mode), tokenizers, loaded once

Every entry point (the CLI, the server, recipes, benchmarks, `import qkv`) takes a run's file
names, config parsing and loading from here; nothing else spells "config.toml" or "train_state.pt".
"""

from qkv.run.config import (
    DATA_RANGES,
    PATH_KEYS,
    SCHEDULES,
    TRAIN_RANGES,
    DataConfig,
    RunConfig,
    TrainConfig,
    parse_config,
)
from qkv.run.dir import (
    NO_VERIFY_ENV,
    SHARED_TOKENIZER,
    SRC_TOKENIZER,
    TGT_TOKENIZER,
    Run,
    RunDir,
    file_digest,
    is_run_file,
    load_run,
    load_run_config,
    load_tokenizers,
    load_weights,
    lock_run,
    refuse_run_file,
    refuse_to_replace_run,
    read_recorded,
    read_weights,
    save_run,
    save_tensors,
    save_tokenizers,
    save_weights,
    verifying,
    weights_file_digest,
    weights_step,
    write_recorded,
)

__all__ = [
    "DATA_RANGES", "NO_VERIFY_ENV", "PATH_KEYS", "SCHEDULES", "SHARED_TOKENIZER", "SRC_TOKENIZER",
    "TGT_TOKENIZER", "TRAIN_RANGES", "DataConfig", "file_digest", "is_run_file", "load_run",
    "load_run_config", "load_tokenizers", "load_weights", "lock_run", "parse_config",
    "read_recorded", "read_weights", "refuse_run_file", "refuse_to_replace_run", "Run", "RunConfig",
    "RunDir", "save_run", "save_tensors", "save_tokenizers", "save_weights", "TrainConfig",
    "verifying", "weights_file_digest", "weights_step", "write_recorded",
]
