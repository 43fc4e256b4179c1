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


def test_no_module_of_qkv_switches_the_backend_or_uses_pyplot():
    """A notebook's inline pictures must survive `import qkv.history` and every plot qkv draws:
    figures are matplotlib.figure.Figure objects saved by qkv.files.save_figure, never pyplot's."""
    from pathlib import Path

    import qkv

    source = Path(qkv.__file__).parent
    offenders = [f"{path.relative_to(source)}:{n}" for path in source.rglob("*.py")
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if "matplotlib.use(" in line or "import matplotlib.pyplot" in line]
    assert offenders == []
