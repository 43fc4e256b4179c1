"""Shared fixtures. `device`: the test runs once on the CPU and once on CUDA (skipped without a GPU).

    def test_something(device):          # device is a torch.device
        model = build_model(cfg).to(device)

The CUDA variants carry the `cuda` marker: `pytest -m cuda` runs only them (on a GPU machine).

Layout: tests/ mirrors src/qkv (tests/model for qkv.model, tests/training for qkv.training...); a test
of a top-level module (qkv.tokenizers, qkv.entry, qkv.demo) or of the whole project sits at the top.
tests/ and each folder are packages, so a module's name is its path (`tests.serve_runs`,
`tests.training.test_train`) and two folders may hold files with the same name.
"""

import pytest
import torch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(scope="session")
def trained_reverse_run(tmp_path_factory) -> str:
    """A run directory whose tiny model has learnt (mostly) to reverse strings of 20 letters, trained
    once per session (seconds) for every test that needs outputs that are not degenerate. Read only."""
    from tests.interop_models import reverse_run

    return reverse_run(str(tmp_path_factory.mktemp("shared")))


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch.device(request.param)



@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Each test starts with the thread count the session started with. Some tests change it on
    purpose (a Trainer built without `train()` sets train.threads; the recipes give rank 0 the
    machine), and a result that depends on the thread count (a tiny model's training path) must not
    depend on which test ran before."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
