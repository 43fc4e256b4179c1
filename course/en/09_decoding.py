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
# # 09 · Decoding: from a trained model to text
#
# A trained decoder does not write a sentence. Given the source and the tokens written so far, it
# gives **one probability distribution** over the vocabulary: what the next token may be.
# *Decoding* is the loop around it: feed `<bos>`, pick a token, feed it back, until `<eos>`.
# How we pick changes the output:
#
# | search | picks | `run.translate(...)` |
# |---|---|---|
# | greedy | the most probable token at every step | `beam=1` |
# | beam search | keeps the K best partial outputs at every step | `beam=5` (the default) |
# | sampling | draws a token from the distribution | `sample=True, temperature=..., top_k=..., seed=...` |
#
# Then the **key/value cache**, the trick that makes each step cheap, and what it saves, measured.
#
# We use the dates model of the earlier notebooks: it turns "Tuesday, March 5, 2019" into
# "2019-03-05". It was trained for only 400 steps and gets about 4 dates in 5 right, so its
# mistakes have something to show.

# %%
import math
import os
import platform
import time

import matplotlib.pyplot as plt
import torch

import qkv

torch.set_num_threads(1)    # these models are small: one thread is as fast, and steadier on a busy machine
run = qkv.train("dates", out="../runs/dates", steps=400, quiet=True, reuse=True)
print(run)

# %% [markdown]
# The checks of the exercises, defined once here and used twice: right after each exercise, and in
# the Solutions section at the end.

# %%
CHECK_DATES = ["Tuesday, March 5, 2019", "1 December 1999", "5 Mar 19", "2/6/2016", "20190305", "Feb 8, 2020"]


def check_9_1(greedy_by_hand):
    """Your greedy loop must give what qkv's greedy search gives, text for text."""
    first = greedy_by_hand(CHECK_DATES[0])
    if first is None or first is ...:
        print("Exercise 9.1 waits for your greedy_by_hand (it returns nothing yet) / "
              "연습 9.1: greedy_by_hand를 완성하세요 (아직 아무것도 돌려주지 않습니다)")
        return
    for text in CHECK_DATES:
        mine, qkvs = greedy_by_hand(text), run.translate(text, beam=1)
        assert mine == qkvs, (f"Not yet: for {text!r} you wrote {mine!r}, greedy search writes {qkvs!r} / "
                              f"아직 아닙니다: {text!r}에서 {mine!r}, greedy 탐색은 {qkvs!r}")
    print("Exercise 9.1: right, your loop is greedy search / 연습 9.1: 정답, 직접 짠 루프가 greedy 탐색입니다")


def check_9_2(probs, logits):
    """probs: the distribution sampling draws from at temperature 0.5 with top_k=3."""
    if probs is ...:
        print("Exercise 9.2 waits for your answer / 연습 9.2: 답을 기다립니다")
        return
    kept = logits / 0.5
    kept = kept.masked_fill(kept < kept.topk(3).values[-1], float("-inf"))
    expected = torch.softmax(kept, dim=-1)
    assert probs.shape == logits.shape, (f"Not yet: one probability per token, shape {tuple(logits.shape)} / "
                                         f"아직 아닙니다: 토큰마다 확률 하나, 모양 {tuple(logits.shape)}")
    assert (probs > 0).sum() == 3, ("Not yet: top_k=3 keeps exactly 3 tokens, the others get probability 0 / "
                                    "아직 아닙니다: top_k=3이면 토큰 3개만 남고 나머지는 확률 0입니다")
    assert torch.allclose(probs, expected, atol=1e-5), ("Not yet: divide the logits by the temperature, "
                                                       "then softmax over the 3 kept / 아직 아닙니다: 로짓을 온도로 "
                                                       "나눈 뒤, 남긴 3개에 대해 소프트맥스")
    print("Exercise 9.2: right / 연습 9.2: 정답")


# %% [markdown]
# ## Greedy search and beam search
#
# Greedy search takes the most probable token at every step. Beam search keeps the 5 best partial
# outputs, extends each by every token and keeps the 5 best of all candidates, so a token that
# looked second-best can win if what follows it is more probable.

# %%
dates = ["Tuesday, March 5, 2019", "1 December 1999", "5 Mar 19", "2/6/2016", "2057/1/1"]
greedy = run.translate(dates, beam=1)
beam = run.translate(dates, beam=5)
for text, g, b in zip(dates, greedy, beam):
    print(f"{text:>24}  greedy {g}   beam {b}")

# %% [markdown]
# Mostly the same, and some are wrong both ways (in our run "1 December 1999" became 1999-12-11
# and "5 Mar 19" 1991-03-05; the right answers are 1999-12-01 and 2019-03-05). Beam search finds
# the output the *model* finds most probable; when the model itself prefers a wrong answer, no
# search fixes it. Where greedy and beam differ, beam search found a sequence whose first steps
# looked worse.
#
# `n_best=3` shows the runners-up, best first, each with its score:

# %%
for text in ["1 December 1999", "5 Mar 19"]:
    print(text, "  ", run.translate([text], beam=5, n_best=3)[0])

# %% [markdown]
# The score is `log p / lp`: the log-probability of the whole output (`<eos>` included), divided by
# the length penalty `lp = ((5 + length) / 6) ** 0.6` (Wu et al., 2016). Why divide? Every token
# multiplies in a probability below 1, so longer outputs have lower probabilities merely for being
# long. Turn the penalty off (`length_penalty=0.0`) and the score is the plain log-probability;
# `exp(score)` is then the probability the model gives the whole output:

# %%
for text in ["1 December 1999", "5 Mar 19"]:
    print(text)
    for output, score in run.translate([text], beam=5, n_best=3, length_penalty=0.0)[0]:
        print(f"    {output!r:<14} log p = {score:6.2f}   p = {math.exp(score):.3f}")

# %% [markdown]
# Two things to see. The right answer is among the runners-up: the model hesitates between "01"
# and "11" for a day, between 19 → 1991 and 19 → 2019 for a two-digit year. And without the
# penalty, a cut-off output (an early `<eos>`) can climb into the list: a short output has fewer
# probabilities below 1 to multiply. That is what the length penalty is for.

# %% [markdown]
# ## One step, by hand
#
# What does the model actually give at a step? The forward pass `run.model(src, tgt)` returns
# logits of shape (1, T, V): at every position of the target so far, a score for each of the V
# tokens. The last position is the prediction of the next token. Let us feed "1999-12-" as the
# target so far (after `<bos>`) and look at the next token:

# %%
tok = run.tgt_tokenizer
src = torch.tensor([run.src_tokenizer.encode("1 December 1999")])        # (1, S) source ids
tgt = torch.tensor([[run.cfg.bos_id] + tok.encode("1999-12-")])           # (1, T) <bos> + prefix
with torch.no_grad():
    logits = run.model(src, tgt)                                          # (1, T, V)
step_logits = logits[0, -1]                                               # (V,) the next token's scores
probs = torch.softmax(step_logits, dim=-1)
top = probs.topk(4)
print("logits:", tuple(logits.shape), " next token:",
      ", ".join(f"{tok.id_to_token(int(i))!r} {float(p):.3f}" for p, i in zip(top.values, top.indices)))
print(f"all the other {len(probs) - 4} tokens together: {1 - float(top.values.sum()):.3f}")

# %% [markdown]
# In our run: "1" with 0.72, "0" with 0.16. Greedy takes "1" and writes the wrong day. Notice
# the other 44 tokens: letters, commas, `<unk>`... together about 0.1. That is **label smoothing**
# (the run trained with 0.1; notebook 08): the model learned to leave about a tenth of its
# probability spread over everything. Greedy and beam search never notice. Sampling does, as we
# will see.
#
# ### Exercise 9.1: greedy search by hand
#
# Write `greedy_by_hand(text)`: a loop over the model's forward pass, **without a cache**. Each step
# runs `run.model(src, tgt)` over the whole target so far, takes the most probable token at the
# last position, stops at `<eos>` and otherwise appends it. Use qkv's length limit,
# `int(1.5 * S) + 10` new tokens for a source of S tokens. Return the text
# (`run.tgt_tokenizer.decode(ids)` without the `<bos>`).

# %%
@torch.no_grad()
def greedy_by_hand(text):
    # src = torch.tensor([run.src_tokenizer.encode(text)])              # (1, S)
    # out = [run.cfg.bos_id]
    # for _ in range(int(1.5 * src.size(1)) + 10):
    #     logits = ...        # the forward pass over src and torch.tensor([out]): (1, T, V)
    #     token = ...         # the most probable token id at the last position, as an int
    #     ... stop at run.cfg.eos_id, else append token to out
    # return run.tgt_tokenizer.decode(out[1:])
    ...  # your code


check_9_1(greedy_by_hand)

# %% [markdown]
# ## Sampling
#
# Sampling draws the next token from the distribution instead of taking the top one. Three knobs:
#
# * `temperature`: logits are divided by it before the softmax. Below 1 sharpens the
#   distribution (towards greedy), above 1 flattens it.
# * `top_k`: only the k most probable tokens may be drawn (`top_p`, nucleus sampling: the
#   smallest set whose probability reaches p).
# * `seed`: the same seed gives the same draws, so a sampled output can be reproduced.

# %%
text = "1 December 1999"
for settings in [dict(temperature=1.0), dict(temperature=0.5), dict(temperature=2.0),
                 dict(temperature=2.0, top_k=3)]:
    outputs = run.translate([text] * 6, sample=True, seed=0, **settings)     # 6 draws
    print(f"{str(settings):<36}", "  ".join(f"{o:<11}" for o in outputs))

same = run.translate(text, sample=True, seed=3) == run.translate(text, sample=True, seed=3)
print("the same seed gives the same output:", same)

# %% [markdown]
# At temperature 1 most outputs carry letters: the label-smoothing floor at work, about one draw
# in ten at every step lands somewhere it should not, and over 11 steps that happens often. At 0.5
# the floor shrinks (dividing by 0.5 doubles the gaps between logits) and the outputs are the model's
# favourites, "1999-12-11" and now and then "1999-12-01". At 2 the floor takes over. `top_k=3`
# keeps only three candidates per step: the junk mostly goes, though at temperature 2 the third
# candidate is drawn often, and once a draw goes wrong, the next steps are off the paths the
# model knows. This is why language models are sampled with top-k or top-p and a temperature
# below 1.
#
# The picture: the same step ("1999-12-" → ?) at three temperatures, the six most probable
# tokens and the rest.

# %%
fig, axes = plt.subplots(1, 3, figsize=(10, 2.6), sharey=True)
order = step_logits.argsort(descending=True)[:6]
labels = [repr(tok.id_to_token(int(i))) for i in order] + ["rest"]
for ax, temperature in zip(axes, [0.5, 1.0, 2.0]):
    p = torch.softmax(step_logits / temperature, dim=-1)
    ax.bar(labels, [float(p[i]) for i in order] + [1 - float(p[order].sum())], color="tab:blue")
    ax.set_title(f"temperature {temperature}")
    ax.tick_params(axis="x", labelsize=8)
axes[0].set_ylabel("probability")
fig.suptitle('next token after "1999-12-" (source "1 December 1999")', fontsize=10)
fig.tight_layout()

# %% [markdown]
# ### Exercise 9.2: temperature and top-k
#
# From `step_logits` (the V logits above), compute the distribution that
# `run.translate(..., sample=True, temperature=0.5, top_k=3)` draws from at this step: divide by
# the temperature, keep the 3 largest (the others get probability 0), softmax.

# %%
probs_t05_k3 = ...  # your code: a (V,) tensor of probabilities, 3 of them above zero

check_9_2(probs_t05_k3, step_logits)

# %% [markdown]
# ## The key/value cache
#
# Your greedy loop runs the decoder over the **whole** target at every step: step t costs t
# positions, so an output of T tokens costs about T²/2. Yet the keys and values of the earlier
# positions never change (the mask keeps each position from seeing later ones). The cache keeps
# them: each step feeds only the new token, computes its query, key and value, appends the key and
# value to the cache of each layer and attends over all of them. Cross-attention's keys and values
# come from the encoder alone, so they are computed once, at the first step.
#
# All of qkv's searches run on one step loop (`StepDecoder` in `src/qkv/search/`), which keeps the
# cache; `use_cache=False` turns it off and recomputes the whole prefix at every step, like your
# loop. The output is the same (a test checks it); only the time differs:

# %%
many = dates * 6                  # 30 dates, about 11 tokens out each


def seconds(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


cached, t_cached = seconds(lambda: run.translate(many, beam=5))
uncached, t_uncached = seconds(lambda: run.translate(many, beam=5, use_cache=False))
assert cached == uncached
print(f"30 dates, beam 5: {t_cached:.2f} s with the cache, {t_uncached:.2f} s without "
      f"({t_uncached / t_cached:.1f}x)")

# %% [markdown]
# Beam 5 over 30 dates is 150 rows decoded together, and without the cache each row recomputes
# its prefix at every step. But a date is only about 11 tokens. A language model writes hundreds,
# and there the difference grows with every token. Let us take a decoder-only model (notebook 10),
# 2 layers 256 wide, and write 150 tokens, once feeding the whole prefix at every step and once
# feeding only the new token with a cache: `model(ids)` and `model(new, cache)` are the paper
# path's two calls (`qkv.DecoderOnly`). Timing needs no training: the weights are random, the work
# is the same.

# %%
torch.manual_seed(0)
lm = qkv.DecoderOnly(qkv.ModelConfig(arch="decoder-only", tgt_vocab_size=100, d_model=256, n_heads=4,
                                     n_decoder_layers=2, d_ff=1024, dropout=0.0, max_len=256)).eval()
prompt, n_new = torch.tensor([[1, 10, 11, 12]]), 150


@torch.no_grad()
def write(use_cache):
    ids, new, step_times = prompt, prompt, []
    cache = lm.new_cache() if use_cache else None
    for _ in range(n_new):
        start = time.perf_counter()
        logits = lm(new, cache) if use_cache else lm(ids)      # (1, T_fed, V)
        new = logits[:, -1].argmax(-1, keepdim=True)          # greedy: (1, 1)
        ids = torch.cat([ids, new], dim=1)
        step_times.append(time.perf_counter() - start)
    return ids, step_times


ids_no_cache, times_no_cache = write(use_cache=False)
ids_cache, times_cache = write(use_cache=True)
assert torch.equal(ids_no_cache, ids_cache)                     # the same tokens, step for step
ratio = sum(times_no_cache) / sum(times_cache)
print(f"{n_new} tokens: {sum(times_no_cache):.2f} s without the cache, {sum(times_cache):.2f} s with it: "
      f"{ratio:.1f}x faster with the cache")
first, last = slice(0, 50), slice(n_new - 50, n_new)
print(f"the cache's gain over the first 50 steps: {sum(times_no_cache[first]) / sum(times_cache[first]):.1f}x, "
      f"over the last 50: {sum(times_no_cache[last]) / sum(times_cache[last]):.1f}x")
print(f"measured on this machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
      f"1 thread; the ratio depends on the machine, the model and the length")

fig, ax = plt.subplots(figsize=(6, 2.8))
ax.plot([1000 * t for t in times_no_cache], label="no cache: the whole prefix every step", lw=1)
ax.plot([1000 * t for t in times_cache], label="cache: only the new token", lw=1)
ax.set_xlabel("step (tokens written)")
ax.set_ylabel("ms per step")
ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# Without the cache the time per step climbs with the length (the prefix grows by one token a
# step); with it the step stays flat. So the gain grows with the output, as the first and last 50
# steps show: 2.5x to 15x in qkv's benchmark of an encoder-decoder (docs/decoding.md, "Speed"),
# more with larger batches and beams. The numbers above are this machine's on this run; another
# machine gives other numbers, and a busy one makes them jumpy.
#
# What the cache costs is memory: for every token, every layer keeps a key and a value vector of
# each head. Notebook 10 counts those bytes, and shows how newer models shrink them.
#
# **To remember.** Decoding is a loop of forward passes. Greedy is short-sighted, beam search keeps
# K candidates, sampling trades accuracy for variety and needs top-k/top-p to stay sane. The
# cache turns each step's cost from "the whole prefix" into "one token".

# %% [markdown]
# ## Solutions
#
# Each solution goes through the same check as the exercise.

# %%
@torch.no_grad()
def greedy_by_hand(text):
    src = torch.tensor([run.src_tokenizer.encode(text)])              # (1, S)
    out = [run.cfg.bos_id]
    for _ in range(int(1.5 * src.size(1)) + 10):
        logits = run.model(src, torch.tensor([out]))                   # (1, T, V): the whole prefix again
        token = int(logits[0, -1].argmax())
        if token == run.cfg.eos_id:
            break
        out.append(token)
    return run.tgt_tokenizer.decode(out[1:])


check_9_1(greedy_by_hand)

# %%
scaled = step_logits / 0.5
scaled = scaled.masked_fill(scaled < scaled.topk(3).values[-1], float("-inf"))   # keep the 3 largest
probs_t05_k3 = torch.softmax(scaled, dim=-1)

check_9_2(probs_t05_k3, step_logits)
