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
# # 3. 손으로 계산하는 어텐션
#
# 어텐션(attention)은 논문에서 단 한 줄로 적혀 있습니다.
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{d_k}}\right) V$$
#
# 이 노트북에서는 이 한 줄을 평범한 텐서 연산만으로, 한 단계씩 직접 계산합니다. `nn.Module`도,
# 어텐션 함수도 쓰지 않습니다. 숫자도 지어낸 것이 아닙니다. 학습된 모델의 가중치와 실제 문장을
# 가져다 쓰고, 단계마다 여러분이 구한 값을 모델이 그 문장을 읽을 때 직접 기록해 둔 텐서와
# 비교합니다. 둘이 같다면, 여러분이 쓴 코드가 곧 모델이 하는 일이라는 뜻입니다.
#
# 모델은 날짜를 ISO 형식으로 바꿉니다: `Tuesday, March 5, 2019` → `2019-03-05`. 문장은 한
# 글자씩 읽습니다. (이 셀을 처음 실행하면 모델을 학습시키는데, 노트북 컴퓨터에서 1분 정도
# 걸립니다. 코스의 모든 노트북이 이 실행 결과를 함께 쓰고, 그다음부터는 불러오기만 합니다.)

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
# ## 모델이 기록한 것
#
# `run.explain(text, target)`은 문장(소스)과 목표 문장(타깃)으로 순전파(forward pass)를 한 번
# 돌리고, 그동안 계산한 텐서를 모두 `.trace`에 남겨 둡니다. `trace.attention(kind, layer)`는 그중
# 어텐션 하나입니다. `"enc"`는 인코더(encoder)의 셀프 어텐션(self-attention), `"dec"`는
# 디코더(decoder)의 마스크된 셀프 어텐션, `"cross"`는 디코더가 인코더를 바라보는 교차
# 어텐션(cross-attention)입니다. 그 안의 필드가 곧 공식의 각 단계이고, 모든 헤드(head)의 값이
# 한꺼번에 들어 있습니다: `q`, `k`, `v`, `scores`($QK^\top$), `scaled`($/\sqrt{d_k}$), `mask`,
# `weights`(소프트맥스 이후), `mixed`(가중치 × V).

# %%
text, target = "Tuesday, March 5, 2019", "2019-03-05"
trace = run.explain(text, target=target).trace
enc = trace.attention("enc", layer=0)           # the encoder's first self-attention

tokens = enc.key_tokens
print(len(tokens), "tokens:", tokens)
print("q:", tuple(enc.q.shape), " scores:", tuple(enc.scores.shape), " weights:", tuple(enc.weights.shape))


# %% [markdown]
# 모양은 (헤드, 토큰, ...) 순서로 읽습니다. 이 모델에는 헤드가 4개 있고, 문장은 22글자이며,
# 헤드 하나는 $d_k$ = `d_head` = 32차원에서 계산합니다(모델 폭 128을 넷으로 나눈 값).
#
# 작은 도우미 함수 두 개를 만듭니다. `same`은 여러분의 텐서를 기록된 텐서와 비교하고,
# `heatmap`은 어텐션 가중치를 그림으로 그립니다(행은 쿼리, 열은 키). 연습 문제의 채점 함수도
# 여기서 정의해 두어, 맨 끝의 풀이 절에서도 같은 채점을 거치게 합니다.

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
# ## 0단계: 어텐션이 읽는 것
#
# 어텐션은 토큰(token)을 직접 읽지 않고 벡터를 읽습니다. 토큰 하나당 `d_model` = 128개의 숫자로
# 된 행 하나입니다. 첫 번째 층(layer)에서는 토큰 임베딩(embedding)에 위치 정보를 더한 값입니다
# (노트북 02). 이 모델은 어텐션 *앞에* 층 정규화(layer normalization)를 둡니다(pre-LN, GPT-2 이후
# 대부분의 모델이 쓰는 방식). 그래서 0번 층의 어텐션이 읽는 것은
# `LayerNorm(임베딩 + 위치)`입니다. 층과 그 가중치는 `run.model`의 평범한 속성으로 꺼낼 수
# 있습니다.

# %%
layer = run.model.encoder.layers[0]
stream = trace.src.sum                   # token embedding * sqrt(d_model) + position, (22, 128)
x = layer.attn_block.norm(stream)        # pre-LN: attention reads the normalized stream
same(x, enc.x, "x")

# %% [markdown]
# ## 1단계: 헤드 하나의 쿼리, 키, 값
#
# 헤드마다 (`d_model`, `d_head`) 모양의 행렬 $W^Q, W^K, W^V$를 따로 가지고 있습니다.
# 쿼리(query) $Q = x W^Q$, 키(key) $K = x W^K$, 값(value) $V = x W^V$이고, 이 모델은 각각에
# 편향(bias)도 더합니다. PyTorch에서는 헤드 4개의 투영이 종류별로 `nn.Linear` 하나에 모여
# 있습니다. 그 가중치의 모양은 (출력, 입력) = (128, 128)이고 `x @ weight.T + bias`를 계산합니다.
# 헤드 `h`의 몫은 출력 행 `h*32 : (h+1)*32`입니다. 그 부분을 잘라 냅니다.

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
# ## 2단계: 점수, $QK^\top$
#
# $Q$의 $i$번째 행은 토큰 $i$의 쿼리이고, $K$의 $j$번째 행은 토큰 $j$의 키입니다. 둘의 내적이
# 얼마나 잘 맞는지를 말해 줍니다. 모든 쌍을 한 번에 구하면 행렬 곱 하나입니다.

# %%
scores = Q @ K.T                         # (22 queries, 22 keys)
same(scores, enc.scores[h], "scores")
print("query 'M' (index 9) against its first 5 keys:", scores[9, :5].numpy().round(2))

# %% [markdown]
# ## 3단계: 왜 $\sqrt{d_k}$로 나누는가
#
# 평균 0, 분산 1인 난수 $d$개로 된 두 벡터의 내적은 분산이 $d$입니다. 헤드가 넓을수록 점수가
# 커진다는 뜻입니다. 점수가 크면 다음 단계의 소프트맥스(softmax)가 거의 원-핫(one-hot)이 되고,
# 거의 원-핫인 소프트맥스는 기울기를 거의 돌려보내지 못합니다. $\sqrt{d}$로 나누면 헤드 크기와
# 상관없이 퍼짐이 다시 1 정도로 돌아옵니다.

# %%
g = torch.Generator().manual_seed(0)
for dim in (4, 32, 512):
    q, k = torch.randn(10_000, dim, generator=g), torch.randn(10_000, dim, generator=g)
    dots = (q * k).sum(-1)
    print(f"d = {dim:3d}:  std of q.k = {dots.std():6.2f}   std of q.k / sqrt(d) = {(dots / math.sqrt(dim)).std():.2f}")

# %% [markdown]
# ### 연습 3.1
#
# 위의 `Q`와 `K`로 헤드 `h`의 스케일된 점수 $QK^\top / \sqrt{d_k}$를 구하세요.
# 조심할 점: 어떤 $d$일까요? (모델의 폭은 128이고, 헤드 하나의 폭은 `d` = 32입니다.)

# %%
scaled = ...  # your code / 직접 작성: Q @ K.T / math.sqrt(...)

check_3_1(scaled)

# %% [markdown]
# ## 4단계: 마스크
#
# 소프트맥스 전에, 쿼리가 보면 안 되는 키의 점수를 모두 $-\infty$로 바꿉니다. 그러면 그 키의
# 가중치는 정확히 0이 됩니다. 인코더가 문장 하나를 읽을 때는 가릴 것이 없으니 마스크(mask)가
# 전부 `True`("볼 수 있음")입니다. 마스크가 중요해지는 곳은 배치 안의 패딩(padding)과, 미래를
# 보면 안 되는 디코더입니다. 노트북 05에서 자세히 다룹니다. 여기서는 이 단계가 아무것도 바꾸지
# 않습니다.

# %%
print("mask", tuple(enc.mask.shape), "all True:", bool(enc.mask.all()))
masked = enc.scaled[h].masked_fill(~enc.mask, float("-inf"))    # the model's scaled scores, from here on

# %% [markdown]
# ## 5단계: 소프트맥스
#
# 소프트맥스는 점수의 각 행을 양수이면서 합이 1인 가중치로 바꿉니다:
# $w_{ij} = e^{s_{ij}} / \sum_{j'} e^{s_{ij'}}$. 소프트맥스는 **키** 방향으로 계산합니다. 쿼리
# 하나가 자기 주의를 모든 토큰에 어떻게 나눠 줄지 정하는 것이니까요.
#
# ### 연습 3.2
#
# `masked`에서 `torch.softmax`로 헤드 `h`의 어텐션 가중치를 구하세요.

# %%
weights = ...  # your code / 직접 작성: torch.softmax(masked, dim=...)

check_3_2(weights)

# %% [markdown]
# 헤드 3의 가중치를 그림으로 보면 이렇습니다. 각 행은 질문하는 글자이고, 진한 칸은 그 글자가
# 귀 기울이는 글자입니다. `M` 행과, 날짜의 `5` 주변 글자들의 행을 눈여겨보세요.

# %%
heatmap(enc.weights[h], tokens, tokens, f"encoder layer 0, head {h}: softmax(QK^T/sqrt(d))")
plt.show()

# %% [markdown]
# ## 6단계: 값 섞기
#
# 토큰 $i$에 대한 헤드의 출력은 값 벡터의 가중 평균 $\sum_j w_{ij} V_j$입니다. 이번에도 행렬
# 곱 하나입니다.

# %%
mixed = enc.weights[h] @ V               # (22, 32): one new vector per token
same(mixed, enc.mixed[h], "weights @ V")
top = enc.weights[h][9].topk(3)
print("query 'M' listens most to", [(tokens[j], round(float(w), 2)) for w, j in zip(top.values, top.indices)])

# %% [markdown]
# 쿼리 하나가 가중치를 거의 다 키 하나에 몰아주면, 그 출력은 그 키의 값 벡터를 거의 그대로
# 복사한 것이 됩니다. 어텐션은 이렇게 정보를 한 위치에서 다른 위치로 옮깁니다. 여기서는
# March의 `M`이 가장 높은 키의 값이 담은 정보를 가져옵니다(이 코스가 학습시킨 실행에서는
# 요일 끝의 `y`).
#
# 헤드 하나는 이것이 전부입니다. 행렬 곱 네 번, 나눗셈 한 번, 마스크, 소프트맥스. 나머지 세
# 헤드도 각자의 $W^Q, W^K, W^V$로 똑같은 일을 동시에 합니다. 헤드를 합치는 일은 노트북 04에서
# 합니다.
#
# ## 디코더: 같은 계산, 이번에는 마스크가 중요합니다
#
# 디코더의 셀프 어텐션은 타깃 `<bos> 2 0 1 9 - 0 3 - 0 5`를 쓰는 도중에 읽습니다. 위치 $i$는
# 위치 $0..i$만 볼 수 있습니다. 그래서 마스크는 아래 삼각 행렬 모양입니다.

# %%
dec = trace.attention("dec", layer=0)
print(dec.query_tokens)
print(dec.mask.int())


# %% [markdown]
# ### 연습 3.3
#
# 공식 전체를 함수 하나로 써 보세요. 헤드 하나의 `Q`, `K`, `V`와 불리언 `mask`(True = 볼 수
# 있음)를 받아 어텐션 가중치와 출력을 돌려줍니다. 채점 함수는 이 함수를 디코더의 헤드 `h`에
# 적용해 모델이 기록한 값과 비교합니다. (힌트: `scores.masked_fill(~mask, float("-inf"))`)

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
# 대각선 위쪽은 모두 정확히 0입니다. 어떤 위치도 자기보다 뒤에 오는 글자를 읽지 않습니다.
#
# 어떤 문장, 어떤 층, 어떤 헤드든 이 모든 단계를 숫자와 함께 한 페이지에서 보려면
# `run.explain(text, layer=0, head=1)`을 쓰세요. (Jupyter에서는 그 자리에 바로 보이고,
# `.save("page.html")`은 파일로 저장합니다.)
#
# ## 풀이
#
# 각 풀이는 연습 문제와 같은 채점을 거칩니다.

# %%
check_3_1(Q @ K.T / math.sqrt(d))

check_3_2(torch.softmax(masked, dim=-1))


def attention_solution(Q, K, V, mask):
    scores = Q @ K.T / math.sqrt(Q.size(-1))
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return weights, weights @ V


check_3_3(attention_solution)
