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
# # 8. 학습
#
# 트랜스포머(Transformer)의 학습(training)은 노트북 5의 과정을 여러 번 되풀이하는 것입니다. (소스, 타깃) 쌍의 배치를
# 가져와 교사 강요(teacher forcing)로 모델을 실행하고, 모델이 예측한 분포를 실제 다음 토큰(token)과 비교하고(손실,
# loss), 기울기(gradient)를 계산하고, 옵티마이저(optimizer)가 가중치를 조금 바꾸게 합니다. `qkv.train`이 이 모두를
# 합니다. 이 노트북은 작은 모델을 몇 초 만에 학습시키고, 손실 곡선을 읽고, 논문이 기본 방법에 더한 두 가지
# 재료(5.3절과 5.4절)를 뜯어 봅니다. **레이블 스무딩**(label smoothing)과 **학습률 워밍업**(learning-rate warmup)입니다.

# %%
import inspect
import math
import shutil
import time

import matplotlib.pyplot as plt
import torch

import qkv

# %% [markdown]
# ## 8.1 작은 모델 학습시키기
#
# 과제: 글자열을 거꾸로 쓰기("hello" -> "olleh"), 여기서는 1~6글자짜리 글자열입니다. 아주 작은 모델(인코더(encoder)
# 한 층, 디코더(decoder) 한 층, d_model = 64)이 작은 배치로 300스텝을 학습하면 대부분을 맞힙니다. 노트북
# 컴퓨터에서 몇 초 걸립니다. `log_every=1`은 스텝마다 기록하므로 아래 곡선에는 스텝마다 점이 하나씩 있습니다.
# 폴더는 이 노트북 전용이며, 셀을 실행할 때마다 새로 학습합니다.

# %%
out = "../runs/08-reverse-tiny"
shutil.rmtree(out, ignore_errors=True)          # this notebook's own small run: trained anew each time
start = time.perf_counter()
tiny = qkv.train("reverse", out=out, steps=300, d_model=64, n_heads=4, d_ff=128, n_encoder_layers=1,
                 n_decoder_layers=1, lr=1e-2, warmup_steps=30, batch_tokens=400, data={"max_len": 6},
                 train_size=2000, valid_size=50, eval_every=50, eval_examples=50, checkpoint_every=100,
                 log_every=1, threads=1, precision="fp32", quiet=True)   # fp32: faster than bf16 at this size
print(f"trained in {time.perf_counter() - start:.1f} s:", tiny.training.steps, "steps,", tiny.training.stopped)
print(tiny)
print(tiny.translate(["hello", "qkv", "attend"]))

# %% [markdown]
# 학습이 기록한 모든 것은 런(run)에 있습니다. `tiny.metrics("train")`에는 기록된 스텝마다 하나씩(손실, 보통의
# 음의 로그 가능도 `nll`, 학습률 `lr`, ...), `tiny.metrics("valid")`에는 검증(validation)마다 하나씩 들어 있습니다.

# %%
train_log = tiny.metrics("train")
valid_log = tiny.metrics("valid")
print(train_log[-1])
print(valid_log[-1])

# %% [markdown]
# 이 노트북 연습 문제의 검사 함수입니다(이 셀을 실행하고 계속 읽으세요).

# %%
eps = tiny.config["train"]["label_smoothing"]      # 0.1, as in the paper
warmup = tiny.config["train"]["warmup_steps"]
example = tiny.explain("hello", target="olleh").trace     # one teacher-forced forward pass
row = 2                                                   # the row that predicts the 3rd letter


def check_8_1(answer):
    if answer is ...:
        print("Exercise 8.1 waits for your answer / 연습 8.1이 답을 기다립니다")
        return
    z, y = example.logits[row], example.next_ids[row]
    expected = torch.nn.functional.cross_entropy(z[None], torch.tensor([y]), label_smoothing=eps)
    assert abs(float(answer) - float(expected)) < 1e-4, \
        f"Not yet (got {float(answer):.4f}): (1 - eps) * -log p[y] + eps * mean(-log p) / " \
        "아직 아닙니다: (1 - eps) * -log p[y] + eps * mean(-log p)"
    print("Exercise 8.1: correct / 연습 8.1: 정답입니다")


def check_8_2(answer):
    if answer is ...:
        print("Exercise 8.2 waits for your answer / 연습 8.2가 답을 기다립니다")
        return
    assert answer == warmup, \
        "Not yet: find the step with the highest learning rate on the curve / 아직 아닙니다: 학습률이 가장 높은 스텝을 찾으세요"
    print("Exercise 8.2: correct / 연습 8.2: 정답입니다")


# %% [markdown]
# ## 8.2 손실 곡선

# %%
steps = [r["step"] for r in train_log]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 2.8))
ax1.plot(steps, [r["loss"] for r in train_log], label="training loss (label-smoothed)")
ax1.plot(steps, [r["nll"] for r in train_log], label="training nll (-log p of the true token)")
ax1.plot([r["step"] for r in valid_log], [r["loss"] for r in valid_log], "o-", label="validation nll")
ax1.set(xlabel="step", ylabel="nats per token", title="loss")
ax1.legend(fontsize=7)
ax2.plot([r["step"] for r in valid_log], [r["exact_match"] for r in valid_log], "o-")
ax2.set(xlabel="step", ylim=(0, 1.05), title="validation: share of exact reversals")
plt.tight_layout()
plt.show()

# %% [markdown]
# 손실은 처음에 빠르게, 그다음엔 천천히 떨어집니다. 스텝마다 배치가 다른 표본이라 학습 곡선은 들쭉날쭉합니다.
# `nll`은 보통의 교차 엔트로피(cross-entropy), −log p(정답 토큰)입니다(검증 손실도 같은 방식으로, 모델이 학습에서
# 본 적 없는 예제로 잽니다). `loss`는 모델이 실제로 학습하는 값, 레이블 스무딩을 한 교차 엔트로피이며 `nll`보다
# 한참 위에서 평평해집니다. 왜, 그리고 얼마나 위인지는 다음 절에서 봅니다. 검증에서는 글자열 전체도 디코딩해
# 봅니다. 300스텝 뒤에는 전부는 아니어도 대부분이 정확히 뒤집혀 나옵니다.

# %% [markdown]
# ## 8.3 레이블 스무딩
#
# 논문(5.4절)은 *부드럽게 만든* 목표로 학습합니다. 정답 토큰 y에 확률 1을 두는 대신, 목표 분포 q는 y에 1 − eps를
# 두고 eps를 어휘(vocabulary)의 V개 토큰 모두에 고르게 나눕니다. 손실은 q에 대한 교차 엔트로피입니다.
#
# loss = − Σ_v q(v) log p(v) = (1 − eps) · (−log p(y)) + eps · mean_v(−log p(v))
#
# 모델은 *지나치게* 확신하면 벌을 받습니다. "모델이 덜 확신하도록 배우므로 퍼플렉서티(perplexity)는 나빠지지만,
# 정확도와 BLEU 점수는 좋아진다"(논문). qkv의 손실은 logsumexp만 있으면 되는 autograd 함수로 쓰여 있습니다(코드를
# 보여 주기 위해 꺼냈습니다. 이 함수는 `import qkv`가 아니라 학습 패키지에 있습니다).

# %%
import qkv.training.loss as qkv_loss                   # shown as code; not part of the `import qkv` face

print(inspect.getsource(qkv_loss._SmoothedCrossEntropy.forward))

# %% [markdown]
# 모델 출력의 한 행입니다. `example.logits[row]`는 "olleh"의 셋째 글자에 대해 모델이 어휘의 모든 토큰에 준
# 점수(로짓, logits)이고, `example.next_ids[row]`는 정답 토큰의 id입니다.

# %%
z, y = example.logits[row], example.next_ids[row]
p = torch.softmax(z, dim=-1)
print("vocabulary size V =", z.numel(), "| eps =", eps)
print("true token:", repr(example.vocab[y]), f"with p = {p[y]:.3f}")
print("the model's top 3:", [(example.vocab[int(i)], round(float(p[i]), 3)) for i in p.topk(3).indices])

# %% [markdown]
# ### 연습 8.1
# 이 한 행의 레이블 스무딩 손실을 `z`(로짓), `y`(정답 id), `eps`로 손으로 계산하세요.
# `torch.log_softmax(z, dim=-1)`가 모든 토큰의 log p를 줍니다.

# %%
smoothed = ...  # your code: (1 - eps) * -log p[y] + eps * mean over v of -log p[v]
check_8_1(smoothed)

# %% [markdown]
# 스무딩한 손실은 결코 0이 될 수 없습니다. 가장 낮은 값은 p = q일 때의 값, 곧 q의 엔트로피입니다. 위의 학습
# 손실은 이 바닥에 다가가고, `nll`은 계속 내려갑니다.

# %%
V = z.numel()
q_true, q_other = 1 - eps + eps / V, eps / V
floor = -(q_true * math.log(q_true) + (V - 1) * q_other * math.log(q_other))
print(f"the lowest label-smoothed loss with eps = {eps} and V = {V}: {floor:.3f} nats per token")
print(f"the last training loss: {train_log[-1]['loss']:.3f}, its nll: {train_log[-1]['nll']:.3f}")

# qkv's loss over every row of 'olleh' (5 letters and <eos>) against torch's cross_entropy
total, nll_total, tokens = qkv_loss.label_smoothed_nll(example.logits, torch.tensor(example.next_ids), eps)
torch_total = torch.nn.functional.cross_entropy(example.logits, torch.tensor(example.next_ids),
                                                label_smoothing=eps, reduction="sum")
print(f"qkv: {float(total):.4f} over {tokens} tokens, torch: {float(torch_total):.4f}")

# %% [markdown]
# ## 8.4 학습률 스케줄
#
# post-LN 트랜스포머(노트북 7)는 학습 초반에 학습률을 고정한 Adam으로는 불안정합니다. 논문은 처음 `warmup`
# 스텝 동안 학습률을 선형으로 올리고, 그 뒤에는 스텝의 역제곱근에 따라 내립니다.
#
# lr(step) = d_model^−0.5 · min(step^−0.5, step · warmup^−1.5)
#
# 내장 과제들은 대신 "cosine" 스케줄을 씁니다. 같은 선형 워밍업으로 최고점 `lr`까지 올린 뒤, 코사인 반 주기를
# 따라 마지막 스텝에서 `min_lr`까지 내립니다. 두 식을 여기 직접 쓰고, 학습이 실제로 쓴 학습률(스텝마다 기록됨)과
# 나란히 놓습니다.

# %%
tc = tiny.config["train"]
print({key: tc[key] for key in ("schedule", "lr", "min_lr", "warmup_steps", "steps")})


def cosine(step, lr, warmup, total, min_lr=0.0):
    if step <= warmup:
        return lr * step / warmup
    progress = (step - warmup) / (total - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def noam(step, d_model=512, warmup=4000):
    return d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


logged = [r["lr"] for r in train_log]
by_hand = [cosine(s, tc["lr"], tc["warmup_steps"], tc["steps"], tc["min_lr"]) for s in steps]
print("the formula gives the logged rates:", all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(logged, by_hand)))

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 2.6))
ax1.plot(steps, logged)
ax1.set(xlabel="step", ylabel="learning rate", title="this run: warmup, then cosine")
paper = range(1, 100_001, 100)
ax2.plot(paper, [noam(s) for s in paper])
ax2.set(xlabel="step", title="the paper: d_model 512, warmup 4000")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### 연습 8.2
# 왼쪽 곡선에서 읽으세요. 워밍업은 몇 번째 스텝에서 끝납니까(학습률이 더 오르지 않는 곳)? 정수로 답하세요.

# %%
warmup_end = ...  # your answer: a step number read off the curve
check_8_2(warmup_end)

# %% [markdown]
# ## 8.5 체크포인트와 이어서 학습하기
#
# 학습은 `checkpoint_every` 스텝마다, 그리고 끝날 때 체크포인트(checkpoint)를 씁니다. 가중치, 옵티마이저의
# 모멘트, 스케줄의 스텝, 난수 상태, 데이터의 위치가 들어 있고, `qkv.train(out=..., resume=True, steps=...)`는 그
# 체크포인트에서 멈춘 곳 그대로 런을 이어 갑니다. 검증으로 고른 가장 좋은 가중치는 `qkv.load`를 위해 따로
# 보관됩니다. 이 런의 파일들입니다.

# %%
print(sorted(path.name for path in tiny.dir.path.iterdir() if not path.name.startswith(".")))

# %% [markdown]
# ## 요약
#
# - `qkv.train`은 학습된 런을 돌려줍니다. `run.metrics("train")`과 `run.metrics("valid")`에 학습이 기록한 것,
#   곧 손실 곡선, 학습률, 점수가 들어 있습니다.
# - 레이블 스무딩은 정답 토큰에 1 − eps, 어휘 전체에 eps를 나눈 목표로 학습합니다. 그래서 손실에는 0보다 높은
#   바닥, 그 목표의 엔트로피가 생깁니다.
# - 학습률은 워밍업 동안 선형으로 오르고 그 뒤에 내려갑니다(논문은 역제곱근, 여기서는 코사인).
#
# 다음: 노트북 9에서는 학습된 모델의 분포를 글로 바꿉니다. 탐욕 탐색(greedy search), 빔 탐색(beam search),
# 샘플링(sampling)입니다.

# %% [markdown]
# ## 풀이 (Solutions)
#
# 각 풀이는 연습 문제와 같은 검사를 거칩니다.

# %%
log_p = torch.log_softmax(z, dim=-1)
smoothed = (1 - eps) * -log_p[y] + eps * (-log_p).mean()
check_8_1(smoothed)

# %%
warmup_end = steps[logged.index(max(logged))]
check_8_2(warmup_end)
