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
# # 0. 어텐션 이전: 트랜스포머가 대신한 모델들
#
# 트랜스포머(Transformer, Vaswani et al., 2017)는 갑자기 나타나지 않았습니다. 앞선 모델들은 각각 이전
# 모델의 약점 하나를 고치고, 또 다른 약점을 남겼습니다.
#
# | 모델 | 입력을 읽는 방식 | 약점 |
# |---|---|---|
# | 순방향 신경망 (feed-forward network) | 정해진 창(window) 안의 토큰을 한꺼번에 | 창 밖은 기억하지 못함; 단어 주머니(bag of words)에는 순서가 없음 |
# | 순환 신경망 (RNN) | 토큰을 하나씩 읽어 은닉 상태(hidden state)에 담음 | 먼 거리에서 기울기가 사라짐 (vanishing gradient) |
# | LSTM / GRU | 같은 방식에 게이트(gate)를 더함 | 여전히 한 단계씩 차례로 계산 |
# | seq2seq (2014) | 인코더 (encoder) RNN 다음에 디코더 (decoder) RNN | 디코더가 받는 것은 **고정 길이 벡터 하나** |
# | + 어텐션 (attention, Bahdanau et al., 2015) | 디코더가 인코더의 모든 상태를 돌아봄 | 순환 계산은 여전히 순차적 |
# | 트랜스포머 (2017) | 어텐션만으로, 모든 위치를 한꺼번에 | 어텐션 비용이 길이의 제곱으로 늘어남 |
#
# 이 노트북은 각 약점을 직접 바꿔 볼 수 있는 작은 예제로 측정하고, 마지막에 qkv의 **역사 실험실**
# (`qkv history`)을 실행합니다. 이 실험실은 다섯 모델을 같은 과제, 같은 데이터, 같은 예산으로 학습시키고
# 측정한 결과를 보고합니다.
#
# 셀을 위에서 아래로 실행하세요 (Shift+Enter). 연습 문제는 답을 쓸 자리에 `...`를 남겨 두었고, 바로 다음
# 셀이 답을 확인합니다. 풀이는 맨 끝에 있습니다.

# %%
import json
from dataclasses import asdict
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import nn

_ = torch.manual_seed(0)                 # the same random numbers on every run


# %% [markdown]
# 이 노트북 연습 문제의 확인 함수들을 여기서 정의합니다. 맨 끝의 풀이(Solutions) 부분도 같은 함수를
# 사용합니다. (답이 드러나니 읽지 않고 넘어가도 됩니다.)

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
# ## 1. 순방향 신경망: 기억도 순서도 없음
#
# 순방향 신경망은 정해진 크기의 입력을 출력으로 바꿉니다. 문장을 넣으려면 먼저 문장을 정해진 크기로
# 만들어야 합니다. 고전적인 방법은 두 가지입니다.
#
# - **단어 주머니 (bag of words)**: 단어 벡터를 모두 더합니다. 어떤 길이든 들어가지만 순서가 사라집니다.
# - 마지막 *n*개 단어의 **고정 창 (fixed window)** 을 이어 붙입니다 (Bengio et al., 2003). 창 안의 순서는
#   남지만, 창 밖은 존재하지 않습니다.
#
# 아래는 무작위 단어 벡터로 만든 단어 주머니입니다 (학습을 해도 요점은 같습니다).

# %%
vocab = {"dog": 0, "bites": 1, "man": 2, "the": 3}
E = torch.randn(len(vocab), 8)                      # one 8-number vector per word


def bag(sentence):
    return E[[vocab[w] for w in sentence.split()]].sum(dim=0)


print(torch.allclose(bag("dog bites man"), bag("man bites dog")))   # True: the network cannot tell who bit whom


# %% [markdown]
# 신경망이 다음에 무엇을 하든, 두 문장에 대해 같은 숫자를 받습니다. 창은 순서를 지키지만 시야에 한계가
# 있습니다. 3단어 창은 `the dog that the cat saw bites the man`에서 `bites the man`만 보고, *무엇이*
# 무는지는 끝내 알 수 없습니다. 언어에는 순서를 지키면서 길이에 제한이 없는 기억이 필요합니다. 그것을
# 준 것이 순환(recurrence)입니다.
#
# ## 2. 순환 신경망과 기울기 소실
#
# RNN은 토큰을 하나씩 읽으면서 은닉 상태 $h_t$를 유지하고, 매 단계 같은 가중치로 이를 갱신합니다.
#
# $$h_t = \tanh(W_{ih}\,x_t + b_{ih} + W_{hh}\,h_{t-1} + b_{hh})$$
#
# `torch.nn.RNN`이 정확히 이 식입니다. 무작위 입력 벡터 60개로 된 시퀀스에 하나를 실행해 봅시다.

# %%
T, D, H = 60, 16, 32                                 # time steps, input size, hidden size
x = torch.randn(1, T, D)                             # (batch, time, features)
rnn = nn.RNN(D, H, batch_first=True)
outputs, h_last = rnn(x)                             # outputs: (1, T, H), the state after every step
print(tuple(outputs.shape), "- the state after every step, and the last one:", tuple(h_last.shape))

# %% [markdown]
# ### 연습 0.1: 한 단계를 손으로
#
# $x_1$ = `x[0, 0]`과 $h_0 = 0$에서 첫 상태 $h_1$을 직접 계산하세요. 가중치는
# `rnn.weight_ih_l0` ($W_{ih}$, 모양 (H, D)), `rnn.weight_hh_l0` ($W_{hh}$), `rnn.bias_ih_l0`,
# `rnn.bias_hh_l0`입니다.

# %%
h_1 = ...  # your code: torch.tanh(W_ih @ x_1 + b_ih + ...)

# %%
check_0_1(h_1)


# %% [markdown]
# ### 기울기는 얼마나 멀리 거슬러 올라갈까?
#
# RNN을 학습시킨다는 것은 이렇게 묻는 것입니다. 끝의 출력이 틀렸다면 *앞쪽* 입력은 어떻게 처리되었어야
# 했을까? 그 답은 모든 단계를 거꾸로 지나가며, 단계마다 같은 야코비 행렬(Jacobian)
# $\partial h_t / \partial h_{t-1} = \mathrm{diag}(1 - h_t^2)\,W_{hh}$이 곱해집니다. 이 곱이 단계마다
# 신호를 조금씩 줄이면, 60단계 뒤에는 거의 아무것도 남지 않습니다.
#
# 직접 측정해 봅니다. 각 입력 위치 $t$에 대해 $\partial\,(h_T \text{의 합}) / \partial x_t$의 크기입니다.

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
# 그림을 오른쪽에서 왼쪽으로 읽으세요. 기울기가 흘러가는 방향입니다. 한 단계 거슬러 갈 때마다 거의 일정한
# 비율을 잃으므로, 로그 눈금에서 곡선은 직선이 되고, 첫 입력들이 받는 기울기는 마지막 입력보다 몇 자릿수나
# 작습니다 (출력된 비율을 보세요). RNN은 가까운 패턴은 쉽게 배우지만 먼 패턴은 거의 배우지 못합니다.
# (순환 가중치가 더 크면 같은 곱이 오히려 커질 수 있습니다. 이것이 기울기 폭발(exploding gradient)이고,
# 학습에서 기울기를 잘라 내는(clipping) 이유입니다.)
#
# ## 3. LSTM과 GRU: 게이트
#
# LSTM (Hochreiter & Schmidhuber, 1997)은 **셀 상태 (cell state)** $c_t$를 더합니다. 셀 상태는 덧셈으로
# 갱신되고, 게이트($x_t$와 $h_{t-1}$에서 계산한 0과 1 사이의 수)가 이를 조절합니다.
#
# $$c_t = f_t \odot c_{t-1} + i_t \odot \tilde c_t, \qquad h_t = o_t \odot \tanh(c_t)$$
#
# **망각 게이트 (forget gate)** $f_t$가 1에 가까우면 $c_t \approx c_{t-1}$입니다. 셀이 정보와 기울기를 거의
# 그대로 다음 단계로 넘깁니다. GRU (Cho et al., 2014)는 게이트 두 개로 같은 일을 합니다:
# $h_t = (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t$.
#
# 게이트는 길을 열어 둘 *수* 있지만, 초기화 직후에는 아직 그렇지 않습니다. 위 그림에서 LSTM과 GRU도
# 기울기가 사라지는 것은, 게이트가 $\sigma(0) = 0.5$ 근처에서 시작해 매 단계 신호를 절반으로 줄이기
# 때문입니다. 망각 게이트가 어디서 시작할지는 그 편향(bias)이 정합니다.

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
# ### 연습 0.2: 게이트를 열어라
#
# 망각 편향 1 (흔히 권하는 값이며 qkv 역사 실험실이 쓰는 값)만으로도 도움이 됩니다. 60단계 앞의 $x_1$에
# 닿는 기울기가 $x_T$에 닿는 기울기의 1% 이상이 되는 편향 값을 찾으세요.

# %%
forget_bias = ...  # your answer: a number

# %%
check_0_2(forget_bias)


# %% [markdown]
# ## 4. seq2seq: 문장 전체를 벡터 하나에
#
# 번역을 위해 Sutskever et al. (2014)과 Cho et al. (2014)은 RNN 두 개를 썼습니다. **인코더**가 원문을 읽고,
# **디코더**가 번역문을 씁니다. 디코더가 원문에 대해 아는 것은 인코더의 마지막 상태, 곧 고정 길이 벡터
# 하나뿐입니다. qkv 역사 실험실에 이 모델이 있습니다 (`qkv.history.Seq2Seq`). 짧은 입력과 긴 입력에 대해
# 디코더가 무엇을 받는지 보세요.

# %%
from qkv.history import AttentionSeq2Seq, RecurrentConfig, Seq2Seq

d_hidden = 32
seq2seq = Seq2Seq(RecurrentConfig(src_vocab_size=30, tgt_vocab_size=30, cell="gru", d_hidden=d_hidden))
for n in (5, 50):
    memory, _ = seq2seq.encode(torch.randint(4, 30, (1, n)))        # (1, n, d_hidden): a state per source token
    print(f"{n:3} source tokens -> {tuple(memory.shape[1:])} encoder states -> "
          f"the decoder gets only the last one: {tuple(memory[0, -1].shape)}")

# %% [markdown]
# 토큰이 5개든 50개든 디코더는 같은 32개의 숫자를 받습니다. 긴 문장은 그 안에 눌러 담겨야 하고, 디코더는
# 여러 단계 뒤에 쓰인 상태에서 첫 단어들을 꺼내야 합니다.
#
# ## 5. Bahdanau 어텐션: 출력마다 새로운 문맥
#
# Bahdanau, Cho & Bengio (2015)는 인코더의 상태 $h_1 \dots h_S$를 *모두* 남겨 두고, 디코더가 출력 단계
# $t$마다 어디를 볼지 고르게 했습니다. 현재 상태 $s_t$로 원문의 각 위치에 점수를 매기고, 소프트맥스
# (softmax)로 정규화한 다음, 가중 평균을 읽습니다.
#
# $$e_{tj} = v^\top \tanh(W s_t + U h_j), \qquad a_{tj} = \mathrm{softmax}_j(e_{tj}), \qquad c_t = \sum_j a_{tj}\, h_j$$
#
# 트랜스포머는 바로 이 아이디어(쿼리 (query)가 키 (key)에 점수를 매기고, 소프트맥스, 값 (value)의 가중합)를
# 그대로 남기고 순환을 없앴습니다. 아래는 실험실의 `AdditiveAttention` 모듈로 계산한 한 단계입니다.

# %%
attn_model = AttentionSeq2Seq(RecurrentConfig(src_vocab_size=30, tgt_vocab_size=30, cell="gru", d_hidden=d_hidden))
src = torch.randint(4, 30, (1, 7))
memory, src_mask = attn_model.encode(src)               # (1, 7, 32): all encoder states are kept
s_t = torch.randn(1, 1, d_hidden)                        # one decoder state (the query)
context, weights = attn_model.attention(s_t, memory, src_mask)
a, memory = weights[0, 0].detach(), memory[0].detach()   # a: (7,) one weight per source token; memory: (7, 32)
print("weights:", [round(w, 3) for w in a.tolist()], " sum =", round(float(a.sum()), 4))


# %% [markdown]
# ### 연습 0.3: 문맥 벡터
#
# 가중치 `a` (모양 (7,))와 인코더 상태 `memory` (모양 (7, 32))로 $c_t = \sum_j a_{tj} h_j$를 계산하세요.

# %%
c_t = ...  # your code: the weighted sum of the rows of memory

# %%
check_0_3(c_t)


# %% [markdown]
# ## 6. 역사 실험실: 같은 과제, 같은 예산, 다섯 모델
#
# `qkv history`는 고정 벡터 하나를 쓰는 RNN, LSTM, GRU 인코더-디코더와, Bahdanau 어텐션을 쓰는 GRU,
# 그리고 트랜스포머를 학습시킵니다. 다섯 모델은 매개변수 수가 거의 같고, 한 과제(여기서는 `reverse`:
# 문자열을 거꾸로 쓰기)의 같은 배치로 학습합니다. 그다음 입력 길이별 정확 일치(exact match) 정확도, 학습
# 곡선, 한 단계의 시간, 그리고 위에서 직접 잰 기울기 흐름을 이번에는 학습되는 전체 모델에서 측정합니다.
# 보고서는 결론을 그 실행의 숫자로부터 계산하며, 실행이 너무 짧아 모델의 순위를 매길 수 없으면 그렇다고
# 말합니다.
#
# 노트북에서는 예산이 아주 작아야 합니다. 모델마다 40단계입니다 (다섯 모델 모두 합쳐 CPU 약 10초. 터미널의
# `qkv history --quick`은 모델마다 500단계, 약 3분입니다). 결과는 `../runs/history`에 저장되고, 셀을 다시
# 실행하면 저장된 결과를 읽습니다 (새로 측정하려면 그 폴더를 지우세요).

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
# 보고서는 **"Too short to rank" (순위를 매기기에 너무 짧음)** 로 시작하며, 그 말이 맞습니다. 40단계 뒤에는
# 어떤 모델도 문자열 뒤집기를 배우지 못했고, 정확도 차이는 잡음입니다. 실험실은 이 판단을 실행 자체에서
# 계산합니다 (최적화 단계가 400보다 적거나, 정확 일치 50%를 넘은 모델이 없음). 뒷받침할 수 없는 순위를
# 출력하지 않는 것입니다. 해결책은 더 오래 학습하는 것뿐입니다. 터미널에서:
#
#     qkv history --quick
#
# 학습이 필요 없는 측정이 하나 있습니다. **초기화 시점**의 기울기 흐름으로, 표의 마지막 열과 아래 실험실의
# 그림입니다. 2절의 실험을 각 모델 전체에 대해 20글자 입력으로 실행한 것입니다.

# %%
display(Image(filename=str(out / "gradient_flow.png"), width=640))
for name, m in results["models"].items():
    flow = m["gradient_flow_init"]
    print(f"{m['label']:20} at initialization: first position gets {flow[0] / flow[-1]:.1e} of the last one's gradient")

# %% [markdown]
# 순수 RNN의 기울기는 첫 위치 쪽으로 갈수록 기하급수적으로 줄어듭니다. 게이트가 있는 LSTM과 GRU는 덜
# 줄어듭니다. 어텐션을 쓰는 GRU와 트랜스포머에서는 원문의 모든 위치가 모든 출력에서 어텐션 한 번 거리에
# 있으므로, 첫 위치도 마지막 위치와 거의 같은 기울기를 받습니다. 다음 노트북들이 이 길을 하나씩 쌓아
# 갑니다. 토큰 (token, 노트북 1), 벡터와 위치 (2), 그리고 어텐션 자체 (3).
#
# ## 풀이 (Solutions)
#
# 각 풀이는 여러분의 답과 같은 확인 함수를 거칩니다.

# %%
W_ih, W_hh, b_ih, b_hh = rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0
h_0 = torch.zeros(H)
check_0_1(torch.tanh(W_ih @ x[0, 0] + b_ih + W_hh @ h_0 + b_hh))

# %%
check_0_2(3.0)          # sigmoid(3) = 0.95: the cell keeps 95% of itself at each step

# %%
check_0_3(a @ memory)   # (7,) @ (7, 32) -> (32,): the sum of a_j * h_j
