"""The Python face of qkv: what a notebook needs, without internal module paths.

    import qkv
    run = qkv.train("reverse", out="runs/reverse", steps=300)  # a task, a TOML file, a dict or a RunConfig
    run = qkv.load("runs/reverse")                          # or load a trained run directory
    run.translate("abc")                                     # 'cba'  (a list in, a list out)
    run.translate(["abc", "hello"], beam=5)                  # ['cba', 'olleh']
    run.evaluate(["abc"], ["cba"])                           # {'exact_match': 1.0, ...} or BLEU/chrF
    run.attention("abc").cross                               # (layers, heads, T_tgt, T_src) weights
    run.explain("abc")                                       # the walk-through, shown inline in Jupyter
    run.explain("abc").save("explain.html")
    run.metrics("train")                                     # what training logged: step, loss, lr, ...
    lm = qkv.load("runs/shakespeare-char")
    lm.generate("ROMEO:", max_new_tokens=100, seed=0)        # the prompt's continuation

Everything here goes through the same pipeline as the `qkv` command: `qkv.run` loads the run,
`qkv.text` turns text into ids and back (with its rule for over-long input: cut, with a warning,
which Python shows as a `QkvWarning`), `qkv.search` decodes, `qkv.explain` records the forward
pass. A `Run` is also the run home's `qkv.run.Run` (config, model, tokenizers), so the lower
layers accept it as it is.
"""

from __future__ import annotations

import html
import os
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import torch

from qkv import run as home
from qkv.errors import ConfigError, QkvWarning


def _warn(message: str) -> None:
    warnings.warn(message, QkvWarning, stacklevel=3)


@dataclass
class Run(home.Run):
    """A loaded run with the methods of the `qkv` command: translate, generate, evaluate, attention,
    explain. `training` holds what `qkv.train` reported (None for a run loaded with `qkv.load`)."""

    training: Any = None

    @classmethod
    def of(cls, run: home.Run, training: Any = None) -> Run:
        """The face of a run the home loaded."""
        return cls(**{f.name: getattr(run, f.name) for f in fields(home.Run)}, training=training)

    def __repr__(self) -> str:
        params = sum(p.numel() for p in self.model.parameters())
        kind = "language model" if self.cfg.arch == "decoder-only" else "translation model"
        return (f"qkv.Run({str(self.path)!r}: {kind}, {params / 1e6:.2f}M parameters, d_model {self.cfg.d_model}, "
                f"{self.cfg.n_heads} heads, vocabulary {self.cfg.tgt_vocab_size})")

    # --- translation -------------------------------------------------------------------------

    def translate(self, texts: str | Sequence[str], beam: int = 5, n_best: int = 1, length_penalty: float = 0.6,
                  sample: bool = False, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  seed: int | None = None, batch_size: int = 32, use_cache: bool = True) -> Any:
        """Translate one text (returns a str) or a list of texts (returns a list of str).

        beam=1 is greedy search; `sample=True` draws tokens instead (temperature, top_k, top_p,
        seed). With n_best > 1 each text gets a list of (translation, score), best first.
        use_cache=False runs the decoder over the whole prefix at every step (the same output, slower).
        """
        from qkv.search import DecodeConfig
        from qkv.text import translate_lines

        one = isinstance(texts, str)
        lines = [texts] if one else list(_texts(texts, "texts"))
        dcfg = DecodeConfig(beam_size=1 if sample else beam, n_best=n_best, length_penalty=length_penalty,
                            sample=sample, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                            use_cache=use_cache)
        results = translate_lines(self, lines, dcfg, batch_size, _warn)
        out = [nbest if n_best > 1 else nbest[0][0] for nbest in results]
        return out[0] if one else out

    def evaluate(self, sources: Sequence[str], references: Sequence[str], beam: int = 5,
                 length_penalty: float = 0.6, batch_size: int = 32) -> dict[str, Any]:
        """Translate `sources` and score them against `references`, as `qkv evaluate` does: the
        scores with their signatures, the number of sentences and the hypotheses."""
        from qkv.search import DecodeConfig
        from qkv.text import evaluate

        dcfg = DecodeConfig(beam_size=beam, length_penalty=length_penalty)
        return evaluate(self, list(_texts(sources, "sources")), list(_texts(references, "references")), dcfg,
                        batch_size, _warn)

    # --- language models ---------------------------------------------------------------------

    def generate(self, prompt: str = "", max_new_tokens: int = 200, greedy: bool = False, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int | None = None, use_cache: bool = True) -> str:
        """Continue `prompt` with a language model; returns the new text (without the prompt).
        use_cache=False runs the model over the whole context at every step (the same text, slower)."""
        from qkv.search import DecodeConfig, Sampler
        from qkv.text import generate_text

        if not isinstance(prompt, str):
            raise ConfigError(f"prompt must be a str, got {type(prompt).__name__}")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        dcfg = DecodeConfig(sample=not greedy, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                            use_cache=use_cache)
        return "".join(generate_text(self, prompt, max_new_tokens, Sampler.from_config(dcfg), _warn, use_cache))

    # --- training's record ------------------------------------------------------------------

    def metrics(self, kind: str | None = None) -> list[dict[str, Any]]:
        """What training logged in the run's metrics.jsonl, one dict per line, in order: "probe"
        (a recipe's speed probe) and "optimizer" (which tensors each optimizer updates) at the start,
        "train" records (step, loss, nll, lr, ...), "valid" records (step, loss, the scores) and a last "end";
        `kind` keeps one kind. Empty for a run that training did not write."""
        from qkv.training.metrics import read_metrics

        records = read_metrics(self.path)
        return records if kind is None else [r for r in records if r.get("kind") == kind]

    # --- looking inside ----------------------------------------------------------------------

    def attention(self, text: str, target: str | None = None) -> Attention:
        """The attention weights of one forward pass over `text` and the model's own greedy output
        (its translation, or a language model's continuation), or `target` if given; stacked over layers."""
        return Attention.of(self._explained(text, target).trace)

    def explain(self, text: str, target: str | None = None, layer: int = 0, head: int = 0, top_k: int = 5,
                max_new_tokens: int | None = None, lang: str = "en") -> Explanation:
        """The walk-through of `qkv explain` for `text`: every step with the real numbers, zoomed
        in on `layer` and `head` (0-based), in `lang` ("en" or "ko", Korean). Jupyter shows it
        inline; `.save(path)` writes the page."""
        from qkv.explain.i18n import check_lang
        from qkv.explain.report import explain_run

        _check_text(text, target)
        check_lang(lang)
        trace, notes, title = explain_run(self, text, target, layer, head, max_new_tokens, lang)
        for note in notes:
            _warn(note)
        return Explanation(trace, notes, title, layer, head, top_k, lang)

    def _explained(self, text: str, target: str | None) -> Any:
        from qkv.explain.text import explain_text

        _check_text(text, target)
        explained = explain_text(self, text, target)
        for note in explained.warnings:
            _warn(note)
        return explained


def _check_text(text: Any, target: Any) -> None:
    if not isinstance(text, str) or (target is not None and not isinstance(target, str)):
        raise ConfigError("text (and target) must be str")


def _texts(texts: Any, name: str) -> Sequence[str]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise ConfigError(f"{name} must be a list of str")
    return texts


@dataclass
class Attention:
    """Attention weights of one forward pass; rows are queries, columns keys; each row sums to 1.

    encoder: (L, H, S, S) self-attention of the encoder (None for a language model)
    decoder: (L, H, T, T) masked self-attention of the decoder (zero above the diagonal)
    cross:   (L, H, T, S) decoder queries over the encoder's keys (None for a language model)
    The decoder reads `target_tokens`: <bos> and the target, shifted right (teacher forcing).
    """

    source_tokens: list[str] | None
    target_tokens: list[str]
    encoder: torch.Tensor | None
    decoder: torch.Tensor
    cross: torch.Tensor | None

    @classmethod
    def of(cls, trace: Any) -> Attention:
        def stack(items: list[Any]) -> torch.Tensor | None:
            return torch.stack([a.weights for a in items]) if items else None

        cross = [layer.cross_attn for layer in trace.decoder_layers if layer.cross_attn is not None]
        decoder = stack([layer.self_attn for layer in trace.decoder_layers])
        assert decoder is not None                # every model has at least one decoder layer
        return cls(trace.src.tokens if trace.src is not None else None, trace.tgt.tokens,
                   stack([layer.self_attn for layer in trace.encoder_layers]), decoder, stack(cross))


class Explanation:
    """The `qkv explain` page of one text: `trace` (every tensor), `warnings`, `html` (the page);
    shown inline by Jupyter, written by `save(path)`."""

    def __init__(self, trace: Any, notes: list[str], title: str, layer: int, head: int, top_k: int,
                 lang: str = "en"):
        self.trace, self.warnings, self.title = trace, notes, title
        self.layer, self.head, self.top_k, self.lang = layer, head, top_k, lang
        self._html: str | None = None

    @property
    def html(self) -> str:
        if self._html is None:
            from qkv.explain.report import render_html

            self._html = render_html(self.trace, self.layer, self.head, self.top_k, title=self.title,
                                     warnings=self.warnings, lang=self.lang)
        return self._html

    def _repr_html_(self) -> str:
        """The page in an isolated frame, so its styles and the notebook's do not mix."""
        return (f'<iframe srcdoc="{html.escape(self.html, quote=True)}" title="{html.escape(self.title)}" '
                f'style="width: 100%; height: 720px; border: 1px solid #ddd"></iframe>')

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the self-contained page (never over a file of a run); returns the path."""
        from qkv.files import atomic_write_bytes

        path = Path(path)
        home.refuse_run_file(path)
        atomic_write_bytes(path, self.html.encode("utf-8"))
        return path

    def __repr__(self) -> str:
        return f"qkv.Explanation({self.title!r}, layer {self.layer}, head {self.head})"


# --- loading and training -----------------------------------------------------------------------


def load(path: str | os.PathLike[str], device: str | torch.device = "cpu", weights: str = "model",
         verify: bool = True) -> Run:
    """Load a run directory (what `qkv train` wrote): config, tokenizers, the model in eval mode.

    weights: "model" (the best checkpoint), "last" or "averaged". Anything missing or broken is
    one `qkv.CheckpointError` that says which file and what to do. verify=False loads files whose
    recorded hash no longer matches (edited on purpose; QKV_NO_VERIFY=1 does the same).
    """
    return Run.of(home.load_run(path, device=device, weights=weights, verify=verify))


def train(config: Any = "reverse", out: str | os.PathLike[str] | None = None, *,
          overrides: Sequence[str] = (), resume: bool = False, reuse: bool = False, quiet: bool = False,
          **settings: Any) -> Run:
    """Train a model and return its run (the best weights, loaded), as `qkv train` does.

    config: a built-in task's name ("reverse", "dates", ...), a TOML file, a dict of
    [model]/[train]/[data] sections or a `qkv.run.RunConfig`. out: the run directory (default
    runs/<task or file name>). Settings by name, `steps=300, d_model=64`, or by section,
    `model={"d_model": 64}`; `overrides=["train.lr=1e-3"]` as `--set` does. resume=True
    continues the run in `out` from its last checkpoint. reuse=True (for notebooks run again and
    again) loads the run already in `out` if it was trained with these settings and came to its
    end, continues it if it was interrupted, and trains it if `out` holds none; other settings there
    are a `qkv.ConfigError` naming them.

    The progress shows as a bar in a terminal (and in Jupyter with ipywidgets), else as lines.
    """
    from qkv.training.loop import train as train_loop

    if resume:
        if out is None:
            raise ConfigError("resume=True needs out=, the run directory to continue")
        result = train_loop(None, out, list(overrides) + _settings_overrides(settings), quiet, resume=True)
        return Run.of(home.load_run(result.run_dir), result)
    cfg, default_out = _config_of(config)
    sections = cfg.to_dict()
    for section, key, value in _settings(settings):
        sections[section][key] = value
    out = out if out is not None else default_out
    run_dir = home.RunDir(out)
    if reuse and run_dir.holds_run() and run_dir.state.is_file():
        from qkv.training.metrics import run_ended

        _check_same_settings(run_dir, home.RunConfig.parse(sections, list(overrides)).to_dict())
        if run_ended(out):
            return load(out)
        result = train_loop(None, out, [], quiet, resume=True)
        return Run.of(home.load_run(result.run_dir), result)
    # (a run stopped before its first checkpoint has nothing to continue: it is trained from the start)
    result = train_loop(sections, out, overrides, quiet)
    return Run.of(home.load_run(result.run_dir), result)


# what training itself fills in or changes without changing the run (sizes of the vocabulary it
# built, the machine it used, how often it printed)
_NOT_SETTINGS = {("model", "src_vocab_size"), ("model", "tgt_vocab_size"), ("data", "tokenizer"),
                 ("data", "vocab_size"), ("train", "threads"), ("train", "device"), ("train", "log_every")}


def _check_same_settings(run_dir: home.RunDir, wanted: dict[str, Any]) -> None:
    """reuse=True: the run in `run_dir` must have been trained with the settings asked for."""
    recorded = run_dir.read_config()
    differ = [f"{section}.{key} = {recorded[section][key]!r} there, {value!r} here"
              for section, values in wanted.items() for key, value in values.items()
              if (section, key) not in _NOT_SETTINGS and key in recorded.get(section, {})
              and recorded[section][key] != value]
    if differ:
        raise ConfigError(f"{run_dir.path} holds a run trained with other settings ({'; '.join(differ[:3])}"
                          f"{'; ...' if len(differ) > 3 else ''}); choose another out= or delete that folder to train anew")


def _config_of(config: Any) -> tuple[home.RunConfig, str]:
    from qkv.data.tasks import TASKS, task_config

    if isinstance(config, str) and config in TASKS:
        return home.RunConfig.parse(task_config(config)), str(Path("runs") / config)
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        if path.suffix != ".toml" and not path.is_file():
            raise ConfigError(f"{config!r} is neither a built-in task ({', '.join(TASKS)}) nor a TOML file")
        return home.RunConfig.parse(path), str(Path("runs") / path.stem)
    if isinstance(config, (dict, home.RunConfig)):
        return home.RunConfig.parse(config), "runs/run"
    raise ConfigError(f"config must be a task name, a TOML file, a dict or a RunConfig, not {type(config).__name__}")


_SECTIONS = ("model", "train", "data")


def _settings(settings: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(section, key, value) for `steps=300` (the one section that has the key) and `model={...}`."""
    from qkv.config import ModelConfig

    known = {"model": set(ModelConfig.__dataclass_fields__), "train": set(home.TrainConfig.__dataclass_fields__),
             "data": set(home.DataConfig.__dataclass_fields__)}
    out: list[tuple[str, str, Any]] = []
    for name, value in settings.items():
        if name in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{name}= takes a dict of [{name}] settings, got {type(value).__name__}")
            out.extend((name, key, v) for key, v in value.items())
            continue
        homes = [section for section in _SECTIONS if name in known[section]]
        if not homes:
            raise ConfigError(f"unknown setting {name!r}: not a key of [model], [train] or [data]")
        if len(homes) > 1:
            raise ConfigError(f"{name!r} is a key of {' and '.join(f'[{s}]' for s in homes)}; say which, "
                              f"e.g. {homes[0]}={{{name!r}: ...}}")
        out.append((homes[0], name, value))
    return out


def _settings_overrides(settings: dict[str, Any]) -> list[str]:
    """Settings as `--set` lines (resume reads the run's own config and applies these)."""
    import tomli_w

    return [f"{section}.{key}={tomli_w.dumps({'v': value}).split('=', 1)[1].strip()}"
            for section, key, value in _settings(settings)]
