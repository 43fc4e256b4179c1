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
# # 4. 멀티 헤드 어텐션
#
# 헤드(head) 하나는 각 토큰(token)에게 다른 토큰을 보는 방법을 하나만 줍니다. 소프트맥스
# (softmax) 한 번, 가중치 한 벌이죠. 하지만 토큰 하나가 여러 가지를 동시에 알아야 할 때가
# 있습니다. 바로 앞 글자, 같은 단어의 다른 글자들, 한 항목이 끝나는 쉼표 같은 것들입니다.
# 멀티 헤드 어텐션(multi-head attention)은 헤드 $H$개를 나란히 돌립니다. 각 헤드는
# $d_k = d_{model}/H$차원의 더 작은 공간에서 자기만의 $W^Q_h, W^K_h, W^V_h$를 쓰고, 그 출력들을
# 다시 이어 붙인 뒤 행렬 하나, $W^O$로 섞습니다.
#
# $$\mathrm{MultiHead}(x) = \mathrm{Concat}(\mathrm{head}_1, \dots, \mathrm{head}_H)\, W^O,
# \qquad \mathrm{head}_h = \mathrm{softmax}\!\left(\frac{Q_h K_h^\top}{\sqrt{d_k}}\right) V_h$$
#
# 이 노트북에서는 학습된 날짜 모델의 헤드 4개가 무엇을 하는지 살펴보고, 모든 헤드를 한꺼번에
# 계산하고, 헤드들과 $W^O$로 어텐션 블록의 출력을 다시 만들어 봅니다. 결과는 매번 모델이 기록한
# 텐서와 비교합니다.

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
# 도우미 함수와 연습 문제의 채점 함수입니다(맨 끝의 풀이 절에서도 씁니다).

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
# ## 헤드 넷, 패턴 넷
#
# 같은 문장에 대한 인코더(encoder) 두 번째 층(layer)의 헤드 4개의 가중치입니다.

# %%
heads(enc.weights, tokens, tokens, "encoder layer 1: one softmax(QK^T/sqrt(d)) per head")

# %% [markdown]
# 같은 문장을 읽는 네 가지 방식입니다. 이 코스가 학습시킨 실행에서는 다음과 같습니다(다른
# 컴퓨터에서 학습된 실행이라면 세부는 달라도 성격은 비슷할 것입니다).
#
# - **헤드 0**: `Tuesday, March`의 거의 모든 글자가 한 글자, `March`의 `c`를 봅니다. 첫 번째
#   층을 지나고 나면 그 위치에는 이미 몇 월인지가 담겨 있고, 이 헤드가 그것을 문장 전체에
#   나눠 줍니다. 연도의 숫자들은 서로를 봅니다.
# - **헤드 1**: 요일의 글자들이 같은 `c`를 좀 더 흐릿하게 보고, 숫자들은 연도를 봅니다.
# - **헤드 2**: 월 이름을 시작하는 `M`에 한 줄, 연도의 `0`에 한 줄이 진하게 보입니다.
# - **헤드 3**: 대체로 여러 키에 옅게 퍼져 있지만, 날짜 `5`와 연도의 마지막 숫자들은 자기
#   자신을 봅니다.
#
# 숫자로도 확인해 봅시다. 쿼리(query) 하나는 가중치를 합해서 1만큼 나눠 주므로, 쿼리 22개는
# 모두 22만큼 나눠 줍니다. 헤드마다 어떤 키(key)가 그중 가장 많이 받을까요?

# %%
for h in range(H):
    received = enc.weights[h].sum(0)             # column sums: the weight each key receives
    top = received.topk(3)
    print(f"head {h}:", ",  ".join(f"'{tokens[j]}' (#{j}) {float(w):4.1f}" for w, j in zip(top.values, top.indices)))

# %% [markdown]
# ## 모든 헤드를 한꺼번에
#
# 모델 안에는 헤드를 도는 반복문이 없습니다. 모든 헤드의 투영은 종류별로 행렬 하나이고, 모양은
# (`d_model`, $H \cdot d_k$) = (128, 128)입니다. $x W^Q$는 (S, 128)이 되고, 헤드 $h$는 열
# $h d_k \dots (h+1) d_k$를 가집니다. `view`와 `transpose`로 이것을 (H, S, $d_k$)로 바꾸면 헤드가
# 맨 앞의 배치 차원이 되고, 그다음부터는 모든 행렬 곱이 헤드 전체에 대해 한 번에 돌아갑니다.

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
# ### 연습 4.1
#
# `Qh`와 `Kh`로 **모든** 헤드의 어텐션 가중치를 한 번에 구하세요. 모양은 (H, S, S)입니다.
# (문장 하나를 읽는 인코더의 마스크(mask)는 전부 True라서 마스크는 필요 없습니다. 힌트: `@`는
# 마지막 두 차원끼리 곱하고 첫 차원은 배치로 다룹니다. `Kh.transpose(-2, -1)`이 헤드별 $K^\top$입니다.)

# %%
weights_all = ...  # your code / 직접 작성

check_4_1(weights_all)

# %% [markdown]
# ## 이어 붙이고, $W^O$
#
# 헤드마다 (S, $d_k$)를 돌려줍니다. 자기 가중치에 자기 값(value)을 곱한 것이죠(`enc.mixed`,
# (H, S, $d_k$)). 헤드들의 출력을 다시 나란히 붙이면 (S, $H \cdot d_k$) = (S, 128)로 돌아갑니다.
# 쪼갰던 것을 되돌리는 셈입니다. 그다음 (128, 128) 행렬 하나인 $W^O$가 이것들을 섞습니다.
# $W^O$가 없다면 각 헤드의 결과는 자기 몫인 32개 열에 갇혀 있고, 다음 층은 헤드들이 찾아낸 것을
# 조합할 수 없습니다.

# %%
mixed = enc.weights @ Vh                         # (H, S, d), every head at once
same(mixed, enc.mixed, "heads' outputs")
concat = mixed.transpose(0, 1).reshape(S, H * d)     # (S, 128): head h in columns h*d:(h+1)*d
same(concat[:, d : 2 * d], mixed[1], "columns 32:64 of concat = head 1")
W_O, b_O = attn.out_proj.weight, attn.out_proj.bias  # (128, 128), (128,): out = concat @ W_O.T + b_O
print("W_O", tuple(W_O.shape), " b_O", tuple(b_O.shape))

# %% [markdown]
# ### 연습 4.2
#
# `concat`, `W_O`, `b_O`로 멀티 헤드 어텐션의 출력 (S, 128)을 구하세요. (다른 모든 `nn.Linear`와
# 마찬가지로 가중치는 (출력, 입력) 모양으로 저장되어 있으므로, 곱은 `concat @ W_O.T`입니다.)

# %%
out = ...  # your code / 직접 작성

check_4_2(out)

# %% [markdown]
# ## 헤드별 몫
#
# 이어 붙인 것에 $W^O$를 곱하는 것은, 각 헤드에게 $W^O$의 자기 몫(논문 표기로는 그 헤드의 숫자
# 32개가 곱해지는 32개 행, PyTorch의 (출력, 입력) 가중치로는 32개 열)을 주고 결과를 더하는 것과
# 같습니다: $\mathrm{Concat}(\mathrm{head}_h) W^O = \sum_h \mathrm{head}_h W^O_h$. 그러니 출력은
# 헤드마다 하나씩인 기여의 합에 편향(bias)을 더한 것입니다. trace는 그 기여를 `head_outputs`로
# 보관합니다.

# %%
shares = torch.stack([mixed[h] @ W_O[:, h * d : (h + 1) * d].T for h in range(H)])   # (H, S, 128)
same(shares, enc.head_outputs, "each head's share")
same(shares.sum(0) + b_O, enc.out, "sum of shares + b_O")
size = shares.norm(dim=-1)                       # (H, S): how much each head adds to each token
for h in range(H):
    print(f"head {h}: average size of its share {float(size[h].mean()):.2f}")

# %% [markdown]
# ## 어텐션 블록의 출력
#
# 어텐션 둘레에는 잔차 연결(residual connection)이 있습니다(노트북 07). pre-LN에서 블록은
# `stream + MultiHead(LayerNorm(stream))`을 계산합니다. 헤드들의 결과는 원래 있던 것에 *더해집니다*.

# %%
block = trace.encoder_layers[1].self_block
same(block.input + enc.out, block.residual, "stream + attention")

# %% [markdown]
# ## 날짜 과제에서 헤드들이 보는 곳
#
# 가장 또렷한 그림은 교차 어텐션(cross-attention)에 있습니다. 디코더(decoder)가 쓰는 글자
# 하나하나가 소스를 바라보는 곳이죠. 아래 그림의 각 행에는 그 위치가 쓰는 글자를 붙였습니다(그
# 위치가 읽는 것은 바로 앞 글자입니다: `<bos>`가 `2`를 쓰고, `2`가 `0`을 쓰고, ...). 디코더의 첫
# 번째 층입니다.

# %%
cross = trace.attention("cross", layer=0)
written = [*trace.tgt.tokens[1:], "<eos>"]       # what each position predicts
heads(cross.weights, written, cross.key_tokens, "decoder layer 0: cross-attention per head", ylabel="writes")

# %% [markdown]
# 디코더는 연도를 먼저 씁니다. 소스에서는 연도가 맨 뒤에 있는데도요. 교차 어텐션이 바로 제자리를
# 찾아가는 방법입니다. 연도의 숫자를 쓰는 동안 헤드들은 `2019`를 보고, 월을 쓰는 동안에는
# `March`(그 `M`, 또는 이 달을 구별해 주는 `c`)를 보고, 일과 그 뒤의 `<eos>`를 쓰는 동안에는
# `5`를 봅니다. 이 정렬(alignment)은 누가 알려 준 것이 아닙니다. 그곳을 보면 다음 글자를 맞히기
# 쉬워지니까 모델이 어디를 볼지 스스로 배운 것입니다. (대시를 쓰는 행이 가장 흐릿합니다. 대시는
# 날짜가 무엇이든 같은 자리에 오니까요.)
#
# 쓰는 글자마다, 각 헤드가 가장 많이 보는 소스 글자입니다.

# %%
print("writes    " + "  ".join(f"head {h}" for h in range(H)))
for t, char in enumerate(written):
    best = cross.weights[:, t].argmax(-1)
    print(f"   {char:5s}  " + "  ".join(f"{cross.key_tokens[int(j)]:>3s}@{int(j):2d}" for j in best))

# %% [markdown]
# 다른 형식 `12.07.1998`은 일, 월, 연도가 반대 순서입니다. 같은 헤드들이 이번에는 연도를 끝에서,
# 월을 가운데서, 일을 맨 앞에서 찾아냅니다.

# %%
other = "12.07.1998"
iso = run.translate(other, beam=1)               # greedy: the model's own output
t2 = run.explain(other, target=iso).trace
c2 = t2.attention("cross", layer=0)
heads(c2.weights, [*iso, "<eos>"], c2.key_tokens, f"decoder layer 0, cross-attention: {other} -> {iso}", ylabel="writes")

# %% [markdown]
# 헤드들은 무엇을 하라는 지시를 받은 적이 없습니다. 누구도 "헤드 2는 연도를 찾아라"라고 쓰지
# 않았습니다. 각 헤드의 $W^Q$, $W^K$, $W^V$는 무작위로 시작했고, 서로 다른 일을 할 때 출력이
# 좋아지기 때문에 학습이 그것들을 각기 다른 방식으로 쓸모 있게 만들었습니다. 헤드가 중복되거나
# 해석하기 어렵게 자랄 수도 있습니다. 히트맵의 패턴은 헤드가 하는 일에 대한 실마리이지 증명이
# 아닙니다.
#
# ## 풀이
#
# 각 풀이는 연습 문제와 같은 채점을 거칩니다.

# %%
check_4_1(torch.softmax(Qh @ Kh.transpose(-2, -1) / math.sqrt(d), dim=-1))

check_4_2(concat @ W_O.T + b_O)
