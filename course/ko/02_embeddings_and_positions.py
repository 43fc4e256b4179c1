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
# # 2. 임베딩과 위치
#
# 토크나이저는 토큰마다 id를 주었습니다. 모델의 첫 층 (layer)은 각 id를 `d_model`개의 숫자로 된 벡터, 곧
# **임베딩 (embedding)** 으로 바꾸고, 그 토큰이 문장의 **어디에** 있는지 말해 주는 벡터, 곧
# **위치 인코딩 (positional encoding)** 을 더합니다. 트랜스포머가 그다음에 하는 모든 일은 이 합에서
# 시작합니다.
#
# 강의의 학습된 모델(`Tuesday, March 5, 2019` 같은 날짜를 `2019-03-05`로)에서 둘을 살펴보고, 논문의 위치
# 인코딩을 손으로 계산해 qkv의 것과 비교한 뒤, 위치를 주는 다른 두 방법인 학습되는 벡터와 회전(RoPE)을
# 만납니다.

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
# 연습 문제의 확인 함수들을 여기서 정의합니다. 맨 끝의 풀이 부분도 이 함수들을 사용합니다 (읽으면 답이
# 드러납니다).

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
# ## 1. 임베딩은 표의 한 행
#
# `E`에는 id마다 행이 하나 있습니다. id를 임베딩한다는 것은 그 행을 꺼내는 것입니다. 대수로 쓰면 원-핫
# (one-hot) 벡터에 `E`를 곱하는 것이고, 그래서 임베딩은 학습이 다른 가중치처럼 조정하는 가중치를 가진
# 층입니다.

# %%
date = "Tuesday, March 5, 2019"
ids = torch.tensor(tok.encode(date))
one_hot = torch.nn.functional.one_hot(ids, num_classes=tok.vocab_size).float()   # (tokens, vocabulary)
print(torch.allclose(one_hot @ E, E[ids]), "- one-hot @ E is the same as picking rows:", tuple(E[ids].shape))
print("the model then scales them by sqrt(d_model) =", embed.scale)

# %% [markdown]
# ### 연습 2.1
#
# 문자 `"7"`의 임베딩, 곧 `E`의 해당 행을 꺼내세요. (`tok.token_to_id`가 id를 줍니다.)

# %%
row_7 = ...  # your code: the row of E for the id of "7"

# %%
check_2_1(row_7)

# %% [markdown]
# ## 2. 학습이 표에 담은 것
#
# 학습 전에는 행들이 무작위입니다. 학습 후에는 비슷한 역할을 하는 토큰들이 비슷한 벡터를 얻는 경향이
# 있습니다. 신경망의 나머지 부분이 그 토큰들을 비슷하게 다루기 때문입니다. 코사인 유사도(cosine
# similarity)로 잽니다. 방향이 같으면 1, 관계가 없으면 0입니다.

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
# 출력된 이웃과 평균을 읽고, 학습 전의 같은 모델과 비교해 보세요. 이 실행에서 측정한 값입니다. 학습
# 전에는 어떤 두 행도 서로 관계가 없습니다 (유사도가 0 근처). 숫자는 거의 그대로 출력에 복사되고 글자는 달
# 이름과 요일 이름의 일부로 읽히므로, 모델에게는 숫자끼리 모으고 글자와 떼어 놓을 이유가 있습니다. 1분 동안
# 학습한 작은 모델은 그중 일부를 해냈을 뿐, 전부는 아닙니다.
#
# ## 3. 위치: 사인파 인코딩
#
# 어텐션 자체는 *집합*을 봅니다. 토큰들을 섞으면 각 토큰은 같은 결과를 순서만 섞인 채로 받습니다. 그래서
# 논문은 모든 임베딩에, 위치 $pos$에만 의존하고 여러 파장의 사인과 코사인으로 만든 벡터를 더합니다.
#
# $$PE_{(pos,\,2i)} = \sin\!\big(pos / 10000^{2i/d_{model}}\big), \qquad PE_{(pos,\,2i+1)} = \cos\!\big(pos / 10000^{2i/d_{model}}\big)$$
#
# 차원 쌍 $(2i, 2i+1)$ 하나하나는 제 속도로 도는 시곗바늘입니다. 앞쪽 쌍은 빠르고, 뒤쪽 쌍은 아주 느립니다.
# 모델의 모듈이 앞쪽 위치들의 표를 줍니다.

# %%
n_positions = 50
pe_model = embed.position(n_positions)                    # (positions, d_model), no parameters
print(tuple(pe_model.shape), "- trainable parameters in it:", sum(p.numel() for p in embed.position.parameters()))

# %% [markdown]
# ### 연습 2.2: 손으로 만드는 표
#
# 모든 위치(행)와 모든 쌍 $i$(열)에 대해 각도 $pos / 10000^{2i/d_{model}}$를 계산하세요. `positions`와
# `two_i`는 준비되어 있습니다. 열 벡터와 행 벡터를 브로드캐스팅하면 (50, d_model / 2) 격자 전체가 한 번에
# 나옵니다. 확인 함수는 여러분의 각도로 사인과 코사인을 만들어 모델의 표와 비교합니다.

# %%
positions = torch.arange(n_positions, dtype=torch.float64)[:, None]   # (50, 1)
two_i = torch.arange(0, d_model, 2, dtype=torch.float64)               # (64,): 0, 2, 4, ...
angle = ...  # your code: positions / 10000 ** (two_i / d_model)

# %%
check_2_2(angle)

# %% [markdown]
# 표를 그림으로(행: 위치, 열: 차원), 그리고 모든 위치의 벡터끼리의 유사도를 봅시다.

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
# 왼쪽: 앞쪽 차원은 위치가 바뀔 때마다 빠르게 변하고, 뒤쪽 차원은 거의 변하지 않으므로, 위치마다 고유한
# 무늬를 얻습니다. 오른쪽: $PE(p) \cdot PE(q)$는 대각선에서 가장 크고 거리에 따라 줄어들며, 어디서나 같은
# 모양입니다. $\sin a \sin b + \cos a \cos b = \cos(a - b)$이므로 $p - q$에만 의존하기 때문입니다.
#
# 논문이 이 형태를 고른 이유는, $k$ 위치만큼 옮기는 것이 모든 위치에서 같은 선형 사상이기 때문입니다. 각
# $(\sin, \cos)$ 쌍이 각도 $k / 10000^{2i/d}$만큼 돕니다. 확인해 봅시다. $k = 5$에 대한 사상을 한 번
# 만들면, 위치 0을 5로, 10을 15로, 30을 35로 옮깁니다.

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
# ## 4. 학습되는 위치
#
# 논문의 또 다른 선택(논문은 둘 다 비슷하게 잘 된다고 보고했습니다)이자 BERT와 GPT-2의 선택입니다. 위치마다
# 학습되는 벡터 하나를 두고, 무작위로 시작해 임베딩처럼 학습으로 조정합니다. qkv의 `ModelConfig`에서는
# `positional="learned"`입니다.

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
# 학습 전의 위치들은 자신의 순서를 전혀 모릅니다 (대각선만 두드러집니다. 각 벡터와 자기 자신). 위치 7이
# 위치 8 옆이라는 것을 학습이 데이터로부터 찾아내야 하고, 학습되는 표에는 `max_len`을 넘는 위치의 벡터가
# 아예 없습니다. 사인파는 둘 다 공짜로 줍니다. 학습되는 벡터는 데이터가 많은 곳에서 데이터에 더 잘 맞출 수
# 있습니다.
#
# ## 5. 회전 위치 (RoPE)
#
# 2021년 이후의 언어 모델 대부분(Su et al., "RoFormer"; Llama)은 임베딩에 아무것도 더하지 않습니다. 대신
# 모든 어텐션 층 안에서 각 쿼리 (query)와 키 (key)를 그 위치만큼 **회전**시킵니다. 쌍
# $(x_{2i}, x_{2i+1})$가 각도 $pos \cdot \theta^{-2i/d_{head}}$만큼 돕니다. 다시 사인파의 시계입니다.
# 회전은 길이를 바꾸지 않고, $m$만큼 돈 쿼리와 $n$만큼 돈 키의 내적은 $m - n$에만 의존합니다. 어텐션
# 점수가 상대 위치를 직접 봅니다.
#
# 손으로 만든 회전입니다.

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
# ### 연습 2.3: 거리만 중요하다
#
# `rotate`로 위치 10의 쿼리 `q`와 위치 8의 키 `k`의 어텐션 점수(내적)를 계산하세요. 확인 함수가 위치 3과
# 1에서의 점수와 비교합니다.

# %%
q, k = torch.randn(d_head), torch.randn(d_head)
score_10_8 = ...  # your code: rotate q to position 10, k to position 8, dot product

# %%
check_2_3(score_10_8)

# %% [markdown]
# 모든 위치 쌍에 대해서도 마찬가지입니다. 행 $m$의 `q`와 열 $n$의 `k`의 점수는 각 대각선($m - n$ 고정)을
# 따라 일정합니다.

# %%
scores = torch.tensor([[float(rotate(q, m) @ rotate(k, n)) for n in range(32)] for m in range(32)])
fig, ax = plt.subplots(figsize=(3.8, 3.4))
ax.imshow(scores, cmap="RdBu_r")
ax.set(title="RoPE: score of q at m, k at n", xlabel="key position n", ylabel="query position m")
plt.show()

# %% [markdown]
# "이 토큰은 어디에 있는가?"에 대한 세 가지 답입니다. 사인파(한 번 더해지고, 고정되어 있으며, 상대 이동은
# 회전), 학습되는 벡터(한 번 더해지고, 학습되며, `max_len`까지로 제한), 그리고 RoPE(모든 층에서 쿼리와 키를
# 회전시켜, 점수가 거리에만 의존). 다음 노트북은 이 벡터들을 어텐션으로 가져갑니다.
#
# ## 풀이

# %%
check_2_1(E[tok.token_to_id("7")])

# %%
check_2_2(positions / 10000 ** (two_i / d_model))

# %%
check_2_3(rotate(q, 10) @ rotate(k, 8))
