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
# # 4. Multi-head attention
#
# One head gives every token one way of looking at the others: one softmax, one set of weights.
# But a token may need several things at once: the character just before it, the other characters
# of its word, the comma that ends a field. Multi-head attention runs $H$ heads side by side, each
# with its own $W^Q_h, W^K_h, W^V_h$ in a smaller space of $d_k = d_{model}/H$ dimensions, then
# glues their outputs together and mixes them with one more matrix, $W^O$:
#
# $$\mathrm{MultiHead}(x) = \mathrm{Concat}(\mathrm{head}_1, \dots, \mathrm{head}_H)\, W^O,
# \qquad \mathrm{head}_h = \mathrm{softmax}\!\left(\frac{Q_h K_h^\top}{\sqrt{d_k}}\right) V_h$$
#
# In this notebook you look at what the 4 heads of the trained dates model do, compute all of
# them at once, and rebuild the attention block's output from the heads and $W^O$, checking every
# result against the model's own recorded tensors.

# %%
import math

import matplotlib.pyplot as plt
import torch

import qkv

torch.set_grad_enabled(False)          # no training here: no gradients needed

run = qkv.train("dates", out="../runs/dates", steps=400, quiet=True, reuse=True)
print(run)

text, target = "Tuesday, March 5, 2019", "2019-03-05"
trace = run.explain(text, target=target).trace
enc = trace.attention("enc", layer=1)           # the encoder's second self-attention, all heads
H, S, d = enc.q.shape                           # heads, source tokens, d_head
tokens = enc.key_tokens
print(f"{H} heads, {S} tokens, d_head = {d}, d_model = {H * d}")


# %% [markdown]
# Helpers, and the checks of the exercises (the Solutions section at the end runs them too):

# %%
def same(mine, recorded, name):
    """Compare a tensor computed by hand with the model's own."""
    assert mine.shape == recorded.shape, f"{name}: shape {tuple(mine.shape)}, expected {tuple(recorded.shape)} / 모양이 다릅니다"
    assert torch.allclose(mine, recorded, atol=1e-4, rtol=1e-4), f"{name}: values differ / 값이 다릅니다"
    print(f"{name} {tuple(mine.shape)} = the model's own / 모델의 값과 같음")


def heads(weights, queries, keys, title, ylabel="query"):
    """One heatmap per head, two by two: row = query, column = key, darker = more weight."""
    size = (2 * (0.15 * len(keys) + 0.8), 2 * (0.15 * len(queries) + 0.9))
    fig, axes = plt.subplots(2, 2, figsize=size)
    for h, ax in enumerate(axes.flat):
        ax.imshow(weights[h], cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(keys)), keys, fontsize=7)
        ax.set_yticks(range(len(queries)), queries, fontsize=7)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_title(f"head {h}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    plt.show()


def check_4_1(weights_all):
    if weights_all is ...:
        print("Exercise 4.1 waits for your answer / 연습 4.1이 답을 기다립니다")
        return
    assert weights_all.shape == enc.weights.shape, \
        f"Not yet: shape {tuple(weights_all.shape)}, expected (H, S, S) = {tuple(enc.weights.shape)} / 아직: 모양은 (H, S, S)"
    assert torch.allclose(weights_all, enc.weights, atol=1e-4), \
        "Not yet: the values differ (scaled by sqrt(d)? softmax over dim=-1, the keys?) / 아직: 값이 다릅니다 (sqrt(d)로 나눴나요? softmax는 키 방향 dim=-1?)"
    print("Exercise 4.1 correct / 연습 4.1 정답")


def check_4_2(out):
    if out is ...:
        print("Exercise 4.2 waits for your answer / 연습 4.2가 답을 기다립니다")
        return
    assert out.shape == enc.out.shape, f"Not yet: shape {tuple(out.shape)}, expected (S, d_model) = {tuple(enc.out.shape)} / 아직: 모양은 (S, d_model)"
    assert torch.allclose(out, enc.out, atol=1e-4), \
        "Not yet: concat @ W_O.T + b_O, with concat (S, H * d) / 아직: concat @ W_O.T + b_O"
    print("Exercise 4.2 correct / 연습 4.2 정답")


# %% [markdown]
# ## Four heads, four patterns
#
# The weights of the 4 heads of the encoder's second layer, for the same sentence:

# %%
heads(enc.weights, tokens, tokens, "encoder layer 1: one softmax(QK^T/sqrt(d)) per head")

# %% [markdown]
# Four different ways of reading the same sentence. In the run this course trains (a run trained
# on another machine may differ in its details, not in kind):
#
# - **head 0**: nearly every letter of `Tuesday, March` looks at one character, the `c` of
#   `March`. After the first layer that position already carries which month this is, and this
#   head hands it to the whole sentence; the year's digits look at each other.
# - **head 1**: the weekday's letters look at the same `c`, less sharply; the digits at the year.
# - **head 2**: a column at the `M` that starts the month, and one at the year's `0`.
# - **head 3**: spread thin over many keys, except the day `5` and the year's last digits, which
#   look at themselves.
#
# The same in numbers: every query hands out a total weight of 1, so the 22 queries hand out 22.
# Which keys collect the most of it, in each head?

# %%
for h in range(H):
    received = enc.weights[h].sum(0)             # column sums: the weight each key receives
    top = received.topk(3)
    print(f"head {h}:", ",  ".join(f"'{tokens[j]}' (#{j}) {float(w):4.1f}" for w, j in zip(top.values, top.indices)))

# %% [markdown]
# ## All heads at once
#
# Nothing in the model loops over heads. The projections of all heads are one matrix each, of
# shape (`d_model`, $H \cdot d_k$) = (128, 128): $x W^Q$ gives (S, 128), and head $h$ owns columns
# $h d_k \dots (h+1) d_k$. A `view` and a `transpose` turn that into (H, S, $d_k$), the heads as a
# leading batch dimension, and from there every matrix product runs for all heads at once.

# %%
layer = run.model.encoder.layers[1]
attn = layer.self_attn
x = enc.x                                        # what this attention reads: LayerNorm(stream), notebook 03

Q = attn.q_proj(x)                               # (S, 128) = x @ W_Q.T + b_Q, all heads
K = attn.k_proj(x)
V = attn.v_proj(x)
Qh = Q.view(S, H, d).transpose(0, 1)             # (H, S, d): head h is Q[:, h*d:(h+1)*d]
Kh = K.view(S, H, d).transpose(0, 1)
Vh = V.view(S, H, d).transpose(0, 1)
same(Qh, enc.q, "Q, split in heads")
same(Kh, enc.k, "K, split in heads")
same(Vh, enc.v, "V, split in heads")

# %% [markdown]
# ### Exercise 4.1
#
# Compute the attention weights of **all** heads in one go, shape (H, S, S), from `Qh` and `Kh`.
# (The encoder's mask is all True for one sentence, so no mask is needed. Hint: `@` multiplies the
# last two dimensions and treats the first as a batch; `Kh.transpose(-2, -1)` is $K^\top$ per head.)

# %%
weights_all = ...  # your code / 직접 작성

check_4_1(weights_all)

# %% [markdown]
# ## Concatenate, then $W^O$
#
# Each head returns (S, $d_k$): its weights times its values (`enc.mixed`, (H, S, $d_k$)). The
# heads' outputs are put side by side again, back to (S, $H \cdot d_k$) = (S, 128), the inverse
# of the split. Then $W^O$, one (128, 128) matrix, mixes them: without it each head's result would
# stay in its own 32 columns, and the next layer could not combine what the heads found.

# %%
mixed = enc.weights @ Vh                         # (H, S, d), every head at once
same(mixed, enc.mixed, "heads' outputs")
concat = mixed.transpose(0, 1).reshape(S, H * d)     # (S, 128): head h in columns h*d:(h+1)*d
same(concat[:, d : 2 * d], mixed[1], "columns 32:64 of concat = head 1")
W_O, b_O = attn.out_proj.weight, attn.out_proj.bias  # (128, 128), (128,): out = concat @ W_O.T + b_O
print("W_O", tuple(W_O.shape), " b_O", tuple(b_O.shape))

# %% [markdown]
# ### Exercise 4.2
#
# Compute the output of the multi-head attention, (S, 128), from `concat`, `W_O` and `b_O`. (As
# every `nn.Linear`, the weight is stored (out, in), so the product is `concat @ W_O.T`.)

# %%
out = ...  # your code / 직접 작성

check_4_2(out)

# %% [markdown]
# ## Each head's share
#
# Multiplying the concatenation by $W^O$ is the same as giving each head its own slice of $W^O$
# (the 32 rows its 32 numbers multiply; in PyTorch's (out, in) weight, 32 columns) and adding up: $\mathrm{Concat}(\mathrm{head}_h) W^O =
# \sum_h \mathrm{head}_h W^O_h$. So the output is a sum of one contribution per head, plus the
# bias. The trace keeps those contributions as `head_outputs`:

# %%
shares = torch.stack([mixed[h] @ W_O[:, h * d : (h + 1) * d].T for h in range(H)])   # (H, S, 128)
same(shares, enc.head_outputs, "each head's share")
same(shares.sum(0) + b_O, enc.out, "sum of shares + b_O")
size = shares.norm(dim=-1)                       # (H, S): how much each head adds to each token
for h in range(H):
    print(f"head {h}: average size of its share {float(size[h].mean()):.2f}")

# %% [markdown]
# ## The attention block's output
#
# Around the attention sits a residual connection (notebook 07). With pre-LN the block computes
# `stream + MultiHead(LayerNorm(stream))`: the heads' result is *added* to what was there.

# %%
block = trace.encoder_layers[1].self_block
same(block.input + enc.out, block.residual, "stream + attention")

# %% [markdown]
# ## What the heads attend to in the dates task
#
# The clearest pictures are in the cross-attention, where each character the decoder writes looks
# at the source. Each row below is labelled with the character that position writes (it reads the
# one before: `<bos>` writes `2`, `2` writes `0`, ...). In the first decoder layer:

# %%
cross = trace.attention("cross", layer=0)
written = [*trace.tgt.tokens[1:], "<eos>"]       # what each position predicts
heads(cross.weights, written, cross.key_tokens, "decoder layer 0: cross-attention per head", ylabel="writes")

# %% [markdown]
# The decoder writes the year first, although the source has it last. Cross-attention is how it
# finds its place: while it writes the year's digits, the heads look at `2019`; while it writes
# the month, at `March` (its `M`, or the `c` that tells it apart); while it writes the day, and
# `<eos>` after it, at the `5`. Nobody gave the model this alignment, it learned where to look
# because looking there makes the next character easy to predict. (The rows that write the
# dashes are the least sharp: a dash comes at the same place whatever the date.)
#
# Which source character each head looks at most, for every character written:

# %%
print("writes    " + "  ".join(f"head {h}" for h in range(H)))
for t, char in enumerate(written):
    best = cross.weights[:, t].argmax(-1)
    print(f"   {char:5s}  " + "  ".join(f"{cross.key_tokens[int(j)]:>3s}@{int(j):2d}" for j in best))

# %% [markdown]
# Another format, `12.07.1998`: day, month and year in the opposite order. The same heads now find
# the year at the end, the month in the middle and the day at the start.

# %%
other = "12.07.1998"
iso = run.translate(other, beam=1)               # greedy: the model's own output
t2 = run.explain(other, target=iso).trace
c2 = t2.attention("cross", layer=0)
heads(c2.weights, [*iso, "<eos>"], c2.key_tokens, f"decoder layer 0, cross-attention: {other} -> {iso}", ylabel="writes")

# %% [markdown]
# The heads were never told what to do. Nobody wrote "head 2 finds the year"; each one's $W^Q$,
# $W^K$, $W^V$ started random, and training made them useful in different ways because the
# output is better when they do different things. Heads can also turn out redundant or hard to
# read; a pattern in a heatmap is a hint about what a head does, not a proof.
#
# ## Solutions
#
# Each solution goes through the same check as the exercise.

# %%
check_4_1(torch.softmax(Qh @ Kh.transpose(-2, -1) / math.sqrt(d), dim=-1))

check_4_2(concat @ W_O.T + b_O)
