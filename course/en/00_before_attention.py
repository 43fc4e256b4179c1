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
# # 0. Before attention: what the Transformer replaced
#
# The Transformer (Vaswani et al., 2017) did not come out of nowhere. Each model before it fixed
# one weakness of the one before and left another:
#
# | model | reads the input | its weakness |
# |---|---|---|
# | feed-forward network | a fixed window of tokens, all at once | no memory beyond the window; a bag of words has no order |
# | recurrent network (RNN) | one token at a time, into a hidden state | gradients vanish over long distances |
# | LSTM / GRU | the same, with gates | still one step after another |
# | seq2seq (2014) | an encoder RNN, then a decoder RNN | the decoder gets **one fixed-length vector** |
# | + attention (Bahdanau et al., 2015) | the decoder looks back at every encoder state | the recurrence is still sequential |
# | Transformer (2017) | attention only, all positions at once | attention costs grow with the square of the length |
#
# This notebook measures each weakness on tiny examples you can change, then runs qkv's
# **history lab** (`qkv history`), which trains five of these models on the same task, with the
# same data and budget, and reports what it measured.
#
# Run the cells from top to bottom (Shift+Enter). Exercises leave `...` for your answer; the cell
# after each one checks it. Solutions are at the end.

# %%
import json
from dataclasses import asdict
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import nn

_ = torch.manual_seed(0)                 # the same random numbers on every run


# %% [markdown]
# The checks of this notebook's exercises are defined here, so that the Solutions section at the
# end can run them too. (You may skip reading this cell: it gives the answers away.)

# %%
def check_0_1(answer):
    if answer is ...:
        print("Exercise 0.1 waits for your answer: replace ... with h_1 / 연습 0.1: ... 자리에 h_1을 계산해 넣으세요")
        return
    assert torch.is_tensor(answer) and answer.shape == (H,), \
        f"Not yet: h_1 should be a tensor of shape ({H},) / 아직 아닙니다: h_1의 모양은 ({H},)이어야 합니다"
    assert torch.allclose(answer, outputs[0, 0], atol=1e-5), \
        "Not yet: h_1 = tanh(W_ih x_1 + b_ih + W_hh h_0 + b_hh), with h_0 = 0 / 아직 아닙니다: 식을 다시 보세요"
    print("Right: your h_1 is the RNN's own first state / 정답: RNN이 계산한 첫 상태와 같습니다")


def check_0_2(answer):
    if answer is ...:
        print("Exercise 0.2 waits for your answer: a number for the forget-gate bias / 연습 0.2: 망각 게이트 편향 값을 넣으세요")
        return
    ratio = first_over_last(lstm_with_forget_bias(float(answer)))
    assert ratio >= 0.01, (f"Not yet: with bias {answer} the first input gets {ratio:.1e} of the last one's gradient; "
                           f"open the gate wider / 아직 아닙니다: 비율이 {ratio:.1e}입니다. 게이트를 더 여세요")
    print(f"Right: with bias {answer} the gradient at x_1 is {ratio:.2f} of the one at x_T / "
          f"정답: 첫 입력의 기울기가 마지막의 {ratio:.2f}배입니다")


def check_0_3(answer):
    if answer is ...:
        print("Exercise 0.3 waits for your answer: replace ... with the context vector / 연습 0.3: 문맥 벡터를 계산해 넣으세요")
        return
    assert torch.is_tensor(answer) and answer.shape == (d_hidden,), \
        f"Not yet: the context has one number per hidden unit, shape ({d_hidden},) / 아직 아닙니다: 모양은 ({d_hidden},)입니다"
    assert torch.allclose(answer, a @ memory, atol=1e-5), \
        "Not yet: the context is the sum over j of a_j * h_j / 아직 아닙니다: 문맥은 a_j * h_j의 합입니다"
    print("Right: one fresh context vector, a weighted average of all encoder states / "
          "정답: 모든 인코더 상태의 가중 평균입니다")


# %% [markdown]
# ## 1. A feed-forward network: no memory, no order
#
# A feed-forward network maps a fixed-size input to an output. To give it a sentence, you must
# first make the sentence a fixed size. Two classic ways:
#
# - **a bag of words**: add up the word vectors. Any length fits, but the order is gone;
# - **a fixed window** of the last *n* words, concatenated (Bengio et al., 2003): the order inside
#   the window is kept, and nothing before it exists.
#
# Here is the bag, with random word vectors (training would not change the point):

# %%
vocab = {"dog": 0, "bites": 1, "man": 2, "the": 3}
E = torch.randn(len(vocab), 8)                      # one 8-number vector per word


def bag(sentence):
    return E[[vocab[w] for w in sentence.split()]].sum(dim=0)


print(torch.allclose(bag("dog bites man"), bag("man bites dog")))   # True: the network cannot tell who bit whom


# %% [markdown]
# Whatever the network does next, it receives the same numbers for both sentences. A window keeps
# the order, but has a horizon: a window of 3 words sees `bites the man` in
# `the dog that the cat saw bites the man` and never learns *what* bites. Language needs memory of
# any length, in order. That is what recurrence gave.
#
# ## 2. A recurrent network, and the vanishing gradient
#
# An RNN reads one token at a time and keeps a hidden state $h_t$, updated by the same weights at
# every step:
#
# $$h_t = \tanh(W_{ih}\,x_t + b_{ih} + W_{hh}\,h_{t-1} + b_{hh})$$
#
# `torch.nn.RNN` is exactly this. Let us run one over a sequence of 60 random input vectors.

# %%
T, D, H = 60, 16, 32                                 # time steps, input size, hidden size
x = torch.randn(1, T, D)                             # (batch, time, features)
rnn = nn.RNN(D, H, batch_first=True)
outputs, h_last = rnn(x)                             # outputs: (1, T, H), the state after every step
print(tuple(outputs.shape), "- the state after every step, and the last one:", tuple(h_last.shape))

# %% [markdown]
# ### Exercise 0.1: one step by hand
#
# Compute the first state $h_1$ yourself from $x_1$ = `x[0, 0]` and $h_0 = 0$. The weights are
# `rnn.weight_ih_l0` ($W_{ih}$, shape (H, D)), `rnn.weight_hh_l0` ($W_{hh}$), `rnn.bias_ih_l0`,
# `rnn.bias_hh_l0`.

# %%
h_1 = ...  # your code: torch.tanh(W_ih @ x_1 + b_ih + ...)

# %%
check_0_1(h_1)


# %% [markdown]
# ### How far back does the gradient reach?
#
# Training an RNN means asking: if the output at the end is wrong, how should the *early* inputs
# have been processed? The answer travels backwards through every step, and at each step it is
# multiplied by the same Jacobian $\partial h_t / \partial h_{t-1} = \mathrm{diag}(1 - h_t^2)\,W_{hh}$.
# If that product shrinks the signal a little at every step, after 60 steps almost nothing is left.
#
# We measure it: the size of $\partial\,(\text{sum of } h_T) / \partial x_t$ for every input position $t$.

# %%
def gradient_through_time(cell):
    """|d sum(h_T) / d x_t| for t = 1..T: how much each input can still influence the last state."""
    xs = x.clone().requires_grad_(True)
    out, _ = cell(xs)
    out[0, -1].sum().backward()
    return xs.grad[0].norm(dim=-1)                   # (T,)


def first_over_last(grads):
    return float(grads[0] / grads[-1])


torch.manual_seed(0)
cells = {"RNN": nn.RNN(D, H, batch_first=True), "GRU": nn.GRU(D, H, batch_first=True),
         "LSTM": nn.LSTM(D, H, batch_first=True)}
grads = {name: gradient_through_time(cell) for name, cell in cells.items()}
for name, g in grads.items():
    print(f"{name:5} gradient at x_1 / gradient at x_T = {first_over_last(g):.1e}")

fig, ax = plt.subplots(figsize=(6.5, 3.2))
for name, g in grads.items():
    ax.semilogy(range(1, T + 1), g, label=name)
ax.set(xlabel="input position t", ylabel="|d h_T / d x_t|", title="Gradient reaching each input (at initialization)")
ax.legend()
ax.grid(alpha=0.3)
plt.show()


# %% [markdown]
# Read the plot from right to left: that is the way the gradient travels. Each step back costs a
# roughly constant factor, so the curve is a straight line on a log scale, and the first inputs
# get a gradient many orders of magnitude smaller than the last ones (the printed ratios). An RNN
# learns short-range patterns easily and long-range ones hardly at all. (With larger recurrent
# weights the same product can grow instead: *exploding* gradients, which is why training clips them.)
#
# ## 3. LSTM and GRU: gates
#
# The LSTM (Hochreiter & Schmidhuber, 1997) adds a **cell state** $c_t$ that is updated by
# addition, under the control of gates (numbers between 0 and 1 computed from $x_t$ and $h_{t-1}$):
#
# $$c_t = f_t \odot c_{t-1} + i_t \odot \tilde c_t, \qquad h_t = o_t \odot \tanh(c_t)$$
#
# When the **forget gate** $f_t$ is near 1, $c_t \approx c_{t-1}$: the cell carries information,
# and the gradient, across a step almost unchanged. The GRU (Cho et al., 2014) does the same with
# two gates: $h_t = (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t$.
#
# Gates *can* keep the path open; at initialization they do not yet: the plot above shows the
# LSTM and GRU vanishing too, because a gate starts near $\sigma(0) = 0.5$, which halves the signal
# at every step. The bias of the forget gate sets where it starts.

# %%
def lstm_with_forget_bias(bias):
    """The gradient through time of an LSTM whose forget gates start at sigmoid(bias)."""
    torch.manual_seed(0)
    lstm = nn.LSTM(D, H, batch_first=True)
    with torch.no_grad():                          # PyTorch orders the gates i, f, g, o
        lstm.bias_ih_l0[H:2 * H] = bias
        lstm.bias_hh_l0[H:2 * H] = 0.0
    return gradient_through_time(lstm)


for bias in (0.0, 1.0):
    print(f"forget bias {bias}: gate starts at {torch.sigmoid(torch.tensor(bias)):.2f}, "
          f"gradient at x_1 / at x_T = {first_over_last(lstm_with_forget_bias(bias)):.1e}")


# %% [markdown]
# ### Exercise 0.2: open the gate
#
# A forget bias of 1 (the usual recommendation, and what qkv's history lab uses) already helps.
# Find a bias for which the gradient reaching $x_1$ is at least 1% of the one reaching $x_T$,
# 60 steps back.

# %%
forget_bias = ...  # your answer: a number

# %%
check_0_2(forget_bias)


# %% [markdown]
# ## 4. seq2seq: the whole sentence in one vector
#
# To translate, Sutskever et al. (2014) and Cho et al. (2014) used two RNNs: an **encoder** reads the
# source, a **decoder** writes the target. The only thing the decoder learns about the source is
# the encoder's final state, a vector of fixed length. qkv's history lab has this model
# (`qkv.history.Seq2Seq`); look at what its decoder receives for a short and a long input:

# %%
from qkv.history import AttentionSeq2Seq, RecurrentConfig, Seq2Seq

d_hidden = 32
seq2seq = Seq2Seq(RecurrentConfig(src_vocab_size=30, tgt_vocab_size=30, cell="gru", d_hidden=d_hidden))
for n in (5, 50):
    memory, _ = seq2seq.encode(torch.randint(4, 30, (1, n)))        # (1, n, d_hidden): a state per source token
    print(f"{n:3} source tokens -> {tuple(memory.shape[1:])} encoder states -> "
          f"the decoder gets only the last one: {tuple(memory[0, -1].shape)}")

# %% [markdown]
# Five tokens or fifty, the decoder gets the same 32 numbers. A long sentence must be squeezed
# into them, and the decoder must unpack the first words from a state written many steps later.
#
# ## 5. Bahdanau attention: a fresh context for every output
#
# Bahdanau, Cho & Bengio (2015) kept *every* encoder state $h_1 \dots h_S$ and let the decoder choose
# where to look at each output step $t$. With its current state $s_t$ it scores each source
# position, normalises the scores with a softmax, and reads a weighted average:
#
# $$e_{tj} = v^\top \tanh(W s_t + U h_j), \qquad a_{tj} = \mathrm{softmax}_j(e_{tj}), \qquad c_t = \sum_j a_{tj}\, h_j$$
#
# The Transformer kept exactly this idea (queries score keys, a softmax, a weighted sum of values)
# and dropped the recurrence. Here is one step of it, with the lab's `AdditiveAttention` module:

# %%
attn_model = AttentionSeq2Seq(RecurrentConfig(src_vocab_size=30, tgt_vocab_size=30, cell="gru", d_hidden=d_hidden))
src = torch.randint(4, 30, (1, 7))
memory, src_mask = attn_model.encode(src)               # (1, 7, 32): all encoder states are kept
s_t = torch.randn(1, 1, d_hidden)                        # one decoder state (the query)
context, weights = attn_model.attention(s_t, memory, src_mask)
a, memory = weights[0, 0].detach(), memory[0].detach()   # a: (7,) one weight per source token; memory: (7, 32)
print("weights:", [round(w, 3) for w in a.tolist()], " sum =", round(float(a.sum()), 4))


# %% [markdown]
# ### Exercise 0.3: the context vector
#
# Compute $c_t = \sum_j a_{tj} h_j$ from the weights `a` (shape (7,)) and the encoder states
# `memory` (shape (7, 32)).

# %%
c_t = ...  # your code: the weighted sum of the rows of memory

# %%
check_0_3(c_t)


# %% [markdown]
# ## 6. The history lab: the same task, the same budget, five models
#
# `qkv history` trains an RNN, an LSTM and a GRU encoder-decoder with one fixed vector, a GRU with
# Bahdanau attention, and a Transformer, all with about the same number of parameters, on the
# same batches of a task (here `reverse`: write a string backwards), then measures exact-match
# accuracy by input length, training curves, the time of one step, and the gradient flow you
# measured above, now through whole trained models. Its report draws its conclusions from the
# numbers of the run, and says so when a run is too short to rank the models.
#
# In a notebook the budget must be tiny: 40 steps per model (about 10 s of CPU for all five;
# `qkv history --quick` in a terminal takes 500 steps each, about 3 minutes). The results are saved
# in `../runs/history`; running the cell again reads them back (delete that folder to measure anew).

# %%
from IPython.display import Image, Markdown, display
from qkv.history.lab import LabConfig, run_lab
from qkv.history.report import write_report

lab = LabConfig.quick(max_steps=40, train_examples=2000, valid_examples=100, test_per_length=10,
                      max_tokens=768, timing_lengths=(8, 32), evals=2)
out = Path("../runs/history")
saved = out / "results.json"
if saved.is_file() and json.loads(saved.read_text())["config"] == json.loads(json.dumps(asdict(lab))):
    results = json.loads(saved.read_text())              # measured before with these settings
else:
    results = run_lab(lab)                               # trains the five models, prints as it goes
    write_report(results, out)

report = (out / "report.md").read_text(encoding="utf-8")
head = report.split("\n## Accuracy by input length")[0]                 # the table and the conclusions
display(Markdown(head.replace("\n## ", "\n#### ").replace("# ", "### ", 1)))   # its headings made smaller

# %% [markdown]
# The report opened with **"Too short to rank"**, and it is right: after 40 steps no model has
# learned to reverse strings, and the differences in accuracy are noise. The lab computes this from
# the run itself (fewer than 400 optimizer steps, or no model above 50% exact match) instead of
# printing a ranking it cannot support. Training longer is the only cure; in a terminal:
#
#     qkv history --quick
#
# One measurement does not need training: the gradient flow **at initialization**, the last
# column of the table, and the lab's picture of it below. It is the experiment of section 2, run
# through each whole model on 20-character inputs.

# %%
display(Image(filename=str(out / "gradient_flow.png"), width=640))
for name, m in results["models"].items():
    flow = m["gradient_flow_init"]
    print(f"{m['label']:20} at initialization: first position gets {flow[0] / flow[-1]:.1e} of the last one's gradient")

# %% [markdown]
# The plain RNN's gradient fades geometrically toward the first positions; the gated LSTM and
# GRU fade less; in the GRU with attention and in the Transformer every source position is one
# attention step away from every output, so the first position gets about as much gradient as the
# last. That is the path the next notebooks build, piece by piece: tokens (notebook 1), vectors
# and positions (2), and attention itself (3).
#
# ## Solutions
#
# Each solution runs through the same check as your answer.

# %%
W_ih, W_hh, b_ih, b_hh = rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0
h_0 = torch.zeros(H)
check_0_1(torch.tanh(W_ih @ x[0, 0] + b_ih + W_hh @ h_0 + b_hh))

# %%
check_0_2(3.0)          # sigmoid(3) = 0.95: the cell keeps 95% of itself at each step

# %%
check_0_3(a @ memory)   # (7,) @ (7, 32) -> (32,): the sum of a_j * h_j
