# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 10 · Decoder-only, and what came after 2017
#
# The paper's Transformer translates: an encoder reads the source, a decoder writes the target
# while looking at the source through cross-attention. Take away the encoder and cross-attention
# and what is left is one stack of masked self-attention and feed-forward layers that reads a
# text and predicts, at every position, the next token: a **language model**. That is GPT
# (Radford et al., 2018), and, with a handful of changes made since, Llama and most of today's
# large models.
#
# In this notebook: train a tiny character-level one in a few seconds, let it write, look at its
# causal attention; then the changes since 2017 (RoPE, RMSNorm, SwiGLU, grouped-query attention)
# with their parameter counts and the memory of the key/value cache.

# %%
import collections
import inspect
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import qkv

torch.set_num_threads(1)    # these models are small: one thread is as fast, and steadier on a busy machine

# %% [markdown]
# The checks of the exercises, defined once here and used twice: right after each exercise, and in
# the Solutions section at the end.

# %%
def cache_bytes_per_token(model, tokens=16):
    """Bytes the key/value cache of `model` holds per token, read off a real cache."""
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.full((1, tokens), 4), cache)          # feed `tokens` tokens, filling the cache
    held = sum(c.k.numel() * c.k.element_size() + c.v.numel() * c.v.element_size() for c in cache.self_attn)
    return held / tokens


EXERCISE_CONFIG = qkv.ModelConfig(arch="decoder-only", tgt_vocab_size=69, d_model=64, n_heads=4, n_kv_heads=2,
                                  n_decoder_layers=2, d_ff=192, activation="swiglu", norm="rmsnorm",
                                  positional="rope", bias=False, norm_first=True, max_len=128)


def check_10_1(answer):
    if answer is ...:
        print("Exercise 10.1 waits for your answer / 연습 10.1: 답을 기다립니다")
        return
    measured = cache_bytes_per_token(qkv.DecoderOnly(EXERCISE_CONFIG))
    assert answer == measured, (f"Not yet: a real cache holds {measured:.0f} bytes per token, you said {answer}; "
                                f"count keys and values, layers, key/value heads, d_head, 4 bytes / 아직 아닙니다: "
                                f"실제 캐시는 토큰당 {measured:.0f}바이트, 답은 {answer}. 키와 값, 층, 키/값 헤드, "
                                f"d_head, 4바이트를 모두 곱하세요")
    print(f"Exercise 10.1: right, {measured:.0f} bytes per token / 연습 10.1: 정답, 토큰당 {measured:.0f}바이트")


def check_10_2(answer):
    if answer is ...:
        print("Exercise 10.2 waits for your answer / 연습 10.2: 답을 기다립니다")
        return
    counted = qkv.DecoderOnly(EXERCISE_CONFIG).num_parameters()
    assert answer == counted, (f"Not yet: PyTorch counts {counted:,}, you said {answer:,}; the table above "
                               f"has one row per part / 아직 아닙니다: PyTorch는 {counted:,}개, 답은 {answer:,}개. "
                               f"위의 표에 부분마다 한 줄씩 있습니다")
    print(f"Exercise 10.2: right, {counted:,} parameters / 연습 10.2: 정답, 파라미터 {counted:,}개")


# %% [markdown]
# ## The model: the decoder alone
#
# `qkv.DecoderOnly` is the paper's decoder without cross-attention. Its forward pass, as written
# in `qkv.model`:

# %%
print(inspect.getsource(qkv.DecoderOnly.forward))

# %% [markdown]
# Embed the tokens (with their positions), run the masked decoder stack, project to the
# vocabulary. Training is teacher forcing on running text: the input is a block of characters,
# the target the same block shifted by one, so every position is a next-character prediction.
#
# ## Train a tiny character model
#
# Tiny Shakespeare (1.1 million characters of the plays) when it is beside the repository, else a
# 12 KB excerpt of the same text shipped with the course. Two layers, 64 wide, 150 steps of 1024
# characters: a few seconds (once; after that `reuse=True` loads it).

# %%
text_file = Path("../../../shared/data/tinyshakespeare/input.txt")
if not text_file.is_file():
    text_file = Path("../data/shakespeare_excerpt.txt")         # shipped with the course
lm = qkv.train({"model": {"d_model": 64, "n_heads": 4, "n_decoder_layers": 2, "d_ff": 256, "dropout": 0.0,
                          "norm_first": True},
                "train": {"steps": 150, "batch_tokens": 1024, "lr": 1e-2, "schedule": "cosine", "warmup_steps": 20,
                          "label_smoothing": 0.0, "eval_every": 150, "checkpoint_every": 150, "eval_examples": 20,
                          "threads": 1},
                "data": {"kind": "lm", "train_text": str(text_file), "tokenizer": "char", "block_size": 128}},
               out="../runs/lm-" + text_file.stem, quiet=True, reuse=True)
print(lm)

text = text_file.read_text(encoding="utf-8")
valid = [json.loads(line) for line in lm.dir.metrics.read_text().splitlines() if '"valid"' in line][-1]
counts = collections.Counter(text)
unigram = -sum(c / len(text) * math.log(c / len(text)) for c in counts.values())
print(f"{len(text):,} characters, {len(counts)} distinct")
print(f"nats per character: guessing uniformly {math.log(len(counts)):.2f}, knowing only the letter "
      f"frequencies {unigram:.2f}, this model (validation loss) {valid['loss']:.2f}")

# %% [markdown]
# The loss is the cross-entropy of the next character. Guessing uniformly costs ln(number of
# distinct characters), 4.17 nats for Tiny Shakespeare's 65; knowing only how frequent each letter
# is, about 3.3. The tiny model, after a few seconds, is below that: it uses the characters
# before. For comparison, the 5-minute recipe (`python recipes/shakespeare.py`) reaches about 1.58
# on 2 CPU cores, and nanoGPT's character model on a GPU about 1.47 (docs/language_model.md).
#
# ## Let it write
#
# `lm.generate(prompt)` samples (notebook 09): temperature, top-k, top-p, seed.

# %%
print(lm.generate("ROMEO:", max_new_tokens=200, temperature=0.8, seed=0))
print("-" * 40, "greedy:")
print(lm.generate("ROMEO:", max_new_tokens=80, greedy=True))

# %% [markdown]
# After a few seconds it has the *shape* of a play: names in capitals, a colon, line breaks, short
# common words, and many non-words. Greedy decoding falls into a loop ("the the the..."): the
# single most probable continuation of "the " is, for this model, "the " again. Sampling is what
# makes language models write; notebook 09 showed why top-k/top-p keep it sane.
#
# ## Causal attention
#
# Every position may look at itself and the positions before it, never after: the mask makes the
# weights above the diagonal zero. `lm.attention(text, target="")` records the weights of one
# forward pass over the text (`target=""`: no continuation); `.decoder` has the shape
# (layers, heads, T, T).

# %%
a = lm.attention("First Citizen:\nBefore we proceed", target="")
print(a.decoder.shape, " above the diagonal:", float(a.decoder.triu(1).abs().sum()))

layers, heads = a.decoder.shape[:2]
ticks = range(len(a.target_tokens))
fig, axes = plt.subplots(layers, heads, figsize=(2.6 * heads, 3.0 * layers), sharex=True, sharey=True)
for layer in range(layers):
    for head in range(heads):
        ax = axes[layer, head]
        ax.imshow(a.decoder[layer, head], cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"layer {layer}, head {head}", fontsize=8)
        ax.set_xticks(ticks, a.target_tokens, fontsize=6)
        ax.set_yticks(ticks, a.target_tokens, fontsize=6)
fig.supxlabel("keys (earlier characters)", fontsize=9)
fig.supylabel("queries", fontsize=9)
fig.tight_layout()

# %% [markdown]
# Each row is one position reading the positions before it (rows sum to 1). The upper triangle is
# empty: the causal mask. Some heads look mostly at the previous character or two (a bright band
# just below the diagonal), some spread over the word; in our run, two heads of the second layer
# look back at one landmark, the colon or the line break, wherever the query is. Even two layers
# trained for seconds divide the work.
#
# ## What came after 2017
#
# Today's decoder-only models are this decoder with a handful of changes, each a `ModelConfig`
# option in qkv (docs/paper-map.md, "After 2017"):
#
# | change | paper | what it does | option |
# |---|---|---|---|
# | pre-LN | Xiong et al. 2020; GPT-2 | normalise *before* each sublayer: stable at high learning rates | `norm_first=True` (used above) |
# | RoPE | Su et al. 2021 | no position vector added: rotate queries and keys by their position | `positional="rope"` |
# | RMSNorm | Zhang & Sennrich 2019 | divide by the root mean square; no mean, no bias | `norm="rmsnorm"` |
# | SwiGLU | Shazeer 2020 | a gated feed-forward: W2 (SiLU(x W1) ⊙ x W3) | `activation="swiglu"` |
# | GQA | Ainslie et al. 2023 | fewer key/value heads, each shared by several query heads | `n_kv_heads` |
# | no biases | PaLM, Llama | every linear layer without bias | `bias=False` |
#
# ### RoPE: positions as rotations
#
# RoPE rotates each pair of dimensions (q₂ᵢ, q₂ᵢ₊₁) of a query at position m by the angle
# m·θ⁻²ⁱ/ᵈ, and the key at position n likewise. A rotation keeps lengths, and the dot product of
# two rotated vectors depends only on the angle between them: the score of query m and key n
# depends on m − n, the relative position, in every layer. Here it is in five lines, checked
# against qkv's own module:

# %%
def rotate(x, position, theta=10000.0):
    """x: (..., d_head) at `position` -> x with each pair (x_2i, x_2i+1) turned by position * theta^(-2i/d)."""
    d = x.size(-1)
    angle = position * theta ** (-torch.arange(0, d, 2) / d)              # (d/2,)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * angle.cos() - x2 * angle.sin(), x1 * angle.sin() + x2 * angle.cos()), -1).flatten(-2)


rope_model = qkv.DecoderOnly(qkv.ModelConfig(arch="decoder-only", tgt_vocab_size=69, d_model=64, n_heads=4,
                                             n_decoder_layers=1, d_ff=256, positional="rope", max_len=128))
qkvs_rope = rope_model.decoder.layers[0].self_attn.rope                # the module attention uses
torch.manual_seed(0)
q, k = torch.randn(16), torch.randn(16)                                  # one query, one key, d_head 16
assert torch.allclose(rotate(q, 7), qkvs_rope(q.view(1, 1, 1, 16), start=7).flatten(), atol=1e-5)

scores = torch.tensor([[float(rotate(q, m) @ rotate(k, n)) for n in range(32)] for m in range(32)])
print(f"query at 10, key at 7: {scores[10, 7]:.4f};  query at 25, key at 22: {scores[25, 22]:.4f}  (same offset)")
fig, ax = plt.subplots(figsize=(3.2, 3))
ax.imshow(scores, cmap="RdBu")
ax.set_xlabel("key position n")
ax.set_ylabel("query position m")
ax.set_title("q·k with RoPE: constant along diagonals", fontsize=9)
fig.tight_layout()

# %% [markdown]
# The same query and key, placed at every pair of positions: the score is constant along each
# diagonal (each offset m − n). With the paper's sinusoidal vectors, added once to the embedding,
# no such rule holds; the model must learn relative position from absolute ones. RoPE has no
# parameters.
#
# ### RMSNorm and SwiGLU
#
# RMSNorm is LayerNorm without subtracting the mean and without the bias:

# %%
rms_model = qkv.DecoderOnly(qkv.ModelConfig(arch="decoder-only", tgt_vocab_size=69, d_model=64, n_heads=4,
                                            n_decoder_layers=1, d_ff=256, norm="rmsnorm", norm_first=True))
print(type(rms_model.decoder.norm).__name__, "in", type(rms_model.decoder.norm).__module__)
print(inspect.getsource(type(rms_model.decoder.norm).forward))

# %% [markdown]
# (`note(...)` keeps the intermediate tensors for `qkv explain` when it records; it changes no
# number.) SwiGLU replaces `W2 ReLU(x W1)` by `W2 (SiLU(x W1) ⊙ x W3)`: a gate (x W3) multiplies each hidden
# unit. Three matrices instead of two, so qkv makes the hidden layer 2/3 of `d_ff` wide
# (256 → 171) and the parameter count stays about the same.
#
# ### Counting parameters
#
# One change at a time, on the size of the model trained above (2 layers, 64 wide, 4 heads, d_ff
# 256, 69 tokens: Tiny Shakespeare's 65 characters and 4 special tokens), parameters counted by
# PyTorch and split by part:

# %%
BASE = dict(arch="decoder-only", tgt_vocab_size=69, d_model=64, n_heads=4, n_decoder_layers=2, d_ff=256,
            dropout=0.0, norm_first=True, max_len=128)
VARIANTS = {"2017 (GPT)": {}, "+ RoPE": dict(positional="rope"), "+ RMSNorm": dict(norm="rmsnorm"),
            "+ SwiGLU": dict(activation="swiglu"), "+ GQA (2 kv heads)": dict(n_kv_heads=2),
            "+ MQA (1 kv head)": dict(n_kv_heads=1),
            "all: Llama-style": dict(positional="rope", norm="rmsnorm", activation="swiglu", n_kv_heads=2,
                                     bias=False)}


def parts(model):
    """Parameters by part: embeddings, attention (Q, K, V, out), feed-forward, norms."""
    out = collections.Counter()
    for name, p in model.named_parameters():
        part = ("embeddings" if name.startswith("embed") else "attention" if "self_attn" in name
                else "feed-forward" if ".ff." in name else "norms")
        out[part] += p.numel()
    return out


models = {}
print(f"{'variant':<20}{'embeddings':>11}{'attention':>11}{'feed-fwd':>10}{'norms':>7}{'total':>9}"
      f"{'KV bytes/token':>16}")
for label, change in VARIANTS.items():
    models[label] = model = qkv.DecoderOnly(qkv.ModelConfig(**BASE, **change))
    p = parts(model)
    print(f"{label:<20}{p['embeddings']:>11,}{p['attention']:>11,}{p['feed-forward']:>10,}{p['norms']:>7,}"
          f"{model.num_parameters():>9,}{cache_bytes_per_token(model):>16,.0f}")

# %% [markdown]
# Read it by hand, for the 2017 row. Embeddings: 69 × 64 = 4,416 (the output layer shares them:
# `tie_embeddings`). Attention, per layer: four 64 × 64 matrices and four biases of 64,
# 4 × 4,160 = 16,640. Feed-forward: 64 × 256 + 256 + 256 × 64 + 64 = 33,088. Norms: two per
# layer plus a final one (pre-LN), each a gain and a bias of 64. Total 4,416 + 2 × (16,640 +
# 33,088 + 256) + 128 = 104,512.
#
# RoPE adds nothing (a rotation has no parameters, and sinusoidal vectors had none either);
# RMSNorm drops the norms' biases; SwiGLU changes the feed-forward by a few parameters
# (3 × 64 × 171 against 2 × 64 × 256); GQA shrinks the key and value projections from 64 to 32 (or
# 16) outputs.
#
# ### The key/value cache, in bytes
#
# While generating, every layer keeps a key and a value for every past token (notebook 09):
#
#     bytes per token = 2 (key and value) × layers × key/value heads × d_head × bytes per number
#
# For the 2017 model: 2 × 2 × 4 × 16 × 4 (float32) = 1,024 bytes, what the table read off a real
# cache. GQA with 2 key/value heads of 4 halves it; MQA (one) quarters it: the saving is
# n_heads / n_kv_heads. In a small model it is nothing; in a large one it decides how many
# tokens fit in memory:

# %%
def kv_bytes(layers, kv_heads, d_head, bytes_per_number=2):
    return 2 * layers * kv_heads * d_head * bytes_per_number


for label, kv_heads in [("multi-head, 64 kv heads", 64), ("GQA, 8 kv heads (as Llama 2 70B)", 8)]:
    per_token = kv_bytes(layers=80, kv_heads=kv_heads, d_head=128)       # Llama 2 70B's shape, float16
    print(f"{label:<34} {per_token / 1024:>6,.0f} KiB per token, "
          f"{per_token * 4096 / 2**30:>5.2f} GiB for a 4096-token context")

for label in ["+ GQA (2 kv heads)", "+ MQA (1 kv head)"]:                 # the small models: checked
    cfg = models[label].cfg
    by_hand = kv_bytes(cfg.n_decoder_layers, cfg.kv_heads, cfg.d_head, bytes_per_number=4)
    assert by_hand == cache_bytes_per_token(models[label])
    print(f"{label}: {by_hand} bytes per token by hand, as measured; "
          f"{cache_bytes_per_token(models['2017 (GPT)']) / by_hand:.0f}x less than multi-head")

# %% [markdown]
# Llama 2 70B has 64 query heads but 8 key/value heads: its cache holds 8 times fewer bytes per
# token than the same model with multi-head attention, 1.25 GiB instead of 10 GiB for a 4096-token
# context (per sequence, in 16-bit numbers). That is what GQA buys: memory and the bandwidth to
# read it at every step, for a small cost in quality.
#
# ### Exercise 10.1: the KV cache of a config
#
# How many bytes per token does the key/value cache of `EXERCISE_CONFIG` hold (float32, 4 bytes)?
# Write the number, or an expression that computes it from the config's numbers (not from a model).

# %%
print(EXERCISE_CONFIG.n_decoder_layers, "layers,", EXERCISE_CONFIG.n_heads, "heads,", EXERCISE_CONFIG.n_kv_heads,
      "key/value heads, d_model", EXERCISE_CONFIG.d_model)

kv_bytes_per_token = ...  # your code: 2 * layers * kv heads * d_head * 4

check_10_1(kv_bytes_per_token)

# %% [markdown]
# ### Exercise 10.2: count the parameters by hand
#
# Same config: 69 tokens, d_model 64, 4 heads with 2 key/value heads, 2 layers, SwiGLU with
# d_ff 192 (hidden width 2/3 × 192 = 128), RMSNorm (a gain, no bias) with pre-LN (so a final norm
# too), no biases anywhere, tied embeddings, RoPE. How many parameters?

# %%
n_parameters = ...  # your code: embeddings + 2 * (attention + feed-forward + 2 norms) + final norm

check_10_2(n_parameters)

# %% [markdown]
# ## Measured: the ladder from 2017 to a Llama
#
# Do these changes help? `qkv history --modern` trains the 2017 GPT, each change alone, and all of
# them together on Tiny Shakespeare, with the same seed, data order and CPU-time budget (75 s of
# CPU each; `--quick` for a few minutes in all). Too long for a notebook; here is the run recorded in
# the repository (`recipes/results/shakespeare_modern.json`, 2 cores; its date and machine are in the file):

# %%
measured = json.loads(Path("../../recipes/results/shakespeare_modern.json").read_text())["variants"]
labels = [v["label"].split(" (")[0] for v in measured.values()]
fig, (left, right) = plt.subplots(1, 2, figsize=(9, 2.8), sharey=True)
losses = [v["valid_loss"] for v in measured.values()]
left.barh(labels, losses, color="tab:blue")
left.set_xlim(min(losses) - 0.05, max(losses) + 0.02)
left.set_xlabel("validation loss (nats/char), lower is better")
right.barh(labels, [v["kv_cache_bytes_per_token"] for v in measured.values()], color="tab:gray")
right.set_xlabel("KV cache bytes per token")
left.invert_yaxis()
fig.tight_layout()
for v in measured.values():
    print(f"{v['label']:<48} {v['parameters']:>8,} parameters  loss {v['valid_loss']:.3f}  {v['steps']:>5} steps")

# %% [markdown]
# At this size and budget (one seed; differences under about 0.04 are noise): RoPE is the biggest
# single gain, SwiGLU helps a little, GQA halves the cache for almost nothing, RMSNorm came out
# worse here (written as a formula it is slower on a CPU than PyTorch's fused LayerNorm, so it got
# fewer steps), and all together, a Llama, is best. docs/language_model.md discusses the run.
#
# One more change is in the optimizer, not the model: **Muon** (Jordan et al., 2024) updates each
# weight matrix by an orthogonalised momentum, so every direction of the matrix moves by about as
# much. In qkv it is `train.optimizer = "muon"` (`qkv.train(..., optimizer="muon")`): Muon for
# the attention and feed-forward matrices, AdamW for the embeddings, norms and biases
# (docs/training.md says what has been measured of it so far).
#
# **To remember.** A GPT is the Transformer's decoder alone, trained to predict the next token.
# Since 2017 the recipe changed in details that each have a reason: relative positions in every
# layer (RoPE), a cheaper norm (RMSNorm), a gated feed-forward (SwiGLU), and fewer key/value heads
# (GQA), which cuts the memory of generation by n_heads / n_kv_heads.

# %% [markdown]
# ## Solutions
#
# Each solution goes through the same check as the exercise.

# %%
layers, kv_heads, d_head = 2, 2, 64 // 4
kv_bytes_per_token = 2 * layers * kv_heads * d_head * 4               # keys and values, float32: 512

check_10_1(kv_bytes_per_token)

# %%
embeddings = 69 * 64                                          # tied: the output layer reuses them
attention = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64            # Q, K and V (2 heads of 16), out; no biases
feed_forward = 3 * 64 * 128                                   # W1, W3: 64 -> 128, W2: 128 -> 64
norm = 64                                                     # RMSNorm: a gain only
n_parameters = embeddings + 2 * (attention + feed_forward + 2 * norm) + norm

check_10_2(n_parameters)
