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
# # 3. Attention by hand
#
# The whole of attention fits in one line of the paper:
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{d_k}}\right) V$$
#
# In this notebook you compute that line yourself, one step at a time, with plain tensor
# operations: no `nn.Module`, no attention function. The numbers are not made up: you take the
# weights of a trained model and a real sentence, and after every step you compare your result
# with the tensor the model itself recorded when it read that sentence. When they agree, you know
# that what you wrote *is* what the model does.
#
# The model turns dates into ISO form: `Tuesday, March 5, 2019` → `2019-03-05`. It reads the
# sentence one character at a time. (The first run of this cell trains it, about a minute on a
# laptop; every notebook of the course shares that run and loads it after.)

# %%
import math

import matplotlib.pyplot as plt
import torch

import qkv

torch.set_grad_enabled(False)          # no training here: no gradients needed

run = qkv.train("dates", out="../runs/dates", steps=400, quiet=True, reuse=True)
print(run)
print(run.translate("Tuesday, March 5, 2019"))

# %% [markdown]
# ## What the model recorded
#
# `run.explain(text, target)` runs one forward pass over the sentence (the source) and a target,
# and keeps every tensor it computed in `.trace`. `trace.attention(kind, layer)` is one attention
# of that pass: `"enc"` is the encoder's self-attention, `"dec"` the decoder's masked
# self-attention, `"cross"` the decoder looking at the encoder. Its fields are the steps of the
# formula, for every head at once: `q`, `k`, `v`, `scores` ($QK^\top$), `scaled`
# ($/\sqrt{d_k}$), `mask`, `weights` (after the softmax) and `mixed` (weights × V).

# %%
text, target = "Tuesday, March 5, 2019", "2019-03-05"
trace = run.explain(text, target=target).trace
enc = trace.attention("enc", layer=0)           # the encoder's first self-attention

tokens = enc.key_tokens
print(len(tokens), "tokens:", tokens)
print("q:", tuple(enc.q.shape), " scores:", tuple(enc.scores.shape), " weights:", tuple(enc.weights.shape))


# %% [markdown]
# Shapes read as (heads, tokens, ...): this model has 4 heads, the sentence has 22 characters,
# and each head works in $d_k$ = `d_head` = 32 dimensions (the model's width, 128, split in 4).
#
# Two small helpers: `same` compares your tensor with the recorded one, `heatmap` draws attention
# weights (rows: queries, columns: keys). The checks of the exercises are defined here too, so the
# Solutions section at the end can run them.

# %%
def same(mine, recorded, name):
    """Compare a tensor computed by hand with the model's own."""
    assert mine.shape == recorded.shape, f"{name}: shape {tuple(mine.shape)}, expected {tuple(recorded.shape)} / 모양이 다릅니다"
    assert torch.allclose(mine, recorded, atol=1e-4, rtol=1e-4), f"{name}: values differ / 값이 다릅니다"
    print(f"{name} {tuple(mine.shape)} = the model's own / 모델의 값과 같음")


def heatmap(weights, queries, keys, title, ax=None):
    """Attention weights as a picture: row = query, column = key, darker = more weight."""
    ax = ax or plt.subplots(figsize=(5.5, 5))[1]
    ax.imshow(weights, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(keys)), keys, fontsize=8)
    ax.set_yticks(range(len(queries)), queries, fontsize=8)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    ax.set_title(title, fontsize=10)
    return ax


def check_3_1(scaled):
    if scaled is ...:
        print("Exercise 3.1 waits for your answer / 연습 3.1이 답을 기다립니다")
        return
    expected = enc.scaled[h]
    if torch.allclose(scaled, enc.scores[h] / math.sqrt(run.cfg.d_model), atol=1e-4):
        raise AssertionError("Not yet: divide by sqrt(d_head) = sqrt(32), not sqrt(d_model) / 아직: sqrt(d_model)이 아니라 sqrt(d_head)로 나누세요")
    assert torch.allclose(scaled, expected, atol=1e-4), "Not yet: Q @ K.T, then / math.sqrt(d) / 아직: Q @ K.T를 구한 뒤 math.sqrt(d)로 나누세요"
    print("Exercise 3.1 correct / 연습 3.1 정답")


def check_3_2(weights):
    if weights is ...:
        print("Exercise 3.2 waits for your answer / 연습 3.2가 답을 기다립니다")
        return
    expected = enc.weights[h]
    assert weights.shape == expected.shape, "Not yet: one row per query, one column per key / 아직: 행은 쿼리, 열은 키"
    assert torch.allclose(weights.sum(-1), torch.ones(len(tokens)), atol=1e-4), \
        "Not yet: each row must sum to 1 (softmax over dim=-1, the keys) / 아직: 각 행의 합이 1이어야 합니다 (dim=-1)"
    assert torch.allclose(weights, expected, atol=1e-4), "Not yet: torch.softmax(scaled, dim=-1) / 아직: torch.softmax(scaled, dim=-1)"
    print("Exercise 3.2 correct / 연습 3.2 정답")


def check_3_3(attention):
    dec = trace.attention("dec", layer=0)
    result = attention(dec.q[h], dec.k[h], dec.v[h], dec.mask)
    if result is None:
        print("Exercise 3.3 waits for your answer / 연습 3.3이 답을 기다립니다")
        return
    assert isinstance(result, tuple) and len(result) == 2, "Not yet: return weights, output / 아직: weights, output 두 개를 돌려주세요"
    weights, output = result
    assert float(weights.triu(1).abs().sum()) == 0.0, \
        "Not yet: keys the mask forbids must get weight 0 (masked_fill with -inf before softmax) / 아직: 마스크된 키의 가중치는 0이어야 합니다"
    assert torch.allclose(weights, dec.weights[h], atol=1e-4), \
        "Not yet: the weights differ from the model's (scaled by sqrt(d)? softmax over dim=-1?) / 아직: 가중치가 모델과 다릅니다 (sqrt(d)로 나눴나요? dim=-1?)"
    assert torch.allclose(output, dec.mixed[h], atol=1e-4), "Not yet: the output is weights @ V / 아직: 출력은 weights @ V입니다"
    print("Exercise 3.3 correct / 연습 3.3 정답")


# %% [markdown]
# ## Step 0: what attention reads
#
# Attention does not read the tokens, it reads vectors: one row of `d_model` = 128 numbers per
# token. In the first layer these are the token embeddings plus the positions (notebook 02). This
# model puts a layer normalization *before* each attention (pre-LN, as GPT-2 and most models
# since), so the attention of layer 0 reads `LayerNorm(embeddings + positions)`. The layer and
# its weights are plain attributes of `run.model`.

# %%
layer = run.model.encoder.layers[0]
stream = trace.src.sum                   # token embedding * sqrt(d_model) + position, (22, 128)
x = layer.attn_block.norm(stream)        # pre-LN: attention reads the normalized stream
same(x, enc.x, "x")

# %% [markdown]
# ## Step 1: queries, keys and values of one head
#
# Every head has its own three matrices $W^Q, W^K, W^V$ of shape (`d_model`, `d_head`):
# $Q = x W^Q$, $K = x W^K$, $V = x W^V$ (this model also adds a bias to each). In PyTorch the
# three projections of all 4 heads are stored as one `nn.Linear` each, whose weight is
# (out, in) = (128, 128) and computes `x @ weight.T + bias`; head `h` owns the output rows
# `h*32 : (h+1)*32`. Cut them out:

# %%
attn = layer.self_attn
h = 3                                    # the head we follow
d = attn.d_head                          # 32
rows = slice(h * d, (h + 1) * d)

W_Q, b_Q = attn.q_proj.weight[rows].T, attn.q_proj.bias[rows]     # (128, 32), (32,)
W_K, b_K = attn.k_proj.weight[rows].T, attn.k_proj.bias[rows]
W_V, b_V = attn.v_proj.weight[rows].T, attn.v_proj.bias[rows]

Q = x @ W_Q + b_Q                        # (22, 32): what each token is looking for
K = x @ W_K + b_K                        # (22, 32): what each token offers to be found by
V = x @ W_V + b_V                        # (22, 32): what each token hands over when found
same(Q, enc.q[h], "Q")
same(K, enc.k[h], "K")
same(V, enc.v[h], "V")

# %% [markdown]
# ## Step 2: scores, $QK^\top$
#
# Row $i$ of $Q$ is the query of token $i$; row $j$ of $K$ is the key of token $j$. Their dot
# product says how well they match. All pairs at once is one matrix product:

# %%
scores = Q @ K.T                         # (22 queries, 22 keys)
same(scores, enc.scores[h], "scores")
print("query 'M' (index 9) against its first 5 keys:", scores[9, :5].numpy().round(2))

# %% [markdown]
# ## Step 3: why divide by $\sqrt{d_k}$
#
# A dot product of two vectors of $d$ random numbers (mean 0, variance 1) has variance $d$: the
# wider the head, the larger the scores. Large scores make the softmax of the next step nearly
# one-hot, and a nearly one-hot softmax passes almost no gradient back. Dividing by $\sqrt{d}$
# brings the spread back to about 1, whatever the head's size:

# %%
g = torch.Generator().manual_seed(0)
for dim in (4, 32, 512):
    q, k = torch.randn(10_000, dim, generator=g), torch.randn(10_000, dim, generator=g)
    dots = (q * k).sum(-1)
    print(f"d = {dim:3d}:  std of q.k = {dots.std():6.2f}   std of q.k / sqrt(d) = {(dots / math.sqrt(dim)).std():.2f}")

# %% [markdown]
# ### Exercise 3.1
#
# Compute the scaled scores $QK^\top / \sqrt{d_k}$ of head `h`, from `Q` and `K` above.
# Careful: which $d$? (The model is 128 wide; each head is `d` = 32 wide.)

# %%
scaled = ...  # your code / 직접 작성: Q @ K.T / math.sqrt(...)

check_3_1(scaled)

# %% [markdown]
# ## Step 4: the mask
#
# Before the softmax, every key a query may not look at gets the score $-\infty$, so its weight
# becomes exactly 0. In the encoder nothing is hidden from a single sentence: its mask is all
# `True` ("may attend"). Masks matter for padding in a batch and in the decoder, which must not see
# the future; notebook 05 is about them. Here the step changes nothing:

# %%
print("mask", tuple(enc.mask.shape), "all True:", bool(enc.mask.all()))
masked = enc.scaled[h].masked_fill(~enc.mask, float("-inf"))    # the model's scaled scores, from here on

# %% [markdown]
# ## Step 5: softmax
#
# Softmax turns each row of scores into weights that are positive and add up to 1:
# $w_{ij} = e^{s_{ij}} / \sum_{j'} e^{s_{ij'}}$. It runs over the **keys**: for every query, how
# to share its attention among all the tokens.
#
# ### Exercise 3.2
#
# Compute the attention weights of head `h` from `masked`, with `torch.softmax`.

# %%
weights = ...  # your code / 직접 작성: torch.softmax(masked, dim=...)

check_3_2(weights)

# %% [markdown]
# Here are the weights of head 3 as a picture. Each row is a character asking; the dark cells are
# the characters it listens to. Look at the row of `M`, and at the rows of the characters around
# the day `5`.

# %%
heatmap(enc.weights[h], tokens, tokens, f"encoder layer 0, head {h}: softmax(QK^T/sqrt(d))")
plt.show()

# %% [markdown]
# ## Step 6: mix the values
#
# The output of the head for token $i$ is the weighted average of the value vectors,
# $\sum_j w_{ij} V_j$: once more a matrix product.

# %%
mixed = enc.weights[h] @ V               # (22, 32): one new vector per token
same(mixed, enc.mixed[h], "weights @ V")
top = enc.weights[h][9].topk(3)
print("query 'M' listens most to", [(tokens[j], round(float(w), 2)) for w, j in zip(top.values, top.indices)])

# %% [markdown]
# When a query puts nearly all its weight on one key, its output is nearly a copy of that key's
# value vector: attention moves information from one position to another. Here the `M` of March
# fetches what the value of its top key carries (in the run this course trains, the `y` that ends
# the weekday).
#
# That is all of one head: four matrix products, a division, a mask and a softmax. The other
# three heads do the same with their own $W^Q, W^K, W^V$, in parallel; notebook 04 puts the
# heads together.
#
# ## The decoder: the same, with a mask that matters
#
# The decoder's self-attention reads the target, `<bos> 2 0 1 9 - 0 3 - 0 5`, while it is being
# written. Position $i$ may only look at positions $0..i$: the mask is lower-triangular.

# %%
dec = trace.attention("dec", layer=0)
print(dec.query_tokens)
print(dec.mask.int())


# %% [markdown]
# ### Exercise 3.3
#
# Write the whole formula as one function: given `Q`, `K`, `V` of one head and a boolean `mask`
# (True = may attend), return the attention weights and the output. The check runs it on the
# decoder's head `h` and compares with what the model recorded. (Hint: `scores.masked_fill(~mask,
# float("-inf"))`.)

# %%
def attention(Q, K, V, mask):
    ...  # your code / 직접 작성: return weights, weights @ V


check_3_3(attention)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
heatmap(dec.mask.float(), dec.query_tokens, dec.key_tokens, "decoder layer 0: mask (True = may attend)", axes[0])
heatmap(dec.weights[h], dec.query_tokens, dec.key_tokens, f"decoder layer 0, head {h}: weights", axes[1])
plt.tight_layout()
plt.show()

# %% [markdown]
# Everything above the diagonal is exactly 0: no position reads a character that comes after it.
#
# To see all of these steps with their numbers on one page, for any sentence, layer and head:
# `run.explain(text, layer=0, head=1)` (in Jupyter it shows itself inline; `.save("page.html")`
# writes it).
#
# ## Solutions
#
# Each solution goes through the same check as the exercise.

# %%
check_3_1(Q @ K.T / math.sqrt(d))

check_3_2(torch.softmax(masked, dim=-1))


def attention_solution(Q, K, V, mask):
    scores = Q @ K.T / math.sqrt(Q.size(-1))
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return weights, weights @ V


check_3_3(attention_solution)
