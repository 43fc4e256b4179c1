"""Shared fixtures. `device`: the test runs once on the CPU and once on CUDA (skipped without a GPU).

    def test_something(device):          # device is a torch.device
        model = build_model(cfg).to(device)

The CUDA variants carry the `cuda` marker: `pytest -m cuda` runs only them (on a GPU machine).
"""

import pytest
import torch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch.device(request.param)

