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
# # 7. Feed-forward, residual connections and layer normalization
#
# Attention mixes information *between* positions. Each layer also needs the rest of the block
# diagram from the paper's Figure 1:
#
# - a **position-wise feed-forward network** (FFN) that works on every position by itself,
# - a **residual connection** around each sublayer (attention, cross-attention, FFN),
# - a **layer normalization** (LayerNorm) that keeps the numbers in a steady range.
#
# We take all three apart with the real numbers of the dates model from notebook 6 (it rewrites
# "5 March 2019" as "2019-03-05"), then run a small experiment on where LayerNorm goes (before or
# after the sublayer), and end with RMSNorm, the simpler norm most models use today.

# %%
import inspect

import matplotlib.pyplot as plt
import torch

import qkv

torch.manual_seed(0)
run = qkv.train("dates", out="../runs/dates", steps=400, quiet=True, reuse=True)
text = "5 March 2019"
target = run.translate(text)
trace = run.explain(text, target=target).trace   # every tensor of one forward pass
layer = trace.encoder_layers[0]          # what the first encoder layer computed
module = run.model.encoder.layers[0]     # ... and its weights
print(run)
print(text, "->", target)
print("norm_first =", run.cfg.norm_first, "| d_model =", run.cfg.d_model, "| d_ff =", run.cfg.d_ff)

# %% [markdown]
# The checks of this notebook's exercises (run this cell, then read on):

# %%
last = trace.decoder_layers[-1]                        # exercise 7.1: the decoder's last layer
last_module = run.model.decoder.layers[-1]
block = layer.ff_block                                 # exercises 7.2 and 7.3: the FFN's residual block
norm = module.ff_block.norm                            # the LayerNorm in front of the first encoder FFN


def check_7_1(answer):
    if answer is ...:
        print("Exercise 7.1 waits for your answer / 연습 7.1이 답을 기다립니다")
        return
    assert answer.shape == last.ff.output.shape, \
        f"Shape {tuple(answer.shape)}, expected {tuple(last.ff.output.shape)} / 모양이 다릅니다"
    assert torch.allclose(answer, last.ff.output, atol=1e-4), \
        "Not yet: hidden @ W2.T + b2, with hidden = relu(x @ W1.T + b1) / 아직 아닙니다: W2, b2를 확인하세요"
    print("Exercise 7.1: correct / 연습 7.1: 정답입니다")


def check_7_2(answer):
    if answer is ...:
        print("Exercise 7.2 waits for your answer / 연습 7.2가 답을 기다립니다")
        return
    expected = torch.nn.functional.layer_norm(block.input, (run.cfg.d_model,), norm.weight, norm.bias, norm.eps)
    assert answer.shape == expected.shape, \
        f"Shape {tuple(answer.shape)}, expected {tuple(expected.shape)} / 모양이 다릅니다"
    assert torch.allclose(answer, expected, atol=1e-4), \
        "Not yet: mean and var over the last dim, var with unbiased=False, eps inside the sqrt / " \
        "아직 아닙니다: 마지막 차원의 평균과 분산(unbiased=False), eps는 제곱근 안에"
    print("Exercise 7.2: correct / 연습 7.2: 정답입니다")


def check_7_3(answer, rms_norm):
    if answer is ...:
        print("Exercise 7.3 waits for your answer / 연습 7.3이 답을 기다립니다")
        return
    with torch.no_grad():
        expected = rms_norm(block.input)
    assert answer.shape == expected.shape, \
        f"Shape {tuple(answer.shape)}, expected {tuple(expected.shape)} / 모양이 다릅니다"
    assert torch.allclose(answer, expected, atol=1e-4), \
        "Not yet: x / sqrt(mean(x**2) + eps) * g, no mean subtracted, no bias / " \
        "아직 아닙니다: 평균을 빼지 않고, 편향도 없습니다"
    print("Exercise 7.3: correct / 연습 7.3: 정답입니다")


# %% [markdown]
# ## 7.1 The position-wise feed-forward network
#
# The paper (section 3.3): FFN(x) = max(0, x W1 + b1) W2 + b2. Two linear maps with a ReLU between
# them, widening d_model to d_ff and back. "Position-wise" means the same two matrices are applied
# to every position separately: no position sees another here. Mixing happened in attention.
#
# This is qkv's code (the paper path reads like the paper):

# %%
print(inspect.getsource(type(module.ff)))

# %% [markdown]
# The trace recorded the FFN's input, its hidden layer and its output for every source token. We
# can recompute them from the weights. `nn.Linear` stores W as (out, in) and computes `x @ W.T + b`.

# %%
ff = layer.ff
x = ff.input                                              # (source tokens, d_model)
w1, b1 = module.ff.w1.weight.detach(), module.ff.w1.bias.detach()
w2, b2 = module.ff.w2.weight.detach(), module.ff.w2.bias.detach()
hidden = torch.relu(x @ w1.T + b1)                        # (source tokens, d_ff)
output = hidden @ w2.T + b2                               # (source tokens, d_model)
print("x", tuple(x.shape), "-> hidden", tuple(hidden.shape), "-> output", tuple(output.shape))
print("hidden equals the recorded one:", torch.allclose(hidden, ff.hidden, atol=1e-5))
print("output equals the recorded one:", torch.allclose(output, ff.output, atol=1e-5))

# one position alone gives the same row: nothing is mixed across positions
alone = torch.relu(x[3:4] @ w1.T + b1) @ w2.T + b2
print("position 3 alone gives row 3:", torch.allclose(alone[0], output[3], atol=1e-5))

# %% [markdown]
# The ReLU switches many hidden units off. Each source token lights up its own pattern of the d_ff
# units, a kind of key-value memory (Geva et al., 2021, "Transformer Feed-Forward Layers Are
# Key-Value Memories"):

# %%
on = (ff.hidden > 0).float()
fig, ax = plt.subplots(figsize=(9, 2.4))
ax.imshow(on, aspect="auto", cmap="Greys", interpolation="nearest")
ax.set_yticks(range(len(layer.self_attn.query_tokens)), [repr(t) for t in layer.self_attn.query_tokens], fontsize=7)
ax.set_xlabel(f"hidden unit (d_ff = {run.cfg.d_ff}); black = ReLU output > 0")
ax.set_title("encoder layer 0, feed-forward: which hidden units fire")
plt.show()
print(f"{on.mean():.0%} of the hidden units are on")

# %% [markdown]
# ### Exercise 7.1
# Recompute the feed-forward output of the **decoder's last layer** (`last.ff.input` is its input,
# `last_module.ff.w1`, `.w2` hold its weights). Give a tensor of shape (target tokens, d_model).

# %%
ffn_out = ...  # your code: relu(x @ W1.T + b1) @ W2.T + b2 with the decoder's last layer
check_7_1(ffn_out)

# %% [markdown]
# ## 7.2 Residual connections
#
# Every sublayer is wrapped in a residual connection: the sublayer's output is *added* to its
# input, x + F(x). The layer only has to learn a change to the stream, and the gradient has a
# straight path back through the additions (He et al., 2016). qkv's `Sublayer` does the wrapping,
# with the LayerNorm in one of two places:

# %%
print(inspect.getsource(type(module.ff_block)))

# %% [markdown]
# The dates model is pre-LN (`norm_first = True`), so `fn_input` is the LayerNorm of the input,
# the FFN works on that, and its output is added to the input unchanged:

# %%
print("residual = input + fn_output:", torch.allclose(block.residual, block.input + block.fn_output, atol=1e-5))
print("output = residual (pre-LN):   ", torch.allclose(block.output, block.residual))

# %% [markdown]
# How large is each addition compared with the stream it is added to? The size (L2 norm,
# averaged over tokens) of the residual stream through the encoder, and of what each sublayer adds:

# %%
names, stream, added = [], [], []
for i, lt in enumerate(trace.encoder_layers):
    for name, b in (("attention", lt.self_block), ("FFN", lt.ff_block)):
        names.append(f"enc {i} {name}")
        stream.append(float(b.input.norm(dim=-1).mean()))
        added.append(float(b.fn_output.norm(dim=-1).mean()))
fig, ax = plt.subplots(figsize=(6, 2.6))
pos = range(len(names))
ax.bar([p - 0.2 for p in pos], stream, width=0.4, label="stream going in |x|")
ax.bar([p + 0.2 for p in pos], added, width=0.4, label="what the sublayer adds |F(...)|")
ax.set_xticks(pos, names, fontsize=8)
ax.legend(fontsize=8)
ax.set_title("the residual stream and each sublayer's addition")
plt.show()

# %% [markdown]
# The first sublayers change the stream a lot (the first FFN adds more than the stream held); as
# the stream grows, each addition becomes a smaller share of it. Nothing was thrown away on the
# way: the input embedding is still in there, plus every sublayer's contribution.

# %% [markdown]
# ## 7.3 Layer normalization by hand
#
# LayerNorm (Ba et al., 2016) normalises each token's vector by itself, over its d_model numbers:
#
# LayerNorm(x) = (x − mean(x)) / sqrt(var(x) + eps) · g + b
#
# where mean and var are taken over the last dimension (var divides by d_model, not d_model − 1),
# eps (1e-5 here) keeps the division safe, and the gain g and bias b are learned, one number per
# dimension. The norm in front of the first encoder FFN:

# %%
print(norm)
print("gain g:", norm.weight[:6].detach(), "...")
print("bias b:", norm.bias[:6].detach(), "...")

# %% [markdown]
# ### Exercise 7.2
# Compute that LayerNorm by hand on `block.input` (the stream going into the first encoder FFN
# block), with `norm.weight`, `norm.bias` and `norm.eps`. The check compares it with torch's
# `layer_norm` (and the next cell with what the model itself computed).

# %%
x = block.input
layer_normed = ...  # your code: (x - mean) / sqrt(var + eps) * g + b, over the last dimension
check_7_2(layer_normed)

# %%
with torch.no_grad():
    print("torch's layer_norm = qkv's LayerNorm module = the recorded fn_input:",
          torch.allclose(norm(block.input), block.fn_input, atol=1e-5))

# %% [markdown]
# ## 7.4 Before or after: post-LN and pre-LN
#
# The paper puts the norm *after* the residual addition: x = LayerNorm(x + F(x)) (post-LN). GPT-2
# and most models since put it *before* the sublayer: x = x + F(LayerNorm(x)) (pre-LN), plus one
# final norm at the end of the stack. In qkv that is one setting, `ModelConfig(norm_first=...)`.
#
# The two behave differently. A small experiment that runs in about a second: a deep stack of 12
# decoder layers at initialisation, one batch of random tokens, one backward pass; for each layer
# we measure the size of the stream going in and the size of the gradient of the layer's weights.

# %%
def deep_stack(norm_first, n_layers=12):
    torch.manual_seed(0)
    cfg = qkv.ModelConfig(arch="decoder-only", tgt_vocab_size=50, d_model=64, n_heads=4, d_ff=128,
                          n_decoder_layers=n_layers, dropout=0.0, norm_first=norm_first, max_len=32)
    model = qkv.DecoderOnly(cfg)
    inputs = []
    for lyr in model.decoder.layers:                  # remember what goes into each layer
        lyr.register_forward_pre_hook(lambda mod, args: inputs.append(args[0].detach()))
    ids = torch.randint(4, 50, (8, 24))
    logits = model(ids[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 50), ids[:, 1:].reshape(-1))
    loss.backward()
    stream = [float(h.norm(dim=-1).mean()) for h in inputs]
    grads = [float(torch.cat([p.grad.flatten() for p in lyr.parameters()]).norm()) for lyr in model.decoder.layers]
    return stream, grads


fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 2.8))
for norm_first, label in ((False, "post-LN (the paper)"), (True, "pre-LN")):
    stream, grads = deep_stack(norm_first)
    ax1.plot(stream, marker="o", label=label)
    ax2.plot(grads, marker="o", label=label)
ax1.set(title="size of the stream going into each layer", xlabel="layer")
ax2.set(title="gradient norm of each layer's weights", xlabel="layer")
ax1.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# Post-LN normalises the stream after every sublayer, so its size stays at about sqrt(d_model) = 8
# from layer to layer; the gradients are large all the way up to the output. Pre-LN never
# normalises the stream itself: each layer adds to it and it grows with depth; each layer's
# addition is a smaller share of it, and the gradients of the upper layers shrink accordingly.
# Xiong et al. (2020, "On Layer Normalization in the Transformer Architecture") show the same:
# post-LN's large gradients near the output are why it needs a learning-rate warmup (notebook 8),
# while pre-LN trains stably without one. The price: the stream of a deep pre-LN model keeps
# growing, which is why the stack ends with one more norm.

# %% [markdown]
# ## 7.5 RMSNorm
#
# RMSNorm (Zhang & Sennrich, 2019) drops the centring and the bias:
#
# RMSNorm(x) = x / sqrt(mean(x²) + eps) · g
#
# It is cheaper and trains as well; Llama and most recent models use it. qkv has it as
# `ModelConfig(norm="rmsnorm")`. We take one from a small model and give its gain random values
# so that g matters:

# %%
cfg = qkv.ModelConfig(arch="decoder-only", tgt_vocab_size=50, d_model=run.cfg.d_model, n_heads=4, d_ff=64,
                      n_decoder_layers=1, norm="rmsnorm", norm_first=True)
rms_norm = qkv.DecoderOnly(cfg).decoder.layers[0].ff_block.norm
with torch.no_grad():
    rms_norm.weight.copy_(1 + 0.1 * torch.randn(run.cfg.d_model))
print(inspect.getsource(type(rms_norm).forward))

# %% [markdown]
# ### Exercise 7.3
# Compute `rms_norm` by hand on the same `block.input`, with `rms_norm.weight` and `rms_norm.eps`.

# %%
x = block.input
rms_normed = ...  # your code: x / sqrt(mean(x**2) + eps) * g, over the last dimension
check_7_3(rms_normed, rms_norm)

# %% [markdown]
# LayerNorm and RMSNorm differ only by the mean they subtract (and LayerNorm's bias). How far is
# the mean of each token's vector from zero here? When it is small next to the spread (the std),
# subtracting it changes little, one reason why RMSNorm does as well:

# %%
print("mean of each token's vector:", [round(v, 3) for v in block.input.mean(-1).tolist()])
print("its std:                    ", [round(v, 3) for v in block.input.std(-1, unbiased=False).tolist()])

# %% [markdown]
# ## Summary
#
# - FFN(x) = max(0, x W1 + b1) W2 + b2, the same for every position; attention mixes positions, the
#   FFN transforms each one.
# - Residual connections add each sublayer's output to the stream: x + F(x).
# - LayerNorm: subtract the mean, divide by sqrt(var + eps), scale by g, shift by b, per token.
# - Post-LN (the paper) normalises after the addition, pre-LN before the sublayer; pre-LN trains
#   more easily in deep stacks, post-LN needs warmup.
# - RMSNorm skips the mean and the bias.
#
# Next: notebook 8 trains a model, with label smoothing and the warmup schedule.

# %% [markdown]
# ## Solutions
#
# Each solution goes through the same check as its exercise.

# %%
x = last.ff.input
w1, b1 = last_module.ff.w1.weight.detach(), last_module.ff.w1.bias.detach()
w2, b2 = last_module.ff.w2.weight.detach(), last_module.ff.w2.bias.detach()
ffn_out = torch.relu(x @ w1.T + b1) @ w2.T + b2
check_7_1(ffn_out)

# %%
x = block.input
mean = x.mean(dim=-1, keepdim=True)
var = x.var(dim=-1, unbiased=False, keepdim=True)
layer_normed = (x - mean) / torch.sqrt(var + norm.eps) * norm.weight.detach() + norm.bias.detach()
check_7_2(layer_normed)

# %%
x = block.input
rms_normed = x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + rms_norm.eps) * rms_norm.weight.detach()
check_7_3(rms_normed, rms_norm)
