"""Integrity: weights, train_state.pt and tokenizers carry a hash checked on load; one flipped bit
anywhere is a one-line CheckpointError, QKV_NO_VERIFY=1 (or verify=False) loads a file edited on
purpose, and a run written before hashes were recorded loads unchecked."""

import hashlib
import random
import shutil
import time

import pytest
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from qkv.data.tasks import task_config
from qkv.errors import CheckpointError
from qkv.run import RunDir, load_run, read_weights
from qkv.run import dir as run_dir_module
from qkv.training import train

TINY = ["model.d_model=16", "model.n_heads=2", "model.n_encoder_layers=1", "model.n_decoder_layers=1",
        "model.d_ff=32", "train.threads=1", "train.eval_every=2", "train.checkpoint_every=2",
        "train.keep_checkpoints=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run with every kind of file (model, last, step-N, train_state.pt, tokenizer.json)."""
    out = tmp_path_factory.mktemp("integrity") / "run"
    train(task_config("reverse"), out, ["train.steps=4", *TINY], quiet=True)
    return out


@pytest.fixture
def run(trained, tmp_path):
    return shutil.copytree(trained, tmp_path / "run")


def _load(run, name):
    d = RunDir(run)
    if name == d.state.name:
        return d.read_state()
    return load_run(run, weights=name.removesuffix(".safetensors") if name.endswith(".safetensors") else "model")


FILES = ["model.safetensors", "last.safetensors", "step-4.safetensors", "train_state.pt", "tokenizer.json"]


@pytest.mark.parametrize("name", FILES)
def test_one_flipped_bit_anywhere_is_a_one_line_error(run, name):
    path = run / name
    original = path.read_bytes()
    positions = [0, 9, 20, len(original) // 2, len(original) - 1, *random.Random(name).sample(range(len(original)), 10)]
    for pos in positions:
        damaged = bytearray(original)
        damaged[pos] ^= 1 << (pos % 8)
        path.write_bytes(damaged)
        with pytest.raises(CheckpointError) as info:
            _load(run, name)
        assert "\n" not in str(info.value) and str(path) in str(info.value), (pos, str(info.value))
    path.write_bytes(original)
    _load(run, name)                                 # the file itself loads


def test_a_file_edited_on_purpose_loads_with_the_skip(run, monkeypatch):
    weights = run / "model.safetensors"
    tensors, metadata, _ = read_weights(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] * 0.5              # an edit that keeps a valid file
    raw = bytearray(weights.read_bytes())
    data = save_safetensors(tensors, metadata={**metadata, "qkv_sha256": load_header_hash(raw)})
    weights.write_bytes(data)
    with pytest.raises(CheckpointError, match="QKV_NO_VERIFY=1"):
        load_run(run)
    assert load_run(run, verify=False).model is not None
    monkeypatch.setenv("QKV_NO_VERIFY", "1")
    assert load_run(run).model is not None


def load_header_hash(raw):
    import json

    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8: 8 + n])["__metadata__"]["qkv_sha256"]


def test_a_run_from_before_hashes_loads_unchecked(run):
    (run / "integrity.json").unlink()
    for path in run.glob("*.safetensors"):
        tensors = load_safetensors(path.read_bytes())
        path.write_bytes(save_safetensors(tensors, metadata={"format": "pt"}))    # no qkv_sha256
    (run / "tokenizer.json").write_bytes((run / "tokenizer.json").read_bytes() + b"\n")
    assert load_run(run).weights_digest is not None
    RunDir(run).read_state()


@pytest.mark.parametrize("fail_at", [1, 2])
def test_a_kill_between_the_file_and_its_record_leaves_a_file_whose_hash_is_recorded(run, monkeypatch, fail_at):
    """write_recorded: (0) manifest with old + new hash, (1) the file, (2) manifest with the new hash only."""
    real, calls = run_dir_module.atomic_write_bytes, []

    def killed(path, data):
        calls.append(path)
        if len(calls) == fail_at + 1:
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(run_dir_module, "atomic_write_bytes", killed)
    with pytest.raises(KeyboardInterrupt):
        RunDir(run).write_state(b"new state")
    monkeypatch.undo()
    assert RunDir(run).read_state() in (b"new state", (run / "train_state.pt").read_bytes())


def test_hashing_cost_on_load(capsys):
    """The price of the check: SHA-256 of the weights plus train_state.pt on every load (printed)."""
    data = bytes(64 << 20)
    start = time.perf_counter()
    hashlib.sha256(data).hexdigest()
    per_mb = (time.perf_counter() - start) / 64
    with capsys.disabled():
        print(f"\nSHA-256 on load: {per_mb * 1e3:.2f} ms per MB; a 2.35M-parameter run (9.4 MB weights + "
              f"28 MB train_state.pt): {per_mb * 37.4 * 1e3:.0f} ms")
    assert per_mb < 0.05                             # under 50 ms per MB even on a slow machine
