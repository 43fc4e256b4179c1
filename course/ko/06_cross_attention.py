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
# # 6. 교차 어텐션: 디코더는 소스의 어디를 보는가
#
# 논문의 트랜스포머(Transformer)는 두 부분으로 되어 있습니다. **인코더**(encoder)는 소스 문장 전체를 한 번
# 읽고, 소스 토큰(token)마다 벡터 하나씩으로 바꿉니다. 이것을 *메모리*(memory)라고 부릅니다. **디코더**(decoder)는
# 타깃을 한 토큰씩 씁니다. 디코더의 모든 층(layer)에는 마스크된 셀프 어텐션(노트북 5)과 피드포워드 네트워크(노트북 7)
# 사이에 세 번째 부분층(sublayer)이 있습니다. 바로 **교차 어텐션**(cross-attention)입니다.
#
# - **쿼리**(query)는 디코더에서 옵니다: "다음 토큰을 쓰려면 무엇이 필요한가?"
# - **키**(key)와 **값**(value)은 인코더의 메모리에서 옵니다: "소스에는 이런 내용이 있다."
#
# 그 가중치는 타깃 토큰 × 소스 토큰의 표가 됩니다. 디코더가 쓰는 토큰마다 각 소스 토큰을 얼마나 읽는지를
# 나타내지요. 번역에서는 이 표가 곧 *정렬*(alignment)입니다. 여기서는 날짜를 바꿔 쓰는 모델,
# "5 March 2019" -> "2019-03-05"의 정렬을 살펴봅니다.

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
# ## 6.1 한 모델 안의 세 가지 어텐션
#
# qkv의 디코더 층입니다. `self.cross_attn(h, memory, ...)`가 교차 어텐션입니다. `h`(디코더의 흐름)가 쿼리를,
# `memory`(인코더의 출력)가 키와 값을 만듭니다.

# %%
print(inspect.getsource(type(run.model.decoder.layers[0])))

# %% [markdown]
# `run.attention(text, target)`은 소스와 타깃으로 모델을 한 번 실행하고(학습 때처럼 교사 강요(teacher forcing)로:
# 디코더는 `<bos>`와 오른쪽으로 한 칸 민 타깃을 읽습니다), 세 어텐션의 가중치를 층별로 쌓아 돌려줍니다.

# %%
a = run.attention(text, target=target)
print("source tokens:", a.source_tokens)
print("decoder reads:", a.target_tokens)
print("encoder self-attention", tuple(a.encoder.shape), "(layers, heads, source, source)")
print("decoder self-attention", tuple(a.decoder.shape), "(layers, heads, target, target)")
print("cross-attention       ", tuple(a.cross.shape), "(layers, heads, target, source)")

# %% [markdown]
# 교차 어텐션의 t번째 행은 `a.target_tokens[t]`를 읽고 *다음* 토큰을 예측하는 디코더 위치의 것입니다. 그래서
# `<bos>`의 행이 첫 "2"를 쓰고, "2"의 행이 "0"을 쓰고, 이렇게 이어져 마지막 행이 끝 표시 `<eos>`를 씁니다.
# 각 행에 그 행이 쓰는 토큰을 붙여 둡니다.

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
# 이 노트북 연습 문제의 검사 함수입니다(이 셀을 실행하고 계속 읽으세요).

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
# ## 6.2 층별, 헤드별 정렬

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
# 헤드(head)를 평균하면 층마다 지도가 하나씩 나옵니다.

# %%
fig, axes = plt.subplots(1, L, figsize=(3.4 * L, 3))
for layer in range(L):
    heatmap(axes[layer], a.cross[layer].mean(0), f"layer {layer}, mean over heads")
plt.tight_layout()
plt.show()

# %% [markdown]
# 덩어리를 찾아보세요. 출력의 연도 숫자는 소스의 "2019"를 읽고, 일 "05"는 "5"를 읽고, 월 숫자 "03"은
# "March"라는 *단어*를 읽습니다. 소스에는 "3"이 없습니다. 모델은 어떤 글자가 달을 구별해 주는지를
# 배운 것입니다("Ma"까지는 May일 수도 있지만 "r"이나 "c"는 아닙니다). 헤드마다 일부를 보고, 두 층도 서로
# 다릅니다. 정렬은 한 헤드가 다 맡기보다 여러 헤드에 나뉘어 있습니다. 모든 행이 뚜렷하지는 않습니다.
# "-" 행은 소스에서 가져올 것이 없고, 어떤 숫자는 한 층에서 더 많이 읽힙니다.
#
# 쓰는 토큰마다, 가중치가 가장 큰 소스 토큰 두 개(마지막 층, 헤드 평균)입니다.

# %%
mean_last = a.cross[LAYER].mean(0)
for t, w in enumerate(writes):
    top = mean_last[t].topk(2)
    print(f"writes {w!r:8} reads most {a.source_tokens[int(top.indices[0])]!r} ({top.values[0]:.2f}),"
          f" then {a.source_tokens[int(top.indices[1])]!r} ({top.values[1]:.2f})")

# %% [markdown]
# ### 연습 6.1
# 마지막 층의 헤드 하나만 그렸습니다. "03"의 "3"을 쓰는 행이 가장 뾰족한 헤드입니다. 그 행에서 가중치를
# 가장 많이 받는 소스 위치는 어디입니까(0부터 셉니다: "5"가 0, 공백이 1, "M"이 2, ...)? 그림에서 읽어
# 정수로 답하세요.

# %%
fig, ax = plt.subplots(figsize=(3.4, 3))
heatmap(ax, a.cross[LAYER, SHARP], f"layer {LAYER}, head {SHARP}")
plt.show()
print(list(enumerate(a.source_tokens)))

# %%
month_position = ...  # your answer: a source position, an int
check_6_1(month_position)

# %% [markdown]
# ## 6.3 쿼리는 디코더에서, 키와 값은 인코더에서
#
# `run.explain`은 같은 순전파(forward pass)의 모든 텐서를 기록합니다(`explanation.trace`). 한 층의 교차
# 어텐션에서 Q는 타깃 토큰마다, K와 V는 소스 토큰마다 한 행씩입니다.

# %%
print("Q", tuple(cross.q.shape), "(heads, target tokens, d_head)")
print("K", tuple(cross.k.shape), "(heads, source tokens, d_head)")
print("V", tuple(cross.v.shape), "(heads, source tokens, d_head)")
print("weights", tuple(cross.weights.shape), "(heads, target tokens, source tokens)")

# %% [markdown]
# K는 인코더의 출력인 메모리에 이 층의 키 행렬을 곱해 만듭니다. 같은 메모리가 모든 디코더 층과 모든 단계에
# 쓰입니다(그래서 디코더는 이것을 한 번 계산해 두고 다시 씁니다, 노트북 9). Q는 디코더 자신의 흐름에서
# 만듭니다.

# %%
memory = explanation.trace.memory                          # (source tokens, d_model): the encoder's output
w = cross.weights_used                                     # the projection matrices, cut per head
k_again = memory @ w.w_k + w.b_k[:, None, :]               # (heads, source tokens, d_head)
q_again = cross.x @ w.w_q + w.b_q[:, None, :]              # cross.x: the decoder stream the queries come from
print("K = memory W_K + b_K:", torch.allclose(k_again, cross.k, atol=1e-5))
print("Q = decoder W_Q + b_Q:", torch.allclose(q_again, cross.q, atol=1e-5))

# %% [markdown]
# ### 연습 6.2
# 기록된 Q와 K로 교차 어텐션 가중치의 한 행을 다시 계산하세요. 헤드 `head`의 `row`번째 행은
# softmax(q · kᵀ / sqrt(d_head))이고, q = `cross.q[head, row]`(디코더 쿼리 하나), k = `cross.k[head]`(모든 소스
# 키)입니다. 적용할 마스크(mask)는 없습니다. 모든 소스 토큰을 읽을 수 있습니다.

# %%
head, row = 0, month_row
attention_row = ...  # your code: softmax(cross.q[head, row] @ cross.k[head].T / sqrt(d_head))
check_6_2(attention_row, head, row)

# %% [markdown]
# ## 6.4 같은 날짜의 다른 표기
#
# 같은 날을 세 가지 형식으로 썼습니다. 출력의 숫자는 형식이 그 정보를 어디에 두든 찾아갑니다.
# "05.03.2019"에서는 월의 "3"이 그냥 "3"을 읽으면 됩니다.

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
# ## 6.5 전체 설명 페이지
#
# `explanation`은 이 문장에 대한 `qkv explain`의 페이지입니다. 순전파의 모든 단계를 실제 숫자와 함께 보여
# 주고, 마지막 층을 확대해 보여 줍니다. 새 셀에 `explanation`만 쓰면 Jupyter가 페이지를 바로 보여 줍니다
# (그리는 데 몇 초 걸립니다). "cross-attention"까지 내려가 보세요.

# %% [markdown]
# ## 요약
#
# - 디코더의 모든 층에는 교차 어텐션이 있습니다. 쿼리는 디코더에서, 키와 값은 인코더의 출력(메모리)에서
#   옵니다.
# - 그 가중치(타깃 × 소스)는 정렬입니다. 출력 토큰마다 어느 소스 토큰을 읽는지 보여 줍니다.
# - 각 행은 노트북 3과 같은 softmax(q kᵀ / sqrt(d_head))입니다. q와 k가 어디서 오는지만 다릅니다.
#
# 다음: 노트북 7, 피드포워드 네트워크, 잔차 연결, 층 정규화.

# %% [markdown]
# ## 풀이 (Solutions)
#
# 각 풀이는 연습 문제와 같은 검사를 거칩니다.

# %%
month_position = int(a.cross[LAYER, SHARP, month_row].argmax())
check_6_1(month_position)

# %%
d_head = cross.q.size(-1)
attention_row = torch.softmax(cross.q[head, row] @ cross.k[head].T / math.sqrt(d_head), dim=-1)
check_6_2(attention_row, head, row)
