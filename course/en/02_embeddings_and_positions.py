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
# # 2. Embeddings and positions
#
# The tokenizer gave each token an id. The model's first layer turns each id into a vector of
# `d_model` numbers, its **embedding**, and adds a vector that says **where** in the sentence the
# token stands, its **positional encoding**. Everything the Transformer does afterwards starts
# from these sums.
#
# We look at both in the trained model of the course (dates such as `Tuesday, March 5, 2019` to
# `2019-03-05`), compute the paper's positional encoding by hand and check it against qkv's, and
# then meet the two other ways of giving positions: learned vectors and rotations (RoPE).

# %%
import math

import matplotlib.pyplot as plt
import torch

import qkv

torch.set_grad_enabled(False)          # nothing is trained here

run = qkv.train("dates", out="../runs/dates", steps=400, quiet=True, reuse=True)
tok = run.src_tokenizer
embed = run.model.src_embed            # token embedding + positional encoding (shared by encoder and decoder here)
E = embed.token.weight                 # (vocabulary, d_model): one row per id
d_model = run.cfg.d_model
print(run)
print("E:", tuple(E.shape))


# %% [markdown]
# The checks of the exercises are defined here, so that the Solutions section at the end can run
# them too (reading them gives the answers away).

# %%
def check_2_1(answer):
    if answer is ...:
        print("Exercise 2.1 waits for your answer: a row of E / 연습 2.1: E의 한 행을 넣으세요")
        return
    assert torch.is_tensor(answer) and answer.shape == (d_model,), \
        f"Not yet: an embedding is one row of E, shape ({d_model},) / 아직 아닙니다: 임베딩은 E의 한 행입니다"
    assert torch.equal(answer, E[tok.token_to_id("7")]), \
        'Not yet: take the row whose index is the id of "7" / 아직 아닙니다: "7"의 id 번째 행입니다'
    print('Right: the embedding of "7" is row', tok.token_to_id("7"), "of E / 정답입니다")


def check_2_2(answer):
    if answer is ...:
        print("Exercise 2.2 waits for your answer: the angles / 연습 2.2: 각도를 계산해 넣으세요")
        return
    assert torch.is_tensor(answer) and answer.shape == (n_positions, d_model // 2), \
        f"Not yet: one angle per position and pair, shape ({n_positions}, {d_model // 2}) / 아직 아닙니다: 모양을 확인하세요"
    table = torch.zeros(n_positions, d_model)
    table[:, 0::2], table[:, 1::2] = torch.sin(answer), torch.cos(answer)
    assert torch.allclose(table, embed.position(n_positions), atol=1e-4), \
        "Not yet: angle = pos / 10000^(2i / d_model) / 아직 아닙니다: 식을 다시 보세요"
    print("Right: your table is the model's own positional encoding / 정답: 모델의 위치 인코딩과 같습니다")


def check_2_3(answer):
    if answer is ...:
        print("Exercise 2.3 waits for your answer: a score / 연습 2.3: 점수를 계산해 넣으세요")
        return
    right = rotate(q, 10) @ rotate(k, 8)
    assert torch.allclose(torch.as_tensor(answer, dtype=right.dtype), right, atol=1e-4), \
        "Not yet: rotate q by position 10 and k by position 8, then take their dot product / 아직 아닙니다"
    near = rotate(q, 3) @ rotate(k, 1)
    print(f"Right: {float(right):.4f}, the same as at positions 3 and 1 ({float(near):.4f}): "
          f"only the distance counts / 정답: 거리만 중요합니다")


# %% [markdown]
# ## 1. An embedding is a row of a table
#
# `E` has one row per id. Embedding an id means taking its row; written as algebra, multiplying a
# one-hot vector by `E`, which is why the embedding is a layer with weights that training adjusts
# like any other.

# %%
date = "Tuesday, March 5, 2019"
ids = torch.tensor(tok.encode(date))
one_hot = torch.nn.functional.one_hot(ids, num_classes=tok.vocab_size).float()   # (tokens, vocabulary)
print(torch.allclose(one_hot @ E, E[ids]), "- one-hot @ E is the same as picking rows:", tuple(E[ids].shape))
print("the model then scales them by sqrt(d_model) =", embed.scale)

# %% [markdown]
# ### Exercise 2.1
#
# Take the embedding of the character `"7"`: its row of `E`. (`tok.token_to_id` gives an id.)

# %%
row_7 = ...  # your code: the row of E for the id of "7"

# %%
check_2_1(row_7)

# %% [markdown]
# ## 2. What training put in the table
#
# Before training the rows are random. After training, tokens that play similar roles tend to get
# similar vectors, because the rest of the network treats them alike. Cosine similarity measures
# it: 1 for the same direction, 0 for unrelated ones.

# %%
symbols = [t for t in tok.vocab[4:] if t.strip()]                # the characters, without special tokens and space
rows = E[[tok.token_to_id(s) for s in symbols]]
unit = rows / rows.norm(dim=1, keepdim=True)
cosine = unit @ unit.T                                            # (symbols, symbols)


def neighbours(symbol, n=4):
    i = symbols.index(symbol)
    order = cosine[i].argsort(descending=True)[1:n + 1]           # [0] is the symbol itself
    return [f"{symbols[j]} {cosine[i, j]:.2f}" for j in order]


for s in ["0", "5", "9", "M", "a", "y", ",", "/"]:
    print(f"{s!r:5} nearest: {neighbours(s)}")

# %%
digits = [s for s in symbols if s.isdigit()]
letters = [s for s in "aeiouMTJ" if s in symbols]
picked = digits + letters
index = [symbols.index(s) for s in picked]
fig, ax = plt.subplots(figsize=(5.2, 4.4))
im = ax.imshow(cosine[index][:, index], cmap="RdBu_r", vmin=-1, vmax=1)
ax.set_xticks(range(len(picked)), picked)
ax.set_yticks(range(len(picked)), picked)
ax.set_title("Cosine similarity of trained embeddings")
fig.colorbar(im, ax=ax, shrink=0.8)
plt.show()


def group_means(table):
    """Mean cosine similarity between two different digits, and between a digit and a letter."""
    unit = table[[tok.token_to_id(s) for s in picked]]
    unit = unit / unit.norm(dim=1, keepdim=True)
    sim, n = unit @ unit.T, len(digits)
    return float(sim[:n, :n][~torch.eye(n, dtype=torch.bool)].mean()), float(sim[:n, n:].mean())


fresh = qkv.EncoderDecoder(run.cfg).src_embed.token.weight          # the same model, untrained
for name, table in (("trained", E), ("untrained", fresh)):
    digit_digit, digit_letter = group_means(table)
    print(f"{name:9}: mean similarity digit-digit {digit_digit:+.2f}, digit-letter {digit_letter:+.2f}")

# %% [markdown]
# Read the printed neighbours and means, measured on this run, and compare them with the same
# model before training, where any two rows are unrelated (similarities near 0). Digits are
# copied to the output almost unchanged while letters are read as parts of month and weekday
# names, so the model has reason to pull the digits together and away from the letters; a small
# model trained for a minute has done some of that, not all.
#
# ## 3. Positions: the sinusoidal encoding
#
# Attention on its own sees a *set*: shuffle the tokens and each one gets the same result, only
# shuffled. So the paper adds to every embedding a vector that depends on the position $pos$
# alone, made of sines and cosines of many wavelengths:
#
# $$PE_{(pos,\,2i)} = \sin\!\big(pos / 10000^{2i/d_{model}}\big), \qquad PE_{(pos,\,2i+1)} = \cos\!\big(pos / 10000^{2i/d_{model}}\big)$$
#
# Each pair of dimensions $(2i, 2i+1)$ is a clock hand turning at its own speed: fast for the first
# pairs, very slow for the last ones. The model's module gives the table for the first positions:

# %%
n_positions = 50
pe_model = embed.position(n_positions)                    # (positions, d_model), no parameters
print(tuple(pe_model.shape), "- trainable parameters in it:", sum(p.numel() for p in embed.position.parameters()))

# %% [markdown]
# ### Exercise 2.2: the table by hand
#
# Compute the angles $pos / 10000^{2i/d_{model}}$ for every position (rows) and every pair $i$
# (columns). `positions` and `two_i` are ready; broadcasting a column against a row gives the
# whole (50, d_model / 2) grid at once. The check builds the sines and cosines from your angles and
# compares them with the model's table.

# %%
positions = torch.arange(n_positions, dtype=torch.float64)[:, None]   # (50, 1)
two_i = torch.arange(0, d_model, 2, dtype=torch.float64)               # (64,): 0, 2, 4, ...
angle = ...  # your code: positions / 10000 ** (two_i / d_model)

# %%
check_2_2(angle)

# %% [markdown]
# The table as a picture (rows: positions, columns: dimensions), and the similarity of every
# position's vector with every other's:

# %%
pe = embed.position(n_positions)
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
left.imshow(pe, cmap="RdBu_r", aspect="auto", vmin=-1, vmax=1)
left.set(xlabel="dimension", ylabel="position", title="Sinusoidal positional encoding")
right.imshow(pe @ pe.T, cmap="viridis")
right.set(xlabel="position", ylabel="position", title="PE(p) · PE(q)")
plt.show()
dots = pe @ pe.T
print("the dot product depends only on the distance:",
      torch.allclose(dots[3, 8], dots[20, 25]), torch.allclose(dots[0, 7], dots[30, 37]))

# %% [markdown]
# Left: the first dimensions change fast from one position to the next, the last ones hardly at
# all, so every position gets its own pattern. Right: $PE(p) \cdot PE(q)$ is largest on the
# diagonal and falls off with distance, the same way everywhere, because
# $\sin a \sin b + \cos a \cos b = \cos(a - b)$: it depends on $p - q$ only.
#
# The paper chose this form because moving $k$ positions is the same linear map for every
# position: each pair $(\sin, \cos)$ turns by the angle $k / 10000^{2i/d}$. Check it: the map
# for $k = 5$, built once, carries position 0 to 5, 10 to 15, and 30 to 35.

# %%
def shift(k):
    """The (d_model, d_model) rotation that moves any position's encoding k positions further."""
    w = 1.0 / 10000 ** (torch.arange(0, d_model, 2) / d_model)     # each pair's speed
    R = torch.zeros(d_model, d_model)
    c, s = torch.cos(k * w), torch.sin(k * w)
    R[0::2, 0::2], R[0::2, 1::2] = torch.diag(c), torch.diag(s)      # sin(a+b) = sin a cos b + cos a sin b
    R[1::2, 0::2], R[1::2, 1::2] = torch.diag(-s), torch.diag(c)     # cos(a+b) = cos a cos b - sin a sin b
    return R


R5 = shift(5)
print([torch.allclose(R5 @ pe[p], pe[p + 5], atol=1e-4) for p in (0, 10, 30)])

# %% [markdown]
# ## 4. Learned positions
#
# The other choice of the paper (it found both work as well), and the one of BERT and GPT-2: one
# trainable vector per position, starting random, adjusted by training like the embeddings.
# `positional="learned"` in qkv's `ModelConfig`:

# %%
cfg = qkv.ModelConfig(src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size, d_model=d_model,
                      n_heads=4, positional="learned", max_len=64)
learned = qkv.EncoderDecoder(cfg).src_embed.position
P = learned(n_positions)                                  # (50, 128), random before training
print("trainable parameters:", learned.weight.numel(), "=", cfg.max_len, "positions x", d_model)
fig, ax = plt.subplots(figsize=(3.8, 3.4))
ax.imshow(P @ P.T, cmap="viridis")
ax.set(title="learned, before training: P(p) · P(q)", xlabel="position", ylabel="position")
plt.show()
try:
    learned(cfg.max_len + 1)
except qkv.ShapeError as error:
    print("position", cfg.max_len, "does not exist:", error)

# %% [markdown]
# Before training, the positions know nothing of their order (only the diagonal stands out: each
# vector with itself). Training has to discover that position 7 is next to position 8, from the
# data, and a learned table has no vector at all for positions past `max_len`. The sinusoids give
# both for free; learned vectors can fit the data better where data is plentiful.
#
# ## 5. Rotary positions (RoPE)
#
# Most language models since 2021 (Su et al., "RoFormer"; Llama) add nothing to the embedding.
# Instead, inside every attention layer, they **rotate** each query and key by its position: pair
# $(x_{2i}, x_{2i+1})$ turns by the angle $pos \cdot \theta^{-2i/d_{head}}$, the sinusoid's clock
# again. A rotation keeps lengths, and the dot product of a query turned by $m$ and a key turned
# by $n$ depends only on $m - n$: attention scores see relative positions directly.
#
# Here is the rotation by hand:

# %%
d_head = 32


def rotate(x, pos, theta=10000.0):
    """RoPE for one vector x (d_head,) at position pos: turn every pair (x_2i, x_2i+1)."""
    angle = pos * theta ** (-torch.arange(0, d_head, 2) / d_head)     # (d_head/2,)
    x1, x2 = x[0::2], x[1::2]
    out = torch.empty_like(x)
    out[0::2] = x1 * torch.cos(angle) - x2 * torch.sin(angle)
    out[1::2] = x1 * torch.sin(angle) + x2 * torch.cos(angle)
    return out


# the same in qkv: a model with positional="rope" has it in each self-attention
rope_cfg = qkv.ModelConfig(src_vocab_size=100, tgt_vocab_size=100, arch="decoder-only", d_model=128, n_heads=4,
                           positional="rope", max_len=64)
rope = qkv.DecoderOnly(rope_cfg).decoder.layers[0].self_attn.rope
x = torch.randn(1, 1, 20, d_head)                              # (batch, heads, positions, d_head)
mine = torch.stack([rotate(x[0, 0, p], p) for p in range(20)])
print("rotate() is qkv's RoPE:", torch.allclose(mine, rope(x)[0, 0], atol=1e-5))
print("lengths kept:", torch.allclose(mine.norm(dim=-1), x[0, 0].norm(dim=-1), atol=1e-5))

# %% [markdown]
# ### Exercise 2.3: only the distance counts
#
# With `rotate`, compute the attention score (dot product) of query `q` at position 10 and key
# `k` at position 8. The check compares it with the score at positions 3 and 1.

# %%
q, k = torch.randn(d_head), torch.randn(d_head)
score_10_8 = ...  # your code: rotate q to position 10, k to position 8, dot product

# %%
check_2_3(score_10_8)

# %% [markdown]
# The same for every pair of positions: the score of `q` at row $m$ and `k` at column $n$ is
# constant along each diagonal ($m - n$ fixed).

# %%
scores = torch.tensor([[float(rotate(q, m) @ rotate(k, n)) for n in range(32)] for m in range(32)])
fig, ax = plt.subplots(figsize=(3.8, 3.4))
ax.imshow(scores, cmap="RdBu_r")
ax.set(title="RoPE: score of q at m, k at n", xlabel="key position n", ylabel="query position m")
plt.show()

# %% [markdown]
# Three answers to "where is this token?": the sinusoid (added once, fixed, relative offsets are
# rotations), learned vectors (added once, trained, limited to `max_len`) and RoPE (a rotation of
# queries and keys in every layer, so scores depend on the distance alone). The next notebook
# takes these vectors into attention.
#
# ## Solutions

# %%
check_2_1(E[tok.token_to_id("7")])

# %%
check_2_2(positions / 10000 ** (two_i / d_model))

# %%
check_2_3(rotate(q, 10) @ rotate(k, 8))
