"""CTranslate2 as a search backend: source ids in, n-best `Hypothesis` lists out.

    translator = Ct2Translator("exported/de-en-ct2", src_tokens, tgt_tokens, max_len=256)
    hyps = translator.translate_ids([[5, 17, 9], [8, 4]], DecodeConfig(beam_size=4))

The contract is `qkv.search.translate_ids`'s, on CTranslate2's own search: the same
`DecodeConfig` (greedy, beam, sampling, n-best, output limits a * src_len + b capped by max_len),
the same `Hypothesis` (ids without <bos>/<eos>, scores on qkv's scale). Sources are lists of ids
(no padding): CTranslate2 batches and sorts by length itself. Text in and out (tokenizing, the
over-long rule, warnings) stays in `qkv.text`, the same for every backend; the model is written
by `qkv export --format ct2` (`qkv.interop.ct2`).

Loading picks per machine, never process-wide: the compute type (`compute_type_for_machine`: int8
only where CTranslate2's int8 kernels keep 32-bit sums) and the threads (`default_threads`:
one on a 2-core machine; CTranslate2's own default of 4 threads ran 4-9x slower there).
`ctranslate2` is imported only when a translator is built.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

from qkv.errors import ConfigError, QkvError
from qkv.search import DecodeConfig, Hypothesis, length_penalty, output_limits

SOURCE_RECORD = "qkv_source.json"   # in an export: the SHA-256 of the run weights it was made from


def require_ctranslate2() -> Any:
    """The `ctranslate2` module, or a one-line error saying how to install it."""
    try:
        import ctranslate2
    except ImportError:
        raise QkvError("CTranslate2 export and decoding need `ctranslate2`: pip install -e '.[interop]'") from None
    return ctranslate2


def int8_kernels_are_exact(flags: frozenset[str] | None = None, vendor: str | None = None,
                           arch: str | None = None, use_mkl: str | None = None) -> bool:
    """Whether CTranslate2's int8 matrix products keep their 32-bit sums on this machine.

    On x86-64 CTranslate2 uses Intel MKL on Intel CPUs (or where CT2_USE_MKL=1) and oneDNN elsewhere.
    oneDNN's int8 product is exact where the CPU has VNNI (one instruction, 32-bit sums) and saturates
    16-bit partial sums where it has not: measured on an AMD EPYC without VNNI, a 32-wide reverse model
    lost 17.8 BLEU in int8 (47.7 -> 29.9). MKL is exact everywhere (and on AMD CPUs very slow: int8
    ran 20x slower than without it on an AMD EPYC with VNNI). aarch64 builds use Ruy, which is exact.
    """
    from qkv.machine import cpu_flags, cpu_has_vnni, cpu_vendor

    arch = (platform.machine() if arch is None else arch).lower()
    if arch not in ("x86_64", "amd64"):
        return True
    use_mkl = os.environ.get("CT2_USE_MKL") if use_mkl is None else use_mkl
    vendor = cpu_vendor() if vendor is None else vendor
    if use_mkl == "1" or (use_mkl is None and vendor == "GenuineIntel"):
        return True
    return cpu_has_vnni(cpu_flags() if flags is None else flags)


def compute_type_for_machine(requested: str = "auto") -> str:
    """The CTranslate2 compute type to load a model with: `requested`, or for "auto" the model's own
    type ("default": an int8 export runs in int8) where int8 kernels are exact here, else "float32"
    (an int8 export is then dequantized when it loads: float32 speed, int8-rounded weights). No
    process-wide backend switch: CT2_USE_MKL is read, never set."""
    if requested != "auto":
        return requested
    return "default" if int8_kernels_are_exact() else "float32"


def default_threads() -> int:
    """CTranslate2's intra-op threads: 1 on machines of 1-2 cores, else one per core, at most 4.

    CTranslate2's own default is 4 whatever the machine. On 2 cores that ran 4-9x slower than 1 thread,
    and 2 threads were as slow as 4 there (benchmarks/ct2_settings.py): with the Python process, a
    server or other jobs on the other core, every parallel operation waits for a busy core. Not
    measured on larger machines, where one thread per core is CTranslate2's advice."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 1 if cores <= 2 else min(4, cores)


def vocabulary(tokenizer: Any) -> list[str]:
    """Every id's token string; CTranslate2 needs them distinct to map tokens back to ids."""
    tokens = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
    if len(set(tokens)) != len(tokens):
        raise ConfigError("the tokenizer has repeated token strings, which CTranslate2 cannot tell apart; "
                          "retrain the tokenizer with qkv")
    return tokens


class Ct2Translator:
    """A CTranslate2 model that takes and returns qkv token ids (a search backend)."""

    def __init__(self, model_dir: str | os.PathLike, src_tokens: list[str], tgt_tokens: list[str], max_len: int,
                 compute_type: str = "auto", threads: int = 0, weights_digest: str | None = None):
        """`src_tokens`/`tgt_tokens`: every id's token string (`vocabulary`); `max_len`: the model's
        max_len (output limits are capped by it, as in qkv's search); `compute_type`: "auto"
        (`compute_type_for_machine`) or a CTranslate2 compute type; `threads`: intra-op threads,
        0 for `default_threads()`; `weights_digest`: the SHA-256 of the run's weights (`Run.weights_digest`),
        refused when the export records other weights."""
        ctranslate2 = require_ctranslate2()
        model_dir = Path(model_dir)
        if not (model_dir / "model.bin").is_file():
            raise QkvError(f"{model_dir} is not a CTranslate2 model (no model.bin); "
                           f"create it with `qkv export --format ct2 --out {model_dir}`")
        _check_vocabularies(model_dir, src_tokens, tgt_tokens)
        _check_source(model_dir, weights_digest)
        torch_threads = torch.get_num_threads()
        try:
            self.translator = ctranslate2.Translator(str(model_dir), device="cpu",
                                                     compute_type=compute_type_for_machine(compute_type),
                                                     intra_threads=threads or default_threads())
        except (RuntimeError, ValueError, OSError) as exc:   # a truncated or damaged model.bin
            reason = " ".join(str(exc).split())[:160]
            raise QkvError(f"{model_dir / 'model.bin'} cannot be loaded by CTranslate2 ({reason}); the export is "
                           f"damaged or incomplete: export it again with `qkv export --format ct2`") from None
        finally:
            # CTranslate2 sets OpenMP's thread count in the calling thread, which PyTorch shares: without
            # this, the PyTorch model beside it (the server's explain, a comparison) drops to 1 thread
            torch.set_num_threads(torch_threads)
        self.max_len = max_len
        self.src_tokens = src_tokens
        self.tgt_ids = {t: i for i, t in enumerate(tgt_tokens)}
        config = _read_json(model_dir / "config.json")
        self.eos_id = self.tgt_ids.get(config.get("eos_token") if isinstance(config, dict) else None, -1)

    def translate_ids(self, src: list[list[int]], dcfg: DecodeConfig, batch_size: int = 0) -> list[list[Hypothesis]]:
        """`qkv.search.translate_ids` on CTranslate2: each source's n-best `Hypothesis` list (ids without
        <bos>/<eos>), at most `output_limits` new tokens for each. Empty sources give one empty
        hypothesis. `batch_size`: sentences decoded together (0: all).

        CTranslate2 has one output limit per call, so sources are decoded in groups of equal limit (as
        qkv's search stops each sentence at its own limit). Scores mean what they mean in qkv:
        CTranslate2 returns log p / n ** alpha (n counting <eos>, greedy too), so the log-probability
        is recovered exactly and rescored with qkv's GNMT length penalty (beam search) or kept as it is
        (greedy, sampling). The ranking inside the beam is still CTranslate2's: with a length penalty
        above 0 the chosen hypothesis can differ from qkv's.
        """
        if dcfg.seed is not None:
            require_ctranslate2().set_random_seed(dcfg.seed)
        out: list[list[Hypothesis]] = [[Hypothesis([], 0.0, 0.0)] for _ in src]
        groups: dict[int, list[int]] = {}
        for i, (x, limit) in enumerate(zip(src, output_limits([len(x) for x in src], dcfg, self.max_len))):
            if x:
                groups.setdefault(limit, []).append(i)
        for limit, rows in groups.items():
            results = self.translator.translate_batch(
                [[self.src_tokens[i] for i in src[r]] for r in rows], max_batch_size=batch_size,
                beam_size=dcfg.beam_size, num_hypotheses=dcfg.n_best, length_penalty=dcfg.length_penalty,
                max_decoding_length=limit, min_decoding_length=dcfg.min_len, return_scores=True,
                return_end_token=True, sampling_topk=(dcfg.top_k or 0) if dcfg.sample else 1,
                sampling_topp=dcfg.top_p, sampling_temperature=dcfg.temperature,
            )
            for r, result in zip(rows, results):
                out[r] = [self._hypothesis(h, score, dcfg) for h, score in zip(result.hypotheses, result.scores)]
        return out

    def _hypothesis(self, tokens: list[str], score: float, dcfg: DecodeConfig) -> Hypothesis:
        ids = [self.tgt_ids[t] for t in tokens]
        n, alpha = max(1, len(ids)), dcfg.length_penalty                 # n counts <eos> when produced
        log_prob = score * n ** alpha
        if ids and ids[-1] == self.eos_id:
            ids = ids[:-1]
        return Hypothesis(ids, log_prob / length_penalty(n, alpha) if dcfg.beam_size > 1 else log_prob, log_prob)


def _read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {} if default is None else default


def _check_vocabularies(model_dir: Path, src_tokens: list[str], tgt_tokens: list[str]) -> None:
    """A one-line error when the CTranslate2 model was exported from another run (other vocabularies)."""
    saved = {name: model_dir / f"{name}_vocabulary.json" for name in ("shared", "source", "target")}
    expected = {"shared": src_tokens, "source": src_tokens, "target": tgt_tokens}
    for name, path in saved.items():
        if path.is_file() and _read_json(path, []) != expected[name]:
            raise QkvError(f"{model_dir} was exported from another model (its {name} vocabulary differs from "
                           f"this run's); export this run with `qkv export --format ct2 --out DIR`")


def _check_source(model_dir: Path, weights_digest: str | None) -> None:
    """A one-line error when the export records other weights than the run's (another run of the
    same vocabulary, or the run trained further since). An export without the record (made before
    it was written) or a run whose digest is unknown is not checked; QKV_NO_VERIFY=1 skips it."""
    from qkv.run import verifying

    record = _read_json(model_dir / SOURCE_RECORD)
    recorded = record.get("weights_sha256") if isinstance(record, dict) else None
    if weights_digest is None or not isinstance(recorded, str) or recorded == weights_digest or not verifying():
        return
    source = record.get("run", "another run")
    raise QkvError(f"{model_dir} was exported from other weights ({source}) than this run's; export this run "
                   f"with `qkv export --model RUN --format ct2 --out DIR` and use that DIR")
