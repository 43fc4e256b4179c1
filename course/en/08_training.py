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
# # 8. Training
#
# Training a Transformer is the loop of notebook 5 run many times: take a batch of (source,
# target) pairs, run the model with teacher forcing, compare its predicted distributions with the
# true next tokens (the loss), compute the gradients, let the optimizer change the weights a
# little. `qkv.train` does all of it. This notebook trains a small model in a few seconds, reads
# its loss curve, and takes apart the two ingredients the paper adds to the plain recipe (section
# 5.3 and 5.4): **label smoothing** and the **learning-rate warmup**.

# %%
import inspect
import math
import shutil
import time

import matplotlib.pyplot as plt
import torch

import qkv

# %% [markdown]
# ## 8.1 Train a small model
#
# The task: write a string of letters backwards ("hello" -> "olleh"), here strings of 1 to 6
# letters. A very small model (one encoder and one decoder layer, d_model = 64) gets most of them
# right after 300 steps of small batches, a few seconds on a laptop. `log_every=1` logs every step,
# so the curves below have a point per step. The folder is this notebook's own and is trained anew
# each time the cell runs.

# %%
out = "../runs/08-reverse-tiny"
shutil.rmtree(out, ignore_errors=True)          # this notebook's own small run: trained anew each time
start = time.perf_counter()
tiny = qkv.train("reverse", out=out, steps=300, d_model=64, n_heads=4, d_ff=128, n_encoder_layers=1,
                 n_decoder_layers=1, lr=1e-2, warmup_steps=30, batch_tokens=400, data={"max_len": 6},
                 train_size=2000, valid_size=50, eval_every=50, eval_examples=50, checkpoint_every=100,
                 log_every=1, threads=1, precision="fp32", quiet=True)   # fp32: faster than bf16 at this size
print(f"trained in {time.perf_counter() - start:.1f} s:", tiny.training.steps, "steps,", tiny.training.stopped)
print(tiny)
print(tiny.translate(["hello", "qkv", "attend"]))

# %% [markdown]
# Everything training logged is in the run: `tiny.metrics("train")` has one record per logged step
# (the loss, the plain negative log-likelihood `nll`, the learning rate `lr`, ...),
# `tiny.metrics("valid")` one per validation.

# %%
train_log = tiny.metrics("train")
valid_log = tiny.metrics("valid")
print(train_log[-1])
print(valid_log[-1])

# %% [markdown]
# The checks of this notebook's exercises (run this cell, then read on):

# %%
eps = tiny.config["train"]["label_smoothing"]      # 0.1, as in the paper
warmup = tiny.config["train"]["warmup_steps"]
example = tiny.explain("hello", target="olleh").trace     # one teacher-forced forward pass
row = 2                                                   # the row that predicts the 3rd letter


def check_8_1(answer):
    if answer is ...:
        print("Exercise 8.1 waits for your answer / 연습 8.1이 답을 기다립니다")
        return
    z, y = example.logits[row], example.next_ids[row]
    expected = torch.nn.functional.cross_entropy(z[None], torch.tensor([y]), label_smoothing=eps)
    assert abs(float(answer) - float(expected)) < 1e-4, \
        f"Not yet (got {float(answer):.4f}): (1 - eps) * -log p[y] + eps * mean(-log p) / " \
        "아직 아닙니다: (1 - eps) * -log p[y] + eps * mean(-log p)"
    print("Exercise 8.1: correct / 연습 8.1: 정답입니다")


def check_8_2(answer):
    if answer is ...:
        print("Exercise 8.2 waits for your answer / 연습 8.2가 답을 기다립니다")
        return
    assert answer == warmup, \
        "Not yet: find the step with the highest learning rate on the curve / 아직 아닙니다: 학습률이 가장 높은 스텝을 찾으세요"
    print("Exercise 8.2: correct / 연습 8.2: 정답입니다")


# %% [markdown]
# ## 8.2 The loss curve

# %%
steps = [r["step"] for r in train_log]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 2.8))
ax1.plot(steps, [r["loss"] for r in train_log], label="training loss (label-smoothed)")
ax1.plot(steps, [r["nll"] for r in train_log], label="training nll (-log p of the true token)")
ax1.plot([r["step"] for r in valid_log], [r["loss"] for r in valid_log], "o-", label="validation nll")
ax1.set(xlabel="step", ylabel="nats per token", title="loss")
ax1.legend(fontsize=7)
ax2.plot([r["step"] for r in valid_log], [r["exact_match"] for r in valid_log], "o-")
ax2.set(xlabel="step", ylim=(0, 1.05), title="validation: share of exact reversals")
plt.tight_layout()
plt.show()

# %% [markdown]
# The loss falls fast at first, then more slowly; each step's batch is a different sample, so the
# training curves are noisy. `nll` is the plain cross-entropy, −log p(true token) (the validation
# loss is measured the same way, on examples the model never trained on). `loss` is what the model
# is trained on, the label-smoothed cross-entropy, and it levels off well above `nll`. Why, and how
# far above, is the next section. Validation also decodes whole strings: after 300 steps most, not
# all, come out exactly reversed.

# %% [markdown]
# ## 8.3 Label smoothing
#
# The paper (section 5.4) trains towards a *smoothed* target: instead of probability 1 on the true
# token y, the target distribution q puts 1 − eps on y and spreads eps evenly over all V tokens of
# the vocabulary. The loss is the cross-entropy against q:
#
# loss = − Σ_v q(v) log p(v) = (1 − eps) · (−log p(y)) + eps · mean_v(−log p(v))
#
# The model is punished for being *too* sure. It "hurts perplexity, as the model learns to be more
# unsure, but improves accuracy and BLEU score" (the paper). qkv's loss, written as an autograd
# function that needs only logsumexp (shown here as code: it lives in the training package, not in
# `import qkv`):

# %%
import qkv.training.loss as qkv_loss                   # shown as code; not part of the `import qkv` face

print(inspect.getsource(qkv_loss._SmoothedCrossEntropy.forward))

# %% [markdown]
# One row of the model's output: `example.logits[row]` are the scores the model gave every token of
# the vocabulary for the 3rd letter of "olleh", `example.next_ids[row]` is the true token's id.

# %%
z, y = example.logits[row], example.next_ids[row]
p = torch.softmax(z, dim=-1)
print("vocabulary size V =", z.numel(), "| eps =", eps)
print("true token:", repr(example.vocab[y]), f"with p = {p[y]:.3f}")
print("the model's top 3:", [(example.vocab[int(i)], round(float(p[i]), 3)) for i in p.topk(3).indices])

# %% [markdown]
# ### Exercise 8.1
# Compute the label-smoothed loss of this one row by hand, from `z` (the logits), `y` (the true
# id) and `eps`. `torch.log_softmax(z, dim=-1)` gives log p for every token.

# %%
smoothed = ...  # your code: (1 - eps) * -log p[y] + eps * mean over v of -log p[v]
check_8_1(smoothed)

# %% [markdown]
# The smoothed loss can never reach 0: its lowest value, reached when p = q, is the entropy of q.
# That is the floor the training loss above approaches while `nll` keeps going down:

# %%
V = z.numel()
q_true, q_other = 1 - eps + eps / V, eps / V
floor = -(q_true * math.log(q_true) + (V - 1) * q_other * math.log(q_other))
print(f"the lowest label-smoothed loss with eps = {eps} and V = {V}: {floor:.3f} nats per token")
print(f"the last training loss: {train_log[-1]['loss']:.3f}, its nll: {train_log[-1]['nll']:.3f}")

# qkv's loss over every row of 'olleh' (5 letters and <eos>) against torch's cross_entropy
total, nll_total, tokens = qkv_loss.label_smoothed_nll(example.logits, torch.tensor(example.next_ids), eps)
torch_total = torch.nn.functional.cross_entropy(example.logits, torch.tensor(example.next_ids),
                                                label_smoothing=eps, reduction="sum")
print(f"qkv: {float(total):.4f} over {tokens} tokens, torch: {float(torch_total):.4f}")

# %% [markdown]
# ## 8.4 The learning-rate schedule
#
# Adam with a fixed learning rate is unstable at the start of training for a post-LN Transformer
# (notebook 7): the paper raises the rate linearly for the first `warmup` steps, then lowers it with
# the inverse square root of the step:
#
# lr(step) = d_model^−0.5 · min(step^−0.5, step · warmup^−1.5)
#
# The built-in tasks use a "cosine" schedule instead: the same linear warmup to a peak `lr`, then
# half a cosine down to `min_lr` at the last step. Both are written out here next to the rate
# training really used (logged at every step):

# %%
tc = tiny.config["train"]
print({key: tc[key] for key in ("schedule", "lr", "min_lr", "warmup_steps", "steps")})


def cosine(step, lr, warmup, total, min_lr=0.0):
    if step <= warmup:
        return lr * step / warmup
    progress = (step - warmup) / (total - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def noam(step, d_model=512, warmup=4000):
    return d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


logged = [r["lr"] for r in train_log]
by_hand = [cosine(s, tc["lr"], tc["warmup_steps"], tc["steps"], tc["min_lr"]) for s in steps]
print("the formula gives the logged rates:", all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(logged, by_hand)))

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 2.6))
ax1.plot(steps, logged)
ax1.set(xlabel="step", ylabel="learning rate", title="this run: warmup, then cosine")
paper = range(1, 100_001, 100)
ax2.plot(paper, [noam(s) for s in paper])
ax2.set(xlabel="step", title="the paper: d_model 512, warmup 4000")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Exercise 8.2
# Read off the left curve: at which step does the warmup end (the rate stops rising)? An integer.

# %%
warmup_end = ...  # your answer: a step number read off the curve
check_8_2(warmup_end)

# %% [markdown]
# ## 8.5 Checkpoints and resuming
#
# Every `checkpoint_every` steps and at the end, training writes a checkpoint with the weights, the
# optimizer's moments, the schedule's step, the random-number state and the data's position, and
# `qkv.train(out=..., resume=True, steps=...)` continues the run from it exactly where it stopped;
# the best weights by validation are kept on the side for `qkv.load`. The files of this run:

# %%
print(sorted(path.name for path in tiny.dir.path.iterdir() if not path.name.startswith(".")))

# %% [markdown]
# ## Summary
#
# - `qkv.train` returns the trained run; `run.metrics("train")` and `run.metrics("valid")` hold
#   what it logged: the loss curve, the rate, the scores.
# - Label smoothing trains towards 1 − eps on the true token and eps spread over the vocabulary;
#   the loss then has a floor above 0, the entropy of that target.
# - The learning rate rises linearly during warmup, then falls (inverse square root in the paper,
#   a cosine here).
#
# Next: notebook 9 turns the trained model's distributions into text: greedy search, beam search,
# sampling.

# %% [markdown]
# ## Solutions
#
# Each solution goes through the same check as its exercise.

# %%
log_p = torch.log_softmax(z, dim=-1)
smoothed = (1 - eps) * -log_p[y] + eps * (-log_p).mean()
check_8_1(smoothed)

# %%
warmup_end = steps[logged.index(max(logged))]
check_8_2(warmup_end)
