"""The training plot: drawn without touching matplotlib's global state."""

import matplotlib
import matplotlib.pyplot as plt

from qkv.training.metrics import MetricsLog, plot_run


def test_plot_run_leaves_the_backend_and_the_figures_as_they_were(tmp_path, monkeypatch):
    log = MetricsLog(tmp_path)
    for step in (1, 2, 3):
        log.append({"kind": "train", "step": step, "loss": 3.0 / step, "nll": 2.5 / step, "lr": 1e-3 * step})
    log.append({"kind": "valid", "step": 3, "loss": 1.2, "exact_match": 0.5})
    switched: list[object] = []
    monkeypatch.setattr(matplotlib, "use", lambda *args, **kwargs: switched.append(args))
    figures = plt.get_fignums()

    path = plot_run(tmp_path)

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert switched == [] and plt.get_fignums() == figures      # a notebook's inline backend survives training
