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
# # 5. Masks and teacher forcing
#
# A mask tells attention which keys a query may look at. The Transformer needs two:
#
# - the **padding mask**: sentences in a batch have different lengths, so the short ones are
#   filled up with `<pad>` tokens; nobody may look at those;
# - the **causal mask**: the decoder writes the output one token at a time, so position $i$ may
#   only look at positions $0..i$, never at the future.
#
# The causal mask is also what makes training fast. With **teacher forcing** the decoder reads
# the whole correct target at once, shifted one place to the right, and learns to predict every
# next token in one forward pass. You will build both masks and the shifted input by hand, and
# compare them with the model's own.

# %%
import inspect

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import qkv
from qkv.model import masks            # the paper's masks, to compare yours with

torch.set_grad_enabled(False)          # no training here: no gradients needed

run = qkv.train("dates", out="../runs/dates", steps=400, quiet=True, reuse=True)
tok = run.src_tokenizer                # one character vocabulary for source and target
PAD, BOS, EOS = run.cfg.pad_id, run.cfg.bos_id, run.cfg.eos_id
print(run)
print("special ids: <pad> =", PAD, " <bos> =", BOS, " <eos> =", EOS)


# %% [markdown]
# The checks of the exercises are defined here, so the Solutions section at the end can run them.
# `show` draws a boolean mask or attention weights as a picture.

# %%
def show(matrix, rows, cols, title, ax=None):
    """A mask or attention weights as a picture: row = query, column = key."""
    ax = ax or plt.subplots(figsize=(4.5, 4))[1]
    ax.imshow(matrix.float(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    ax.set_title(title, fontsize=10)
    return ax


def check_5_1(pad_mask):
    if pad_mask is ...:
        print("Exercise 5.1 waits for your answer / 연습 5.1이 답을 기다립니다")
        return
    expected = masks.padding_mask(src, PAD)
    assert pad_mask.dtype == torch.bool, "Not yet: a mask is boolean (True = may attend) / 아직: 마스크는 bool입니다"
    assert pad_mask.shape == expected.shape, \
        f"Not yet: shape {tuple(pad_mask.shape)}, expected (B, 1, 1, S) = {tuple(expected.shape)} / 아직: 모양은 (B, 1, 1, S)"
    assert torch.equal(pad_mask, expected), "Not yet: True where src != PAD / 아직: src != PAD인 곳이 True"
    print("Exercise 5.1 correct / 연습 5.1 정답")


def check_5_2(tgt_in, tgt_out):
    if tgt_in is ... or tgt_out is ...:
        print("Exercise 5.2 waits for your answer / 연습 5.2가 답을 기다립니다")
        return
    recorded = run.explain(source, target=target).trace          # what the model reads and predicts
    assert list(tgt_in) == recorded.tgt.ids, "Not yet: the decoder reads <bos> and then y / 아직: 디코더 입력은 <bos> 다음에 y"
    assert list(tgt_out) == recorded.next_ids, "Not yet: it must predict y and then <eos> / 아직: 목표는 y 다음에 <eos>"
    print("Exercise 5.2 correct / 연습 5.2 정답")


def check_5_3(causal):
    if causal is ...:
        print("Exercise 5.3 waits for your answer / 연습 5.3이 답을 기다립니다")
        return
    assert causal.dtype == torch.bool and causal.shape == (T, T), f"Not yet: a ({T}, {T}) bool tensor / 아직: ({T}, {T}) bool 텐서"
    assert not causal[0, 1], "Not yet: position 0 must not see position 1 (the future) / 아직: 0번은 1번(미래)을 보면 안 됩니다"
    assert torch.equal(causal, masks.causal_mask(T)), "Not yet: True on and below the diagonal / 아직: 대각선과 그 아래가 True"
    assert torch.equal(causal, trace.attention("dec", layer=0).mask), "Not yet: not the decoder's mask / 아직: 디코더의 마스크와 다릅니다"
    print("Exercise 5.3 correct / 연습 5.3 정답")


# %% [markdown]
# ## 1. A batch, and its padding
#
# Training never feeds one sentence at a time; it stacks many into one tensor. Two real pairs of
# the task, of different lengths:

# %%
pairs = [("Tuesday, March 5, 2019", "2019-03-05"), ("12.07.1998", "1998-07-12")]
src_ids = [tok.encode(s) for s, _ in pairs]
S = max(len(ids) for ids in src_ids)
src = torch.tensor([ids + [PAD] * (S - len(ids)) for ids in src_ids])      # (B, S), padded with <pad>
print("lengths:", [len(ids) for ids in src_ids], " batch:", tuple(src.shape))
print(src)

# %% [markdown]
# The second row is 10 characters followed by 12 `<pad>` tokens. Attention must ignore them: a
# `<pad>` is not part of the sentence, and the same sentence must give the same result whether
# it sits in a batch with long sentences or not.
#
# Attention scores have the shape (B, H, queries, keys). The padding mask hides **keys**, the
# same ones for every head and every query, so its shape is (B, 1, 1, S): the 1s broadcast.
#
# ### Exercise 5.1
#
# Build the padding mask of `src`: `True` where the token is real, `False` at `<pad>`, shape
# (B, 1, 1, S). (Hint: `src != PAD`, then `[:, None, None, :]`.)

# %%
pad_mask = ...  # your code / 직접 작성

check_5_1(pad_mask)

# %% [markdown]
# What `masks.padding_mask` does, and its mask for the second row:

# %%
print(inspect.getsource(masks.padding_mask))
print(masks.padding_mask(src, PAD)[1, 0, 0].int())

# %% [markdown]
# Does it work? The encoder's output for the short sentence inside the padded batch should equal
# its output when it is alone, without any padding. And without the mask, the `<pad>` tokens leak
# into the real ones:

# %%
n = len(src_ids[1])
alone, _ = run.model.encode(src[1:, :n])                   # the short sentence by itself
batched, _ = run.model.encode(src)                          # in the padded batch, with its mask
unmasked = run.model.encoder(run.model.src_embed(src), None)   # the same batch, mask left out
print("with the mask:    largest difference", float((batched[1, :n] - alone[0]).abs().max()))
print("without the mask: largest difference", float((unmasked[1, :n] - alone[0]).abs().max()))

# %% [markdown]
# ## 2. The decoder's input: the target shifted right
#
# The decoder learns to predict the next token. For the target $y$ = `2019-03-05` it reads
# `<bos>` (begin of sequence) and then $y$, and at each position it must predict the token that
# follows, the last one being `<eos>` (end of sequence):
#
# | position | 0 | 1 | 2 | … | 10 |
# |---|---|---|---|---|---|
# | reads (`tgt_in`) | `<bos>` | `2` | `0` | … | `5` |
# | must predict (`tgt_out`) | `2` | `0` | `1` | … | `<eos>` |
#
# `tgt_in` is `tgt_out` moved one place to the right, with `<bos>` in the free place: "shifted
# right". At generation time the model starts from `<bos>` alone and stops when it writes `<eos>`.

# %%
source, target = pairs[0]
y = tok.encode(target)
print(target, "->", y)

# %% [markdown]
# ### Exercise 5.2
#
# Build `tgt_in` and `tgt_out` for this pair, as lists of ids, from `y`, `BOS` and `EOS`. The check
# compares them with what the model reads and predicts in `run.explain(source, target)`.

# %%
tgt_in = ...   # your code / 직접 작성: <bos> then y
tgt_out = ...  # your code / 직접 작성: y then <eos>

check_5_2(tgt_in, tgt_out)

# %% [markdown]
# ## 3. Teacher forcing: one training step
#
# One forward pass of the whole pair, as in training: the source and the shifted target go in,
# and out come logits, one row of scores over the vocabulary per position. The loss is the
# cross-entropy of each position's true next token, averaged over the positions. (The trainer adds
# label smoothing and averages over a batch; notebook 08.)

# %%
trace = run.explain(source, target=target).trace
dec_in = torch.tensor([trace.tgt.ids])                     # (1, T) <bos> 2 0 1 9 - 0 3 - 0 5
dec_out = torch.tensor([trace.next_ids])                   # (1, T) 2 0 1 9 - 0 3 - 0 5 <eos>
src1 = torch.tensor([tok.encode(source)])                  # (1, S)
T = dec_in.size(1)

logits = run.model(src1, dec_in)                           # (1, T, vocabulary)
loss = F.cross_entropy(logits[0], dec_out[0])
probs = logits[0].softmax(-1)
name = trace.tgt.tokens + ["<eos>"]                        # display names: <bos>, then the target
show_id = {i: t for i, t in zip(trace.tgt.ids + [EOS], name)}
for t in range(T):
    want = int(dec_out[0, t])
    guess = int(probs[t].argmax())
    print(f"position {t:2d}: reads {show_id[int(dec_in[0, t])]:5s}  must predict {show_id[want]:5s}  "
          f"p = {float(probs[t, want]):.3f}   model's first choice: {tok.id_to_token(guess)}")
print(f"loss = {float(loss):.4f}")

# %% [markdown]
# "Teacher forcing" is this: at every position the decoder reads the **true** previous tokens,
# not its own guesses. Even if it got position 3 wrong, position 4 still reads the right `9`. So
# every position is a separate little exercise with a known answer, and all of them are graded in
# the same pass. (The probabilities stop near 0.9 rather than 1 because this run was trained with
# label smoothing 0.1, which keeps a little probability on the other tokens; notebook 08.)
#
# ## 4. The causal mask
#
# If the decoder reads the whole target at once, what stops position 2 from simply looking at
# position 3, the token it is supposed to predict? The causal mask: query $i$ may attend to keys
# $0..i$ only. As a matrix it is lower-triangular.
#
# ### Exercise 5.3
#
# Build the causal mask for the `T` = 11 positions of the decoder: a (T, T) boolean tensor, `True`
# on and below the diagonal. (Hint: `torch.ones(T, T, dtype=torch.bool)` and `.tril()`.)

# %%
causal = ...  # your code / 직접 작성

check_5_3(causal)

# %% [markdown]
# The library's version is one line too. The decoder's recorded mask, and the weights of one of
# its heads: nothing above the diagonal.

# %%
print(inspect.getsource(masks.causal_mask))
dec = trace.attention("dec", layer=0)
fig, axes = plt.subplots(1, 2, figsize=(9, 4))
show(dec.mask, dec.query_tokens, dec.key_tokens, "causal mask (True = may attend)", axes[0])
show(dec.weights[0], dec.query_tokens, dec.key_tokens, "decoder layer 0, head 0: weights", axes[1])
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. Why the causal mask makes training parallel
#
# When the model writes a date, it runs the decoder once per token: on `<bos>`, then on
# `<bos> 2`, then on `<bos> 2 0`, and so on, each time keeping only the last position's
# prediction. Thanks to the mask, position $t$ of the one full pass sees exactly what the $t$-th of
# those step-by-step passes sees, so it computes the same numbers:

# %%
full = run.model(src1, dec_in)[0]                          # one pass, all T positions
diffs = [float((run.model(src1, dec_in[:, : t + 1])[0, -1] - full[t]).abs().max()) for t in range(T)]
print("one pass vs", T, "step-by-step passes, largest difference:", max(diffs))

# %% [markdown]
# And the future really is invisible: change the token at position 6 of the input and only the
# predictions from position 6 on change.

# %%
changed = dec_in.clone()
changed[0, 6] = tok.encode("7")[0]                         # it read the '0' of "03"; now a '7'
after = run.model(src1, changed)[0]
print("position:         ", list(range(T)))
print("prediction changed:", [int(bool((after[t] - full[t]).abs().max() > 1e-5)) for t in range(T)])

# %% [markdown]
# So training computes all T predictions of a target, and all their losses, in one parallel pass:
# matrix products over all positions at once. An RNN had to walk through the positions one after
# the other, because each step needed the previous step's state. That difference is much of why
# Transformers train so fast on GPUs.
#
# In a batch of targets of different lengths, the decoder needs both masks at once: causal, and
# no `<pad>` keys, `causal & (tgt_in != PAD)` with shape (B, 1, T, T). (In the dates task every
# target is `YYYY-MM-DD`, 10 characters, so targets never need padding.)
#
# ## Solutions
#
# Each solution goes through the same check as the exercise.

# %%
check_5_1((src != PAD)[:, None, None, :])

check_5_2([BOS] + y, y + [EOS])

check_5_3(torch.ones(T, T, dtype=torch.bool).tril())
