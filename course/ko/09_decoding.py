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
# # 09 · 디코딩 (decoding): 학습된 모델에서 텍스트로
#
# 학습된 디코더 (decoder)가 문장을 통째로 써 주지는 않습니다. 소스와 지금까지 쓴 토큰 (token)을
# 받으면, 어휘 전체에 대한 **확률 분포 하나**, 곧 다음 토큰이 무엇일지를 내놓을 뿐입니다.
# *디코딩*은 그 바깥을 도는 루프입니다. `<bos>`를 넣고, 토큰 하나를 고르고, 그것을 다시 넣기를
# `<eos>`가 나올 때까지 되풀이합니다. 어떻게 고르느냐에 따라 출력이 달라집니다.
#
# | 탐색 | 고르는 방법 | `run.translate(...)` |
# |---|---|---|
# | 그리디 탐색 (greedy search) | 매 단계 가장 확률이 높은 토큰 | `beam=1` |
# | 빔 탐색 (beam search) | 매 단계 가장 좋은 부분 출력 K개를 유지 | `beam=5` (기본값) |
# | 샘플링 (sampling) | 분포에서 토큰을 뽑음 | `sample=True, temperature=..., top_k=..., seed=...` |
#
# 그다음은 각 단계를 싸게 만드는 요령인 **키/값 캐시** (key/value cache)와, 그것이 아껴 주는
# 시간을 직접 재 봅니다.
#
# 앞 노트북들의 날짜 모델을 씁니다. "Tuesday, March 5, 2019"를 "2019-03-05"로 바꾸는
# 모델입니다. 400 단계만 학습해서 날짜 다섯 개 중 네 개 정도를 맞히니, 틀리는 모습에서도 볼
# 것이 있습니다.

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
# 연습 문제의 확인 함수는 여기서 한 번 정의하고 두 번 씁니다. 연습 바로 뒤에서 한 번, 끝의
# 풀이 (Solutions) 절에서 한 번.

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
# ## 그리디 탐색과 빔 탐색
#
# 그리디 탐색은 매 단계 가장 확률이 높은 토큰을 고릅니다. 빔 탐색은 가장 좋은 부분 출력 5개를
# 유지하면서, 각각을 모든 토큰으로 한 칸씩 늘린 후보들 가운데 다시 가장 좋은 5개를 남깁니다.
# 그래서 처음에는 두 번째로 보이던 토큰이라도 그 뒤가 더 그럴듯하면 이길 수 있습니다.

# %%
dates = ["Tuesday, March 5, 2019", "1 December 1999", "5 Mar 19", "2/6/2016", "2057/1/1"]
greedy = run.translate(dates, beam=1)
beam = run.translate(dates, beam=5)
for text, g, b in zip(dates, greedy, beam):
    print(f"{text:>24}  greedy {g}   beam {b}")

# %% [markdown]
# 대부분 같고, 몇 개는 두 방법 모두 틀립니다 (우리 실행에서는 "1 December 1999"가 1999-12-11,
# "5 Mar 19"가 1991-03-05가 되었습니다. 정답은 1999-12-01과 2019-03-05입니다). 빔 탐색은
# *모델*이 가장 그럴듯하다고 보는 출력을 찾을 뿐입니다. 모델 자체가 틀린 답을 더 좋아하면 어떤
# 탐색으로도 고칠 수 없습니다. 그리디와 빔이 다른 곳에서는, 빔 탐색이 처음 몇 단계는 더 나빠
# 보이던 시퀀스를 찾아낸 것입니다.
#
# `n_best=3`을 주면 차점자들이 점수와 함께, 좋은 순서대로 나옵니다.

# %%
for text in ["1 December 1999", "5 Mar 19"]:
    print(text, "  ", run.translate([text], beam=5, n_best=3)[0])

# %% [markdown]
# 점수는 `log p / lp`입니다. 출력 전체 (`<eos>` 포함)의 로그 확률을 길이 페널티 (length penalty)
# `lp = ((5 + length) / 6) ** 0.6`으로 나눈 값입니다 (Wu et al., 2016). 왜 나눌까요? 토큰마다
# 1보다 작은 확률이 곱해지니, 긴 출력은 길다는 이유만으로 확률이 낮아집니다. 페널티를 끄면
# (`length_penalty=0.0`) 점수는 그냥 로그 확률이 되고, `exp(score)`는 모델이 출력 전체에 주는
# 확률입니다.

# %%
for text in ["1 December 1999", "5 Mar 19"]:
    print(text)
    for output, score in run.translate([text], beam=5, n_best=3, length_penalty=0.0)[0]:
        print(f"    {output!r:<14} log p = {score:6.2f}   p = {math.exp(score):.3f}")

# %% [markdown]
# 볼 것이 두 가지입니다. 정답은 차점자들 속에 있습니다. 모델은 날짜의 일 (day)을 "01"로 할지
# "11"로 할지, 두 자리 연도 19를 1991로 읽을지 2019로 읽을지 망설입니다. 그리고 페널티가 없으면
# 중간에 끊긴 출력 (이른 `<eos>`)이 목록에 끼어들 수 있습니다. 짧은 출력은 곱할 확률이 적기
# 때문입니다. 길이 페널티가 있는 이유가 바로 이것입니다.

# %% [markdown]
# ## 한 단계를 손으로
#
# 한 단계에서 모델은 실제로 무엇을 내놓을까요? 순전파 (forward pass) `run.model(src, tgt)`는
# 모양이 (1, T, V)인 로짓 (logits)을 돌려줍니다. 지금까지의 타깃의 위치마다, V개의 토큰 각각에
# 점수가 하나씩 있습니다. 마지막 위치가 다음 토큰의 예측입니다. 타깃으로 `<bos>` 뒤에
# "1999-12-"까지를 넣고 다음 토큰을 봅시다.

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
# 우리 실행에서는 "1"이 0.72, "0"이 0.16입니다. 그리디는 "1"을 골라 틀린 일자를 씁니다. 나머지
# 44개 토큰도 보세요. 글자, 쉼표, `<unk>`... 다 합쳐 0.1쯤 됩니다. 이것이 **레이블 스무딩**
# (label smoothing)입니다 (이 실행은 0.1로 학습했습니다. 노트북 08). 모델은 확률의 10분의 1쯤을
# 모든 토큰에 고루 남겨 두도록 배웠습니다. 그리디 탐색과 빔 탐색은 이것을 알아차리지 못하지만,
# 샘플링은 알아차립니다. 곧 보게 됩니다.
#
# ### 연습 9.1: 그리디 탐색을 손으로
#
# `greedy_by_hand(text)`를 작성하세요. 모델의 순전파를 도는 루프이고, **캐시 없이** 돕니다.
# 각 단계는 지금까지의 타깃 전체에 대해 `run.model(src, tgt)`를 돌리고, 마지막 위치에서 가장
# 확률이 높은 토큰을 골라, `<eos>`이면 멈추고 아니면 덧붙입니다. 길이 제한은 qkv와 같게, 소스
# 토큰이 S개이면 새 토큰 `int(1.5 * S) + 10`개까지로 하세요. 텍스트를 돌려줍니다
# (`<bos>`를 뺀 id들에 `run.tgt_tokenizer.decode(ids)`).

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
# ## 샘플링
#
# 샘플링은 가장 높은 토큰을 고르는 대신 분포에서 다음 토큰을 뽑습니다. 손잡이는 셋입니다.
#
# * `temperature` (온도): 소프트맥스 (softmax) 전에 로짓을 이 값으로 나눕니다. 1보다 작으면
#   분포가 뾰족해지고 (그리디 쪽으로), 1보다 크면 평평해집니다.
# * `top_k`: 가장 확률이 높은 k개 토큰만 뽑힐 수 있습니다 (`top_p`, 뉴클리어스 샘플링 (nucleus
#   sampling): 확률의 합이 p에 이르는 가장 작은 집합).
# * `seed` (시드): 같은 시드는 같은 뽑기를 내므로, 샘플링한 출력을 다시 만들 수 있습니다.

# %%
text = "1 December 1999"
for settings in [dict(temperature=1.0), dict(temperature=0.5), dict(temperature=2.0),
                 dict(temperature=2.0, top_k=3)]:
    outputs = run.translate([text] * 6, sample=True, seed=0, **settings)     # 6 draws
    print(f"{str(settings):<36}", "  ".join(f"{o:<11}" for o in outputs))

same = run.translate(text, sample=True, seed=3) == run.translate(text, sample=True, seed=3)
print("the same seed gives the same output:", same)

# %% [markdown]
# 온도 1에서는 출력 대부분에 글자가 섞입니다. 레이블 스무딩이 깔아 둔 바닥 확률 때문입니다.
# 매 단계 열 번에 한 번꼴로 엉뚱한 곳에 떨어지니, 11단계 동안이면 자주 일어납니다. 0.5에서는
# 바닥이 줄어들고 (0.5로 나누면 로짓 사이의 차이가 두 배가 됩니다) 출력은 모델이 좋아하는 답,
# "1999-12-11"과 가끔 "1999-12-01"이 됩니다. 2에서는 바닥이 판을 뒤덮습니다. `top_k=3`은
# 단계마다 후보를 셋만 남깁니다. 쓰레기 글자는 대부분 사라지지만, 온도 2에서는 세 번째 후보도
# 자주 뽑히고, 한 번 잘못 뽑으면 그다음 단계들은 모델이 아는 길을 벗어납니다. 언어 모델을
# top-k나 top-p와 1보다 작은 온도로 샘플링하는 이유입니다.
#
# 그림: 같은 단계 ("1999-12-" → ?)를 세 온도에서 본 것입니다. 가장 확률이 높은 토큰 여섯 개와
# 나머지.

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
# ### 연습 9.2: 온도와 top-k
#
# `step_logits` (위에서 본 V개의 로짓)로부터, `run.translate(..., sample=True, temperature=0.5,
# top_k=3)`이 이 단계에서 뽑는 분포를 계산하세요. 온도로 나누고, 가장 큰 3개만 남기고 (나머지는
# 확률 0), 소프트맥스를 취합니다.

# %%
probs_t05_k3 = ...  # your code: a (V,) tensor of probabilities, 3 of them above zero

check_9_2(probs_t05_k3, step_logits)

# %% [markdown]
# ## 키/값 캐시
#
# 여러분의 그리디 루프는 매 단계 타깃 **전체**에 대해 디코더를 돌립니다. t번째 단계는 위치 t개
# 만큼 일하므로, 토큰 T개짜리 출력에는 대략 T²/2가 듭니다. 그런데 앞 위치들의 키 (key)와 값
# (value)은 변하지 않습니다 (마스크 (mask)가 각 위치가 뒤 위치를 보지 못하게 막으니까요). 캐시는
# 이것들을 보관합니다. 각 단계는 새 토큰 하나만 넣어 그 쿼리 (query), 키, 값을 계산하고, 키와
# 값을 층 (layer)마다의 캐시에 덧붙인 다음 그 전부에 어텐션 (attention)합니다. 교차 어텐션
# (cross-attention)의 키와 값은 인코더 (encoder) 출력에서만 나오므로, 첫 단계에 한 번만
# 계산합니다.
#
# qkv의 탐색은 모두 하나의 단계 루프 (`src/qkv/search/`의 `StepDecoder`) 위에서 돌고, 이 루프가
# 캐시를 관리합니다. `use_cache=False`를 주면 캐시를 끄고, 여러분의 루프처럼 매 단계 앞부분
# 전체를 다시 계산합니다. 출력은 같고 (테스트가 확인합니다) 시간만 다릅니다.

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
# 날짜 30개를 빔 5로 풀면 150개 행을 함께 디코딩하는데, 캐시가 없으면 행마다 매 단계 앞부분을
# 다시 계산합니다. 그래도 날짜는 토큰 11개쯤에 불과합니다. 언어 모델은 수백 개를 쓰고, 거기서는
# 토큰마다 차이가 커집니다. 디코더만 있는 모델 (decoder-only, 노트북 10)을 층 2개, 폭 256으로
# 만들어 토큰 150개를 써 봅시다. 한 번은 매 단계 앞부분 전체를 넣고, 한 번은 캐시와 함께 새
# 토큰만 넣습니다. `model(ids)`와 `model(new, cache)`가 논문 경로 (`qkv.DecoderOnly`)의 두
# 호출입니다. 시간을 재는 데에는 학습이 필요 없습니다. 가중치는 무작위여도 하는 일은 같습니다.

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
# 캐시가 없으면 단계당 시간이 길이와 함께 올라가고 (앞부분이 한 단계에 토큰 하나씩 자라니까요),
# 캐시가 있으면 평평합니다. 그래서 이득은 출력이 길수록 커지고, 처음 50단계와 마지막 50단계를
# 비교하면 보입니다. qkv의 인코더-디코더 벤치마크에서는 2.5배에서 15배였고 (docs/decoding.md,
# "Speed"), 배치와 빔이 클수록 더 큽니다. 위의 숫자는 이 실행, 이 기계의 것입니다. 다른 기계에서는
# 다른 숫자가 나오고, 바쁜 기계에서는 들쭉날쭉합니다.
#
# 캐시의 대가는 메모리입니다. 토큰마다, 층마다, 헤드 (head)마다 키 벡터와 값 벡터를 하나씩
# 보관합니다. 노트북 10에서 그 바이트 수를 세고, 최근 모델들이 그것을 어떻게 줄이는지 봅니다.
#
# **기억할 것.** 디코딩은 순전파를 도는 루프입니다. 그리디는 근시안적이고, 빔 탐색은 후보 K개를
# 유지하며, 샘플링은 정확도를 다양성과 바꾸고 제정신을 지키려면 top-k/top-p가 필요합니다.
# 캐시는 한 단계의 비용을 "앞부분 전체"에서 "토큰 하나"로 바꿉니다.

# %% [markdown]
# ## 풀이 (Solutions)
#
# 각 풀이는 연습과 같은 확인 함수를 거칩니다.

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
