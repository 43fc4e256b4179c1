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
# # 7. 피드포워드, 잔차 연결, 층 정규화
#
# 어텐션(attention)은 위치 *사이에서* 정보를 섞습니다. 각 층(layer)에는 논문 그림 1의 나머지 블록도 필요합니다.
#
# - 위치마다 따로 작동하는 **위치별 피드포워드 네트워크**(position-wise feed-forward network, FFN),
# - 각 부분층(sublayer: 어텐션, 교차 어텐션, FFN)을 감싸는 **잔차 연결**(residual connection),
# - 숫자를 일정한 범위에 붙잡아 두는 **층 정규화**(layer normalization, LayerNorm).
#
# 노트북 6의 날짜 모델("5 March 2019"를 "2019-03-05"로 바꿔 씁니다)의 실제 숫자로 이 셋을 하나씩 뜯어 봅니다.
# 이어서 LayerNorm을 어디에 두느냐(부분층 앞이냐 뒤냐)에 대한 작은 실험을 하고, 요즘 대부분의 모델이 쓰는 더
# 단순한 정규화인 RMSNorm으로 마무리합니다.

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
# 이 노트북 연습 문제의 검사 함수입니다(이 셀을 실행하고 계속 읽으세요).

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
# ## 7.1 위치별 피드포워드 네트워크
#
# 논문(3.3절): FFN(x) = max(0, x W1 + b1) W2 + b2. 선형 변환 두 개 사이에 ReLU가 있고, d_model을 d_ff로
# 넓혔다가 다시 줄입니다. "위치별"이란 같은 두 행렬을 위치마다 따로 적용한다는 뜻입니다. 여기서는 어떤 위치도
# 다른 위치를 보지 않습니다. 섞는 일은 어텐션에서 이미 끝났습니다.
#
# qkv의 코드입니다(논문 경로의 코드는 논문처럼 읽힙니다).

# %%
print(inspect.getsource(type(module.ff)))

# %% [markdown]
# 트레이스(trace)에는 소스 토큰(token)마다 FFN의 입력, 은닉층, 출력이 기록되어 있습니다. 가중치로 이것을
# 다시 계산할 수 있습니다. `nn.Linear`는 W를 (out, in) 모양으로 저장하고 `x @ W.T + b`를 계산합니다.

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
# ReLU는 은닉 유닛을 많이 꺼 버립니다. 소스 토큰마다 d_ff개 유닛 중 자기만의 무늬가 켜집니다. 일종의 키-값
# 메모리입니다(Geva et al., 2021, "Transformer Feed-Forward Layers Are Key-Value Memories").

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
# ### 연습 7.1
# **디코더의 마지막 층**의 피드포워드 출력을 다시 계산하세요(`last.ff.input`이 입력이고, `last_module.ff.w1`,
# `.w2`에 가중치가 있습니다). 모양이 (타깃 토큰 수, d_model)인 텐서를 주세요.

# %%
ffn_out = ...  # your code: relu(x @ W1.T + b1) @ W2.T + b2 with the decoder's last layer
check_7_1(ffn_out)

# %% [markdown]
# ## 7.2 잔차 연결
#
# 모든 부분층은 잔차 연결로 감싸여 있습니다. 부분층의 출력을 입력에 *더합니다*: x + F(x). 층은 흐름에 더할
# 변화만 배우면 되고, 기울기(gradient)는 덧셈을 거쳐 곧장 되돌아갈 길이 생깁니다(He et al., 2016). qkv에서는
# `Sublayer`가 감싸는 일을 하며, LayerNorm은 두 자리 중 한 곳에 둡니다.

# %%
print(inspect.getsource(type(module.ff_block)))

# %% [markdown]
# 날짜 모델은 pre-LN(`norm_first = True`)입니다. 그래서 `fn_input`은 입력의 LayerNorm이고, FFN은 그것을
# 처리하며, FFN의 출력은 바뀌지 않은 입력에 더해집니다.

# %%
print("residual = input + fn_output:", torch.allclose(block.residual, block.input + block.fn_output, atol=1e-5))
print("output = residual (pre-LN):   ", torch.allclose(block.output, block.residual))

# %% [markdown]
# 각 덧셈은 그것이 더해지는 흐름에 비해 얼마나 클까요? 인코더를 지나는 잔차 흐름(residual stream)의 크기(L2
# 노름, 토큰 평균)와 각 부분층이 더하는 것의 크기입니다.

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
# 처음 부분층들은 흐름을 크게 바꿉니다(첫 FFN은 흐름이 가진 것보다 더 많이 더합니다). 흐름이 커질수록 각
# 덧셈이 차지하는 몫은 작아집니다. 그 과정에서 버려진 것은 없습니다. 입력 임베딩(embedding)이 여전히 들어
# 있고, 거기에 모든 부분층의 기여가 더해져 있습니다.

# %% [markdown]
# ## 7.3 손으로 계산하는 층 정규화
#
# LayerNorm(Ba et al., 2016)은 토큰마다 그 벡터 하나만 가지고, d_model개의 숫자에 걸쳐 정규화합니다.
#
# LayerNorm(x) = (x − mean(x)) / sqrt(var(x) + eps) · g + b
#
# mean과 var는 마지막 차원에 걸쳐 구합니다(var는 d_model − 1이 아니라 d_model로 나눕니다). eps(여기서는
# 1e-5)는 나눗셈을 안전하게 해 주고, 이득(gain) g와 편향(bias) b는 학습되는 값으로 차원마다 하나씩입니다.
# 첫 인코더 FFN 앞의 정규화입니다.

# %%
print(norm)
print("gain g:", norm.weight[:6].detach(), "...")
print("bias b:", norm.bias[:6].detach(), "...")

# %% [markdown]
# ### 연습 7.2
# 그 LayerNorm을 `block.input`(첫 인코더 FFN 블록으로 들어가는 흐름)에 대해 `norm.weight`, `norm.bias`,
# `norm.eps`로 손으로 계산하세요. 검사는 torch의 `layer_norm`과 비교합니다(다음 셀은 모델이 직접 계산한 값과
# 비교합니다).

# %%
x = block.input
layer_normed = ...  # your code: (x - mean) / sqrt(var + eps) * g + b, over the last dimension
check_7_2(layer_normed)

# %%
with torch.no_grad():
    print("torch's layer_norm = qkv's LayerNorm module = the recorded fn_input:",
          torch.allclose(norm(block.input), block.fn_input, atol=1e-5))

# %% [markdown]
# ## 7.4 앞이냐 뒤냐: post-LN과 pre-LN
#
# 논문은 정규화를 잔차 덧셈 *뒤에* 둡니다: x = LayerNorm(x + F(x)) (post-LN). GPT-2와 그 뒤 대부분의 모델은
# 부분층 *앞에* 둡니다: x = x + F(LayerNorm(x)) (pre-LN). 그리고 층 더미의 끝에 정규화를 하나 더 둡니다. qkv에서는
# 설정 하나, `ModelConfig(norm_first=...)`입니다.
#
# 둘은 다르게 행동합니다. 1초쯤 걸리는 작은 실험입니다. 초기화 직후의 12층짜리 디코더 더미에 무작위 토큰 한
# 배치를 넣고 역전파를 한 번 합니다. 층마다 들어가는 흐름의 크기와 그 층 가중치의 기울기 크기를 잽니다.

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
# post-LN은 부분층마다 흐름을 정규화하므로, 흐름의 크기가 층에서 층으로 sqrt(d_model) = 8 근처에 머뭅니다.
# 기울기는 출력 쪽까지 내내 큽니다. pre-LN은 흐름 자체를 정규화하지 않습니다. 층마다 흐름에 더하므로 깊어질수록
# 흐름이 커지고, 각 층의 덧셈은 그 안에서 점점 작은 몫이 되며, 위쪽 층의 기울기도 그만큼 줄어듭니다.
# Xiong et al.(2020, "On Layer Normalization in the Transformer Architecture")도 같은 것을 보였습니다. 출력
# 근처에서 큰 post-LN의 기울기가 학습률 워밍업(warmup)이 필요한 이유이고(노트북 8), pre-LN은 워밍업 없이도
# 안정적으로 학습됩니다. 대가도 있습니다. 깊은 pre-LN 모델의 흐름은 계속 커지므로, 층 더미의 끝에 정규화를
# 하나 더 둡니다.

# %% [markdown]
# ## 7.5 RMSNorm
#
# RMSNorm(Zhang & Sennrich, 2019)은 평균 빼기(중심화)와 편향을 뺍니다.
#
# RMSNorm(x) = x / sqrt(mean(x²) + eps) · g
#
# 계산이 더 싸고 학습도 똑같이 잘 됩니다. Llama와 최근 대부분의 모델이 씁니다. qkv에서는
# `ModelConfig(norm="rmsnorm")`입니다. 작은 모델에서 하나를 꺼내고, g가 의미 있도록 이득에 무작위 값을
# 넣습니다.

# %%
cfg = qkv.ModelConfig(arch="decoder-only", tgt_vocab_size=50, d_model=run.cfg.d_model, n_heads=4, d_ff=64,
                      n_decoder_layers=1, norm="rmsnorm", norm_first=True)
rms_norm = qkv.DecoderOnly(cfg).decoder.layers[0].ff_block.norm
with torch.no_grad():
    rms_norm.weight.copy_(1 + 0.1 * torch.randn(run.cfg.d_model))
print(inspect.getsource(type(rms_norm).forward))

# %% [markdown]
# ### 연습 7.3
# 같은 `block.input`에 대해 `rms_norm`을 `rms_norm.weight`와 `rms_norm.eps`로 손으로 계산하세요.

# %%
x = block.input
rms_normed = ...  # your code: x / sqrt(mean(x**2) + eps) * g, over the last dimension
check_7_3(rms_normed, rms_norm)

# %% [markdown]
# LayerNorm과 RMSNorm의 차이는 빼는 평균(과 LayerNorm의 편향)뿐입니다. 여기서 각 토큰 벡터의 평균은 0에서
# 얼마나 떨어져 있을까요? 퍼짐(표준편차, std)에 비해 평균이 작으면 평균을 빼도 별로 달라지지 않습니다.
# RMSNorm이 잘 되는 이유 중 하나입니다.

# %%
print("mean of each token's vector:", [round(v, 3) for v in block.input.mean(-1).tolist()])
print("its std:                    ", [round(v, 3) for v in block.input.std(-1, unbiased=False).tolist()])

# %% [markdown]
# ## 요약
#
# - FFN(x) = max(0, x W1 + b1) W2 + b2, 모든 위치에 똑같이 적용됩니다. 어텐션은 위치를 섞고, FFN은 각 위치를
#   변환합니다.
# - 잔차 연결은 각 부분층의 출력을 흐름에 더합니다: x + F(x).
# - LayerNorm: 토큰마다 평균을 빼고, sqrt(var + eps)로 나누고, g를 곱하고, b를 더합니다.
# - post-LN(논문)은 덧셈 뒤에, pre-LN은 부분층 앞에 정규화합니다. 깊은 모델에서는 pre-LN이 더 쉽게 학습되고,
#   post-LN은 워밍업이 필요합니다.
# - RMSNorm은 평균과 편향을 건너뜁니다.
#
# 다음: 노트북 8에서 레이블 스무딩과 워밍업 스케줄과 함께 모델을 학습시킵니다.

# %% [markdown]
# ## 풀이 (Solutions)
#
# 각 풀이는 연습 문제와 같은 검사를 거칩니다.

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
