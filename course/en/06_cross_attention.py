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
# # 6. Cross-attention: where the decoder looks in the source
#
# The Transformer of the paper has two halves. The **encoder** reads the whole source sentence once
# and turns it into one vector per source token, the *memory*. The **decoder** writes the target
# one token at a time. Between its masked self-attention (notebook 5) and its feed-forward network
# (notebook 7), every decoder layer has a third sublayer, **cross-attention**:
#
# - the **queries** come from the decoder: "what do I need to write the next token?"
# - the **keys** and **values** come from the encoder's memory: "here is what the source says".
#
# Its weights form a table, target tokens × source tokens: for each token the decoder writes, how
# much it reads from each source token. For a translation that table is an *alignment*. We look at
# the alignments of a model that rewrites dates, "5 March 2019" -> "2019-03-05".

# %%
import inspect
import math

import matplotlib.pyplot as plt
import torch

import qkv

run = qkv.train("dates", out="../runs/dates", steps=400, quiet=True, reuse=True)
text = "5 March 2019"
target = run.translate(text)
print(run)
print(text, "->", target)

# %% [markdown]
# ## 6.1 Three attentions in one model
#
# Here is qkv's decoder layer. `self.cross_attn(h, memory, ...)` is the cross-attention: `h` (the
# decoder's stream) gives the queries, `memory` (the encoder's output) gives the keys and values.

# %%
print(inspect.getsource(type(run.model.decoder.layers[0])))

# %% [markdown]
# `run.attention(text, target)` runs the model once on the source and the target (teacher forcing,
# as in training: the decoder reads `<bos>` and the target shifted right) and returns the weights of
# all three attentions, stacked over layers:

# %%
a = run.attention(text, target=target)
print("source tokens:", a.source_tokens)
print("decoder reads:", a.target_tokens)
print("encoder self-attention", tuple(a.encoder.shape), "(layers, heads, source, source)")
print("decoder self-attention", tuple(a.decoder.shape), "(layers, heads, target, target)")
print("cross-attention       ", tuple(a.cross.shape), "(layers, heads, target, source)")

# %% [markdown]
# Row t of the cross-attention belongs to the decoder position that reads `a.target_tokens[t]` and
# predicts the *next* token. So the row of `<bos>` writes the first "2", the row of "2" writes "0",
# and so on; the last row writes the end `<eos>`. We label each row with the token it writes:

# %%
writes = list(target) + ["<eos>"]                 # row t writes writes[t]
print(list(zip(a.target_tokens, writes)))


def heatmap(ax, weights, title, source=None, rows=None):
    source = a.source_tokens if source is None else source
    rows = writes if rows is None else rows
    ax.imshow(weights, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(source)), source, fontsize=7)
    ax.set_yticks(range(len(rows)), [f"→ {w}" for w in rows], fontsize=7)
    ax.set_title(title, fontsize=8)


# %% [markdown]
# The checks of this notebook's exercises (run this cell, then read on):

# %%
LAYER = run.cfg.n_decoder_layers - 1              # the last decoder layer
month_row = 6                                     # "2019-03-05"[6]: the row that writes the "3" of "03"
SHARP = int(a.cross[LAYER, :, month_row].max(dim=-1).values.argmax())   # the head that reads it most sharply
explanation = run.explain(text, target=target, layer=LAYER)
cross = explanation.trace.attention("cross", LAYER)   # the recorded cross-attention of the last layer


def check_6_1(answer):
    if answer is ...:
        print("Exercise 6.1 waits for your answer / 연습 6.1이 답을 기다립니다")
        return
    expected = int(a.cross[LAYER, SHARP, month_row].argmax())
    assert isinstance(answer, int), "Give a source position, an int / 소스 위치를 정수로 주세요"
    assert answer == expected, \
        f"Not yet: position {answer} is {a.source_tokens[answer]!r} / " \
        f"아직 아닙니다: 위치 {answer}는 {a.source_tokens[answer]!r}입니다"
    print(f"Exercise 6.1: correct, {a.source_tokens[expected]!r} / 연습 6.1: 정답입니다")


def check_6_2(answer, head, row):
    if answer is ...:
        print("Exercise 6.2 waits for your answer / 연습 6.2가 답을 기다립니다")
        return
    expected = cross.weights[head, row]
    assert answer.shape == expected.shape, \
        f"Shape {tuple(answer.shape)}, expected {tuple(expected.shape)} (one weight per source token) / 모양이 다릅니다"
    assert torch.allclose(answer, expected, atol=1e-5), \
        "Not yet: softmax(q[head, row] @ k[head].T / sqrt(d_head)) / 아직 아닙니다: sqrt(d_head)로 나누었나요?"
    print("Exercise 6.2: correct / 연습 6.2: 정답입니다")


# %% [markdown]
# ## 6.2 The alignment, layer by layer and head by head

# %%
L, H = a.cross.shape[:2]
fig, axes = plt.subplots(L, H, figsize=(2.6 * H, 2.7 * L))
for layer in range(L):
    for head in range(H):
        heatmap(axes[layer][head], a.cross[layer, head], f"layer {layer}, head {head}")
fig.suptitle(f"cross-attention of {text!r} -> {target!r}", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# Averaged over the heads, one map per layer:

# %%
fig, axes = plt.subplots(1, L, figsize=(3.4 * L, 3))
for layer in range(L):
    heatmap(axes[layer], a.cross[layer].mean(0), f"layer {layer}, mean over heads")
plt.tight_layout()
plt.show()

# %% [markdown]
# Look for the blocks: the year digits of the output read from "2019" in the source, the day "05"
# reads from "5", and the month digits "03" read from the *word* "March". There is no "3" in the
# source: the model has learnt which letters tell the months apart ("Ma" could still be May; "r" or
# "c" cannot). Each head looks at some of it, and the two layers differ: an alignment is shared out
# over the heads rather than held by one. Not every row is sharp: the "-" rows need nothing from
# the source, and some digits are read in one layer more than in the other.
#
# For each token written, the two source tokens with the highest weight (last layer, mean over heads):

# %%
mean_last = a.cross[LAYER].mean(0)
for t, w in enumerate(writes):
    top = mean_last[t].topk(2)
    print(f"writes {w!r:8} reads most {a.source_tokens[int(top.indices[0])]!r} ({top.values[0]:.2f}),"
          f" then {a.source_tokens[int(top.indices[1])]!r} ({top.values[1]:.2f})")

# %% [markdown]
# ### Exercise 6.1
# Here is one head of the last layer alone: the head whose row for the "3" of "03" is the most
# peaked. In that row, which source position (0-based: "5" is 0, the space is 1, "M" is 2, ...)
# gets the most weight? Read it off the picture and answer with an int.

# %%
fig, ax = plt.subplots(figsize=(3.4, 3))
heatmap(ax, a.cross[LAYER, SHARP], f"layer {LAYER}, head {SHARP}")
plt.show()
print(list(enumerate(a.source_tokens)))

# %%
month_position = ...  # your answer: a source position, an int
check_6_1(month_position)

# %% [markdown]
# ## 6.3 Queries from the decoder, keys and values from the encoder
#
# `run.explain` records every tensor of the same forward pass (`explanation.trace`). In the
# cross-attention of a layer, Q has one row per target token, K and V one row per source token:

# %%
print("Q", tuple(cross.q.shape), "(heads, target tokens, d_head)")
print("K", tuple(cross.k.shape), "(heads, source tokens, d_head)")
print("V", tuple(cross.v.shape), "(heads, source tokens, d_head)")
print("weights", tuple(cross.weights.shape), "(heads, target tokens, source tokens)")

# %% [markdown]
# K is made from the encoder's output, the memory, with this layer's key matrix; the same memory
# serves every decoder layer and every step (which is why a decoder can compute it once and keep
# it, notebook 9). Q is made from the decoder's own stream:

# %%
memory = explanation.trace.memory                          # (source tokens, d_model): the encoder's output
w = cross.weights_used                                     # the projection matrices, cut per head
k_again = memory @ w.w_k + w.b_k[:, None, :]               # (heads, source tokens, d_head)
q_again = cross.x @ w.w_q + w.b_q[:, None, :]              # cross.x: the decoder stream the queries come from
print("K = memory W_K + b_K:", torch.allclose(k_again, cross.k, atol=1e-5))
print("Q = decoder W_Q + b_Q:", torch.allclose(q_again, cross.q, atol=1e-5))

# %% [markdown]
# ### Exercise 6.2
# Recompute one row of the cross-attention weights from the recorded Q and K: the row `row` of head
# `head` is softmax(q · kᵀ / sqrt(d_head)) with q = `cross.q[head, row]` (one decoder query) and k =
# `cross.k[head]` (all source keys). There is no mask to apply: every source token may be read.

# %%
head, row = 0, month_row
attention_row = ...  # your code: softmax(cross.q[head, row] @ cross.k[head].T / sqrt(d_head))
check_6_2(attention_row, head, row)

# %% [markdown]
# ## 6.4 Other ways to write the same date
#
# The same day in three formats. Each output digit finds its source wherever the format puts it;
# with "05.03.2019" the "3" of the month can simply read the "3":

# %%
sources = ["5 March 2019", "05.03.2019", "Tue 5 Mar 2019"]
fig, axes = plt.subplots(1, 3, figsize=(11, 3))
for ax, source in zip(axes, sources):
    out = run.translate(source)
    att = run.attention(source, target=out)
    heatmap(ax, att.cross[LAYER].mean(0), f"{source!r} -> {out!r}", source=att.source_tokens,
            rows=list(out) + ["<eos>"])
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6.5 The whole walk-through
#
# `explanation` is the page of `qkv explain` for this sentence: every step of the forward pass with
# its numbers, zoomed in on the last layer. Write `explanation` alone in a new cell and Jupyter
# shows the page inline (it takes a few seconds to draw); scroll to "cross-attention".

# %% [markdown]
# ## Summary
#
# - Each decoder layer has cross-attention: queries from the decoder, keys and values from the
#   encoder's output (the memory).
# - Its weights, target × source, are an alignment: which source tokens each output token reads.
# - Each row is the same softmax(q kᵀ / sqrt(d_head)) as in notebook 3; only where q and k come from
#   differs.
#
# Next: notebook 7, the feed-forward network, residual connections and layer normalization.

# %% [markdown]
# ## Solutions
#
# Each solution goes through the same check as its exercise.

# %%
month_position = int(a.cross[LAYER, SHARP, month_row].argmax())
check_6_1(month_position)

# %%
d_head = cross.q.size(-1)
attention_row = torch.softmax(cross.q[head, row] @ cross.k[head].T / math.sqrt(d_head), dim=-1)
check_6_2(attention_row, head, row)
