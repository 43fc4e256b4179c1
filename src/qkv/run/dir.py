"""The run directory (`RunDir`): every file of a run, its lock, and loading a run (`Run`).

    runs/reverse/
      config.toml          [model], [train], [data] ... exactly what was trained
      tokenizer.json       one tokenizer shared by source and target (or a language model's)
      src_tokenizer.json   \\ instead of tokenizer.json when source and target differ
      tgt_tokenizer.json   /
      model.safetensors    the best weights (never pickled; written at the first validation)
      last.safetensors     the latest weights (training writes it at every checkpoint)
      train_state.pt       the checkpoint: weights, optimizer, scheduler, RNG states, data
                           position and step in one file (what --resume reads)
      metrics.jsonl        one JSON object per logged step or validation
      training.png         the training curves (qkv plot)
      step-<N>.safetensors the last train.keep_checkpoints weights (for qkv average)
      averaged.safetensors their mean (qkv average)
      integrity.json       the SHA-256 of train_state.pt and of the tokenizer file(s)
      .qkv-lock            held by the process training in the directory (one at a time)

The names exist here only: everything else asks a `RunDir` (`RunDir(path).state`, `.weights("last")`).

Every file is written atomically (a temporary file, then `os.replace`), so a crash or kill -9
leaves the previous version of a file, never half of one. Every weights file records the step
it was saved at (`qkv_step` in its metadata). A checkpoint is one unit: last.safetensors first,
then train_state.pt, which holds the same weights and is written last; a kill between the two
leaves the previous train_state.pt, and resume continues from it exactly (rewriting
last.safetensors to match).

Integrity: every weights file carries the SHA-256 of its contents (`qkv_sha256` in its metadata,
over the tensor bytes and the rest of the header); train_state.pt and the tokenizer file(s) have
theirs in integrity.json, written before (the new hash beside the old one) and after the file, so a
kill at any point leaves a file whose hash is recorded. Loading checks them: a file changed on disk
(one flipped bit, a bad copy, an edit) is a one-line CheckpointError. A file edited on purpose
loads with `QKV_NO_VERIFY=1` in the environment (or `load_run(..., verify=False)`); a run written
before hashes were recorded loads as before, unchecked.

    save_run(run_dir, model, config, src_tokenizer, tgt_tokenizer)
    run = load_run(run_dir)          # run.model (eval mode), run.cfg, run.src_tokenizer, run.dir ...
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from qkv.config import ModelConfig, load_toml
from qkv.files import atomic_write_bytes, ensure_directory, exclusive_lock, remove_temporary_files, save_toml
from qkv.errors import CheckpointError, OutputError, QkvError
from qkv.run.fits import check_model_fits
from qkv.model import build_model

CONFIG_FILE = "config.toml"
SHARED_TOKENIZER = "tokenizer.json"
SRC_TOKENIZER = "src_tokenizer.json"
TGT_TOKENIZER = "tgt_tokenizer.json"
BEST, LAST, AVERAGED = "model", "last", "averaged"        # <name>.safetensors
STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "training.png"
LOCK_FILE = ".qkv-lock"
MANIFEST_FILE = "integrity.json"
RESULTS_FILE = "results.json"     # what a recipe (recipes/*.py) measured of the run
HASH_KEY = "qkv_sha256"          # a weights file's own hash, in its safetensors metadata
NO_VERIFY_ENV = "QKV_NO_VERIFY"  # =1: load files whose hash does not match (edited on purpose)


class _file:
    """A RunDir attribute: the path of the file `name` in the run directory."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, run_dir: RunDir, owner: type) -> Path:
        return run_dir.path / self.name


class RunDir:
    """The files of one run directory, by role. Nothing else spells a run's file names.

        d = RunDir("runs/reverse")
        d.config, d.weights(), d.weights("last"), d.state, d.metrics, d.plot, d.step_weights(400)
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    config = _file(CONFIG_FILE)          # [model], [train], [data]: what was trained
    state = _file(STATE_FILE)            # the checkpoint --resume reads
    metrics = _file(METRICS_FILE)        # one JSON object per logged step or validation
    plot = _file(PLOT_FILE)              # the training curves
    lock_file = _file(LOCK_FILE)         # held by the process training here
    manifest = _file(MANIFEST_FILE)      # the hashes of train_state.pt and the tokenizer file(s)
    results = _file(RESULTS_FILE)        # a recipe's measurements: loss or BLEU, time, the machine
    tokenizer = _file(SHARED_TOKENIZER)  # the one tokenizer of a language model, or of both sides

    def weights(self, name: str = BEST) -> Path:
        """<name>.safetensors: "model" (the best), "last" (the latest), "averaged", "step-<N>"."""
        return self.path / f"{name}.safetensors"

    def step_weights(self, step: int) -> Path:
        return self.weights(f"step-{step}")

    def tokenizer_files(self) -> list[Path]:
        """The tokenizer file(s) present: tokenizer.json, or src_ + tgt_tokenizer.json."""
        names = (SHARED_TOKENIZER,) if (self.path / SHARED_TOKENIZER).is_file() else (SRC_TOKENIZER, TGT_TOKENIZER)
        return [self.path / n for n in names if (self.path / n).is_file()]

    def holds_run(self) -> bool:
        """Whether the directory holds a qkv run (its config.toml)."""
        return self.config.is_file()

    def has_metrics(self) -> bool:
        return self.metrics.is_file()

    def step_checkpoints(self) -> list[Path]:
        """The run's step-<N>.safetensors files, oldest step first."""
        found = []
        for path in self.path.glob("step-*.safetensors"):
            number = path.name[len("step-"): -len(".safetensors")]
            if number.isdigit():
                found.append((int(number), path))
        return [path for _, path in sorted(found)]

    def read_config(self) -> dict[str, Any]:
        return load_run_config(self.path)

    def write_config(self, config: dict[str, Any]) -> None:
        save_toml(self.config, config)

    def write_state(self, data: bytes) -> None:
        """Write train_state.pt (atomically) and record its hash."""
        write_recorded(self.state, data)

    def read_state(self, verify: bool = True) -> bytes:
        """The bytes of train_state.pt, checked against its recorded hash."""
        return read_recorded(self.state, verify)

    def lock(self, create: bool = True) -> contextlib.AbstractContextManager[None]:
        """Hold the directory's lock while training in it (see `lock_run`)."""
        return lock_run(self.path, create)


@dataclass
class Run:
    """A loaded run directory. `src_tokenizer` is None for a decoder-only language model."""

    path: Path
    config: dict[str, Any]          # the whole config.toml
    cfg: ModelConfig                # its [model] section
    model: nn.Module                # in eval mode, on the requested device
    src_tokenizer: Any | None
    tgt_tokenizer: Any
    weights_digest: str | None = None   # the SHA-256 of the weights loaded (see `weights_digest`)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dir(self) -> RunDir:
        return RunDir(self.path)


# ---------------------------------------------------------------------------------------------
# Weights: safetensors, atomic, tied parameters stored once
# ---------------------------------------------------------------------------------------------


def _unique_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with every tied tensor kept once (safetensors refuses shared storage).

    With tied embeddings `lm_head.weight` is the target embedding matrix; only its first name
    is stored, and loading fills every alias from it.
    """
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    out = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in seen:
            continue
        seen.add(key)
        out[name] = tensor.detach().cpu().contiguous()
    return out


def save_weights(path: str | os.PathLike[str], model: nn.Module, step: int | None = None) -> None:
    """Write the model's weights as safetensors, with its ModelConfig (and the training step they
    were saved at) in the file's metadata."""
    model = _unwrap(model)
    metadata = {"format": "pt"}
    cfg = getattr(model, "cfg", None)
    if isinstance(cfg, ModelConfig):
        metadata["qkv_model_config"] = json.dumps(cfg.to_dict(), sort_keys=True)
    if step is not None:
        metadata["qkv_step"] = str(step)
    save_tensors(path, _unique_state(model), metadata)


def save_tensors(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write `tensors` as a safetensors file (atomically) whose metadata holds its own hash."""
    atomic_write_bytes(path, encode_weights(tensors, metadata))


def encode_weights(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors bytes of `tensors`, with `qkv_sha256` (see `weights_digest`) in the metadata."""
    metadata = {k: v for k, v in metadata.items() if k != HASH_KEY}
    raw = save_safetensors(tensors, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    data = memoryview(raw)[8 + n :]
    header.setdefault("__metadata__", {})[HASH_KEY] = weights_digest(header, data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)          # the tensor data stays 8-byte aligned, as safetensors writes it
    return len(text).to_bytes(8, "little") + text + data


def weights_digest(header: dict[str, Any], data: bytes | memoryview) -> str:
    """The SHA-256 of a safetensors file's contents: its header (as canonical JSON, without the
    hash itself) and its tensor bytes. Any changed bit changes it."""
    canonical = dict(header)
    canonical["__metadata__"] = {k: v for k, v in (header.get("__metadata__") or {}).items() if k != HASH_KEY}
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    digest.update(data)
    return digest.hexdigest()


def _header_value(path: str | os.PathLike[str], key: str) -> Any:
    """Metadata `key` of a safetensors file's header, read without the tensors (None: not
    recorded, missing or unreadable)."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= 100_000_000:
                return None
            return json.loads(f.read(n))["__metadata__"][key]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def weights_step(path: str | os.PathLike[str]) -> int | None:
    """The training step recorded in a weights file (None: not recorded, missing or unreadable)."""
    try:
        return int(_header_value(path, "qkv_step"))
    except (ValueError, TypeError):
        return None


def load_weights(path: str | os.PathLike[str], model: nn.Module, verify: bool = True) -> str:
    """Load safetensors weights into `model`, with a one-line error naming what does not fit;
    returns the file's SHA-256 (`weights_digest`). verify: check it against the recorded one."""
    path = Path(path)
    model = _unwrap(model)
    saved, metadata, digest = read_weights(path, verify)
    _check_saved_config(path, metadata, getattr(model, "cfg", None))
    expected = model.state_dict()
    by_storage: dict[tuple[int, int, tuple[int, ...]], list[str]] = {}
    for name, t in expected.items():
        by_storage.setdefault((t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)), []).append(name)
    # every group of tied names needs exactly one stored tensor
    state = {}
    for names in by_storage.values():
        found = [n for n in names if n in saved]
        if not found:
            raise CheckpointError(
                f"{path} lacks the weight {names[0]!r} that the model has; it was saved from a "
                f"different architecture than config.toml describes"
            )
        for n in names:
            state[n] = saved[found[0]]
    unexpected = sorted(set(saved) - set(state))
    if unexpected:
        raise CheckpointError(
            f"{path} holds the weight {unexpected[0]!r} that the model does not have "
            f"({len(unexpected)} such); it was saved from a different architecture"
        )
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{path}: weight {name!r} holds NaN or infinite values; the model is broken (training "
                f"diverged); use an earlier checkpoint or retrain with a lower train.lr"
            )
        want = tuple(expected[name].shape)
        if tuple(tensor.shape) != want:
            raise CheckpointError(
                f"{path}: weight {name!r} has shape {tuple(tensor.shape)} in the file but the model "
                f"expects {want}; the checkpoint comes from a different architecture"
            )
    model.load_state_dict(state, strict=True)
    return digest


def read_weights(path: str | os.PathLike[str], verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str], str]:
    """The tensors of a safetensors file, its metadata (without the hash) and its SHA-256.

    A file that records its hash (`qkv_sha256`) must still match it, unless verify=False or
    QKV_NO_VERIFY=1; a file without one (written before hashes were recorded) is not checked."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}; train a model first or check the run directory")
    try:
        raw = path.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + n]) if 2 <= n <= len(raw) - 8 else None
        if not isinstance(header, dict):
            raise ValueError("no safetensors header")
        metadata = header.get("__metadata__") or {}
        if not isinstance(metadata, dict):
            raise ValueError("its metadata is not a table")
        digest = weights_digest(header, memoryview(raw)[8 + n :])
        recorded = metadata.get(HASH_KEY)
        if recorded is not None and recorded != digest and verifying(verify):
            raise CheckpointError(_changed(path))
        saved = load_safetensors(raw)
    except (SafetensorError, ValueError, OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{path} is corrupted or not a safetensors file ({_short(exc)}); restore it or retrain"
        ) from None
    return saved, {str(k): str(v) for k, v in metadata.items() if k != HASH_KEY}, digest


def weights_file_digest(path: str | os.PathLike[str]) -> str | None:
    """The SHA-256 recorded in a weights file (None: not recorded, missing or unreadable)."""
    value = _header_value(path, HASH_KEY)
    return value if isinstance(value, str) else None


def _check_saved_config(path: Path, metadata: dict[str, str], cfg: Any) -> None:
    """Name the first ModelConfig field where the file and the model disagree."""
    if not isinstance(cfg, ModelConfig) or "qkv_model_config" not in metadata:
        return
    try:
        saved = json.loads(metadata["qkv_model_config"])
    except ValueError:
        saved = None
    if not isinstance(saved, dict):
        raise CheckpointError(
            f"{path}: its qkv_model_config metadata is not a JSON table of model settings; "
            f"the file was not written by qkv (or was edited); restore it or retrain"
        )
    current = cfg.to_dict()
    for key in current:
        if key in saved and saved[key] != current[key] and key not in _RUNTIME_FIELDS:
            raise CheckpointError(
                f"{path} was saved for model.{key}={saved[key]!r} but the model has "
                f"model.{key}={current[key]!r}; use the config.toml it was trained with"
            )


# fields that do not change the parameters' shapes and may differ between training and use
_RUNTIME_FIELDS = {"dropout", "attention_dropout"}


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None)           # DistributedDataParallel
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "_orig_mod", None)    # torch.compile
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160] or type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Integrity: hashes recorded when a file is written, checked when it is read
# ---------------------------------------------------------------------------------------------


def verifying(verify: bool = True) -> bool:
    """Whether hashes are checked: verify=True and QKV_NO_VERIFY is not set (to 1, true or yes)."""
    return verify and os.environ.get(NO_VERIFY_ENV, "").strip().lower() not in ("1", "true", "yes")


def file_digest(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _changed(path: Path) -> str:
    return (f"{path} does not match the hash recorded when it was written (changed on disk: a damaged or "
            f"mixed-up copy, or an edit); restore the file, or set {NO_VERIFY_ENV}=1 to load a file "
            f"edited on purpose")


def _read_manifest(directory: Path) -> dict[str, list[str]]:
    """The recorded hashes of integrity.json: file name -> accepted SHA-256s ({} when there is none)."""
    path = directory / MANIFEST_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_bytes())
        table = data["sha256"]
        if not isinstance(table, dict) or not all(
                isinstance(v, list) and all(isinstance(h, str) for h in v) for v in table.values()):
            raise ValueError("not a table of hash lists")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} is corrupted ({_short(exc)}); delete it to load the run without "
                              f"its integrity checks") from None
    return {str(k): list(v) for k, v in table.items()}


def _write_manifest(directory: Path, table: dict[str, list[str]]) -> None:
    data = {"qkv_integrity": 1, "sha256": table}
    atomic_write_bytes(directory / MANIFEST_FILE, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


def write_recorded(path: Path, data: bytes) -> None:
    """Write `path` atomically with its hash in the directory's integrity.json: first the new hash
    beside the old one, then the file, then the new hash alone, so that a kill at any point leaves
    a file whose hash is recorded."""
    digest = file_digest(data)
    try:
        table = _read_manifest(path.parent)
    except CheckpointError:
        table = {}                               # a damaged manifest is replaced
    old = table.get(path.name, [])
    if digest not in old:
        table[path.name] = old[-1:] + [digest]
        _write_manifest(path.parent, table)
    atomic_write_bytes(path, data)
    if table.get(path.name) != [digest]:
        table[path.name] = [digest]
        _write_manifest(path.parent, table)


def read_recorded(path: Path, verify: bool = True) -> bytes:
    """The bytes of `path`, checked against the hash integrity.json records for it (none recorded:
    not checked). A mismatch is a one-line CheckpointError."""
    data = path.read_bytes()
    if verifying(verify):
        accepted = _read_manifest(path.parent).get(path.name)
        if accepted is not None and file_digest(data) not in accepted:
            raise CheckpointError(_changed(path))
    return data


# ---------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------


def save_tokenizers(run_dir: Path, src_tokenizer: Any | None, tgt_tokenizer: Any, record: bool = True) -> None:
    """tokenizer.json when one tokenizer serves both sides (or a language model), else two files;
    each written atomically, its hash in integrity.json (record=False: not recorded there)."""
    write = write_recorded if record else atomic_write_bytes
    if src_tokenizer is None or src_tokenizer is tgt_tokenizer:
        write(Path(run_dir) / SHARED_TOKENIZER, tgt_tokenizer.to_bytes())
    else:
        write(Path(run_dir) / SRC_TOKENIZER, src_tokenizer.to_bytes())
        write(Path(run_dir) / TGT_TOKENIZER, tgt_tokenizer.to_bytes())


def load_tokenizers(run_dir: Path, cfg: ModelConfig, verify: bool = True) -> tuple[Any | None, Any]:
    """(src_tokenizer, tgt_tokenizer) of a run; src is None for a decoder-only model. Each file
    is checked against its hash in integrity.json (see `read_recorded`)."""
    run_dir = Path(run_dir)
    shared = run_dir / SHARED_TOKENIZER
    if shared.is_file():
        tgt = _load_one(shared, verify)
        src = None if cfg.arch == "decoder-only" else tgt
    elif (run_dir / SRC_TOKENIZER).is_file() and (run_dir / TGT_TOKENIZER).is_file():
        src = _load_one(run_dir / SRC_TOKENIZER, verify)
        tgt = _load_one(run_dir / TGT_TOKENIZER, verify)
    else:
        raise CheckpointError(
            f"{run_dir} has no tokenizer: expected {SHARED_TOKENIZER} or {SRC_TOKENIZER} + {TGT_TOKENIZER}"
        )
    _check_vocab(run_dir, "tgt_vocab_size", cfg.tgt_vocab_size, tgt)
    if src is not None:
        _check_vocab(run_dir, "src_vocab_size", cfg.src_vocab_size, src)
    return src, tgt


def _load_one(path: Path, verify: bool) -> Any:
    from qkv.tokenizers import load_tokenizer

    try:
        read_recorded(path, verify)
        return load_tokenizer(path)
    except QkvError as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"cannot load tokenizer {path}: {_short(exc)}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} is corrupted or not a qkv tokenizer ({_short(exc)})") from None


def _check_vocab(run_dir: Path, key: str, size: int, tokenizer: Any) -> None:
    if tokenizer.vocab_size != size:
        raise CheckpointError(
            f"{run_dir}: the tokenizer has {tokenizer.vocab_size} tokens but config.toml says "
            f"model.{key} = {size}; the files come from different runs"
        )


# ---------------------------------------------------------------------------------------------
# The run directory
# ---------------------------------------------------------------------------------------------


def save_run(
    run_dir: str | os.PathLike[str],
    model: nn.Module,
    config: dict[str, Any],
    src_tokenizer: Any | None,
    tgt_tokenizer: Any,
    weights: str | None = "model",
) -> Path:
    """Write config.toml, the tokenizer file(s) and `<weights>.safetensors` (none for weights=None)
    into `run_dir`.

    config: the whole configuration ([model], [train], [data] ...); its [model] section is set
    from the model itself so the two can never disagree. Pass `src_tokenizer=None` (or the same
    object as `tgt_tokenizer`) to write a single `tokenizer.json`.
    """
    run_dir = ensure_directory(run_dir, "run directory")
    plain = _unwrap(model)
    config = dict(config)
    cfg = plain.cfg
    assert isinstance(cfg, ModelConfig), "save_run needs a qkv model (with its ModelConfig as .cfg)"
    config["model"] = cfg.to_dict()
    save_toml(run_dir / CONFIG_FILE, config)
    save_tokenizers(run_dir, src_tokenizer, tgt_tokenizer)
    if weights:
        save_weights(RunDir(run_dir).weights(weights), plain)
    return run_dir


def load_run(run_dir: str | os.PathLike[str], device: str | torch.device = "cpu", weights: str = "model",
             verify: bool = True) -> Run:
    """Load a run directory: config, tokenizer(s) and `<weights>.safetensors` (eval mode).

    weights: "model" (the best checkpoint), "last", "averaged" or "step-<N>". Anything missing,
    corrupted or inconsistent raises CheckpointError with a one-line message naming the file.
    verify=False (or QKV_NO_VERIFY=1) loads files whose recorded hash no longer matches (edited
    on purpose); see the module's note on integrity.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory not found: {run_dir}; train one with `qkv train --out {run_dir} ...`")
    config = load_run_config(run_dir)
    cfg = _model_config(run_dir, config)
    src_tok, tgt_tok = load_tokenizers(run_dir, cfg, verify)
    check_model_fits(cfg)                   # built on the CPU, then moved
    model = build_model(cfg)
    digest = load_weights(RunDir(run_dir).weights(weights), model, verify)
    model.to(device).eval()
    return Run(run_dir, config, cfg, model, src_tok, tgt_tok, digest)


def is_run_file(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is an existing file that a qkv run keeps: in a directory holding config.toml,
    the config itself, weights (*.safetensors), state (*.pt), a tokenizer (*.json) or the log;
    also when `path` is a symbolic link (or under one) that leads to such a file."""
    path = Path(path)
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):         # a link loop: nothing of a run's
        return False
    return any(p.is_file() and (p.parent / CONFIG_FILE).is_file()
               and (p.name == CONFIG_FILE or p.suffix in (".safetensors", ".pt", ".json", ".jsonl"))
               for p in (path, resolved))


def refuse_run_file(path: str | os.PathLike[str], option: str = "--out") -> None:
    """One line instead of writing over a file of a qkv run (directly or through a link), e.g.
    `qkv plot RUN --out RUN/model.safetensors`."""
    if is_run_file(path):
        target = Path(path).resolve()
        what = f"a link to {target}, " if target != Path(os.path.abspath(path)) else ""
        raise OutputError(f"{option + ' ' if option else ''}{path} is {what}a file of the qkv run in {target.parent}; "
                          f"write somewhere else")


def refuse_to_replace_run(out_dir: str | os.PathLike[str], what: str) -> None:
    """One line instead of writing `what` into a qkv run directory (one holding config.toml), whose
    model.safetensors, tokenizer.json or config would be replaced: e.g. `qkv export -m RUN --out RUN`."""
    out = Path(out_dir)
    if (out / CONFIG_FILE).is_file():
        raise OutputError(f"{out} holds a qkv run ({CONFIG_FILE}); writing {what} there would replace its "
                          f"files; choose another --out")


def load_run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a run directory: {CONFIG_FILE} is missing")
    try:
        return load_toml(path)
    except QkvError as exc:
        raise CheckpointError(_short(exc)) from None


def _model_config(run_dir: Path, config: dict[str, Any]) -> ModelConfig:
    if "model" not in config:
        raise CheckpointError(f"{run_dir / CONFIG_FILE} has no [model] section")
    try:
        return ModelConfig.from_dict(config["model"])
    except QkvError as exc:
        raise CheckpointError(f"{run_dir / CONFIG_FILE}: {_short(exc)}") from None


# ---------------------------------------------------------------------------------------------
# One trainer per run directory
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def lock_run(run_dir: str | os.PathLike[str], create: bool = True) -> Iterator[None]:
    """Hold the run directory's lock while training in it; a second trainer gets a one-line error.

    The lock is an advisory `flock` on RUN/.qkv-lock, so the operating system drops it when the
    process dies (even by kill -9); the file keeps the last holder's pid for the message. Once
    the lock is held, temporary files that an earlier kill left behind are removed.
    create: make the directory if it does not exist (a new run); resume needs it to exist.
    """
    run_dir = Path(run_dir)
    if create:
        ensure_directory(run_dir, "run directory")
    elif not run_dir.is_dir():
        yield                                    # the trainer says "run directory not found"
        return

    def busy(pid: str) -> QkvError:
        return CheckpointError(f"{run_dir} is in use by another qkv train (pid {pid}); wait for it to finish "
                               f"(or stop it) before resuming, or choose another --out")

    def cannot(exc: OSError) -> QkvError:
        return CheckpointError(f"cannot lock {run_dir}: {exc.strerror or exc}")

    with exclusive_lock(run_dir / LOCK_FILE, busy, cannot):
        remove_temporary_files(run_dir)
        yield
