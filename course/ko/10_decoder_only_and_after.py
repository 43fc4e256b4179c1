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
# # 10 · 디코더만 있는 모델 (decoder-only), 그리고 2017년 이후
#
# 논문의 트랜스포머 (Transformer)는 번역을 합니다. 인코더 (encoder)가 소스를 읽고, 디코더
# (decoder)가 교차 어텐션 (cross-attention)으로 소스를 보면서 타깃을 씁니다. 인코더와 교차
# 어텐션을 떼어 내면, 마스크된 셀프 어텐션 (self-attention)과 피드포워드 (feed-forward) 층 (layer)이
# 쌓인 스택 하나가 남습니다. 텍스트를 읽고 위치마다 다음 토큰 (token)을 예측하는, **언어 모델**
# (language model)입니다. 이것이 GPT (Radford et al., 2018)이고, 그 뒤로 몇 가지를 바꾼 것이
# Llama와 오늘날 대부분의 대형 모델입니다.
#
# 이 노트북에서는 문자 단위 언어 모델을 몇 초 만에 작게 학습시키고, 글을 쓰게 하고, 인과
# 어텐션 (causal attention)을 들여다봅니다. 그다음 2017년 이후의 변화 (RoPE, RMSNorm, SwiGLU,
# 그룹 쿼리 어텐션 (grouped-query attention))를 파라미터 수와 키/값 캐시 (key/value cache)의
# 메모리와 함께 살펴봅니다.

# %%
import collections
import inspect
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import qkv

torch.set_num_threads(1)    # these models are small: one thread is as fast, and steadier on a busy machine

# %% [markdown]
# 연습 문제의 확인 함수는 여기서 한 번 정의하고 두 번 씁니다. 연습 바로 뒤에서 한 번, 끝의
# 풀이 (Solutions) 절에서 한 번.

# %%
def cache_bytes_per_token(model, tokens=16):
    """Bytes the key/value cache of `model` holds per token, read off a real cache."""
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.full((1, tokens), 4), cache)          # feed `tokens` tokens, filling the cache
    held = sum(c.k.numel() * c.k.element_size() + c.v.numel() * c.v.element_size() for c in cache.self_attn)
    return held / tokens


EXERCISE_CONFIG = qkv.ModelConfig(arch="decoder-only", tgt_vocab_size=69, d_model=64, n_heads=4, n_kv_heads=2,
                                  n_decoder_layers=2, d_ff=192, activation="swiglu", norm="rmsnorm",
                                  positional="rope", bias=False, norm_first=True, max_len=128)


def check_10_1(answer):
    if answer is ...:
        print("Exercise 10.1 waits for your answer / 연습 10.1: 답을 기다립니다")
        return
    measured = cache_bytes_per_token(qkv.DecoderOnly(EXERCISE_CONFIG))
    assert answer == measured, (f"Not yet: a real cache holds {measured:.0f} bytes per token, you said {answer}; "
                                f"count keys and values, layers, key/value heads, d_head, 4 bytes / 아직 아닙니다: "
                                f"실제 캐시는 토큰당 {measured:.0f}바이트, 답은 {answer}. 키와 값, 층, 키/값 헤드, "
                                f"d_head, 4바이트를 모두 곱하세요")
    print(f"Exercise 10.1: right, {measured:.0f} bytes per token / 연습 10.1: 정답, 토큰당 {measured:.0f}바이트")


def check_10_2(answer):
    if answer is ...:
        print("Exercise 10.2 waits for your answer / 연습 10.2: 답을 기다립니다")
        return
    counted = qkv.DecoderOnly(EXERCISE_CONFIG).num_parameters()
    assert answer == counted, (f"Not yet: PyTorch counts {counted:,}, you said {answer:,}; the table above "
                               f"has one row per part / 아직 아닙니다: PyTorch는 {counted:,}개, 답은 {answer:,}개. "
                               f"위의 표에 부분마다 한 줄씩 있습니다")
    print(f"Exercise 10.2: right, {counted:,} parameters / 연습 10.2: 정답, 파라미터 {counted:,}개")


# %% [markdown]
# ## 모델: 디코더 하나
#
# `qkv.DecoderOnly`는 논문의 디코더에서 교차 어텐션을 뺀 것입니다. `qkv.model`에 적힌 그대로의
# 순전파 (forward pass)입니다.

# %%
print(inspect.getsource(qkv.DecoderOnly.forward))

# %% [markdown]
# 토큰을 (위치와 함께) 임베딩 (embedding)하고, 마스크된 디코더 스택을 지나, 어휘로 사영합니다.
# 학습은 이어진 텍스트에 대한 교사 강요 (teacher forcing)입니다. 입력은 문자 한 블록, 타깃은
# 같은 블록을 한 칸 민 것이라서, 모든 위치가 다음 문자 예측 문제가 됩니다.
#
# ## 작은 문자 모델 학습
#
# 저장소 옆에 Tiny Shakespeare (셰익스피어 희곡 110만 자)가 있으면 그것을, 없으면 강의와 함께
# 배포하는 같은 텍스트의 12 KB 발췌본을 씁니다. 층 2개, 폭 64, 1024자짜리 150단계: 몇 초면
# 됩니다 (처음 한 번만. 그 뒤에는 `reuse=True`가 불러옵니다).

# %%
text_file = Path("../../../shared/data/tinyshakespeare/input.txt")
if not text_file.is_file():
    text_file = Path("../data/shakespeare_excerpt.txt")         # shipped with the course
lm = qkv.train({"model": {"d_model": 64, "n_heads": 4, "n_decoder_layers": 2, "d_ff": 256, "dropout": 0.0,
                          "norm_first": True},
                "train": {"steps": 150, "batch_tokens": 1024, "lr": 1e-2, "schedule": "cosine", "warmup_steps": 20,
                          "label_smoothing": 0.0, "eval_every": 150, "checkpoint_every": 150, "eval_examples": 20,
                          "threads": 1},
                "data": {"kind": "lm", "train_text": str(text_file), "tokenizer": "char", "block_size": 128}},
               out="../runs/lm-" + text_file.stem, quiet=True, reuse=True)
print(lm)

text = text_file.read_text(encoding="utf-8")
valid = [json.loads(line) for line in lm.dir.metrics.read_text().splitlines() if '"valid"' in line][-1]
counts = collections.Counter(text)
unigram = -sum(c / len(text) * math.log(c / len(text)) for c in counts.values())
print(f"{len(text):,} characters, {len(counts)} distinct")
print(f"nats per character: guessing uniformly {math.log(len(counts)):.2f}, knowing only the letter "
      f"frequencies {unigram:.2f}, this model (validation loss) {valid['loss']:.2f}")

# %% [markdown]
# 손실은 다음 문자의 교차 엔트로피 (cross-entropy)입니다. 균등하게 찍으면 ln(서로 다른 문자 수),
# Tiny Shakespeare의 65자라면 4.17 나트 (nats)이고, 글자별 빈도만 알면 3.3쯤입니다. 몇 초 학습한
# 작은 모델은 그보다 낮습니다. 앞 문자들을 쓰고 있다는 뜻입니다. 비교하자면 5분짜리 레시피
# (`python recipes/shakespeare.py`)는 CPU 코어 2개로 1.58쯤, GPU에서 돌린 nanoGPT의 문자 모델은
# 1.47쯤에 이릅니다 (docs/language_model.md).
#
# ## 글을 쓰게 하기
#
# `lm.generate(prompt)`는 샘플링합니다 (노트북 09). 온도 (temperature), top-k, top-p, 시드 (seed).

# %%
print(lm.generate("ROMEO:", max_new_tokens=200, temperature=0.8, seed=0))
print("-" * 40, "greedy:")
print(lm.generate("ROMEO:", max_new_tokens=80, greedy=True))

# %% [markdown]
# 몇 초 만에 희곡의 *모양*은 갖췄습니다. 대문자 이름, 콜론, 줄바꿈, 짧고 흔한 단어들, 그리고
# 단어 아닌 것들이 많이. 그리디 디코딩 (greedy decoding)은 루프에 빠집니다 ("the the the...").
# 이 모델에게 "the " 다음으로 가장 그럴듯한 것은 또 "the "이기 때문입니다. 언어 모델이 글을 쓰게
# 하는 것은 샘플링이고, 노트북 09에서 top-k/top-p가 왜 필요한지 보았습니다.
#
# ## 인과 어텐션
#
# 각 위치는 자기 자신과 앞 위치들만 볼 수 있고, 뒤는 볼 수 없습니다. 마스크 (mask)가 대각선 위의
# 가중치를 0으로 만듭니다. `lm.attention(text, target="")`는 텍스트에 대한 순전파 한 번의 가중치를
# 기록하고 (`target=""`: 이어 쓰기 없음), `.decoder`의 모양은 (층, 헤드, T, T)입니다.

# %%
a = lm.attention("First Citizen:\nBefore we proceed", target="")
print(a.decoder.shape, " above the diagonal:", float(a.decoder.triu(1).abs().sum()))

layers, heads = a.decoder.shape[:2]
ticks = range(len(a.target_tokens))
fig, axes = plt.subplots(layers, heads, figsize=(2.6 * heads, 3.0 * layers), sharex=True, sharey=True)
for layer in range(layers):
    for head in range(heads):
        ax = axes[layer, head]
        ax.imshow(a.decoder[layer, head], cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"layer {layer}, head {head}", fontsize=8)
        ax.set_xticks(ticks, a.target_tokens, fontsize=6)
        ax.set_yticks(ticks, a.target_tokens, fontsize=6)
fig.supxlabel("keys (earlier characters)", fontsize=9)
fig.supylabel("queries", fontsize=9)
fig.tight_layout()

# %% [markdown]
# 각 행은 한 위치가 앞 위치들을 읽는 모습입니다 (행의 합은 1). 위 삼각형은 비어 있습니다. 인과
# 마스크입니다. 어떤 헤드 (head)는 주로 바로 앞 한두 문자를 보고 (대각선 바로 아래의 밝은 띠),
# 어떤 헤드는 단어 전체에 퍼집니다. 우리 실행에서는 둘째 층의 헤드 둘이, 쿼리가 어디에 있든
# 콜론이나 줄바꿈이라는 이정표 하나를 돌아봅니다. 몇 초 학습한 층 두 개도 일을 나눠 맡습니다.
#
# ## 2017년 이후에 온 것들
#
# 오늘날의 디코더만 있는 모델은 이 디코더에 몇 가지를 바꾼 것이고, qkv에서는 각각이
# `ModelConfig` 옵션입니다 (docs/paper-map.md, "After 2017").
#
# | 변화 | 논문 | 하는 일 | 옵션 |
# |---|---|---|---|
# | pre-LN | Xiong et al. 2020; GPT-2 | 각 부분층 *앞*에서 정규화: 높은 학습률에서도 안정적 | `norm_first=True` (위에서 사용) |
# | RoPE | Su et al. 2021 | 위치 벡터를 더하지 않고, 쿼리와 키를 위치만큼 회전 | `positional="rope"` |
# | RMSNorm | Zhang & Sennrich 2019 | 제곱평균제곱근으로 나눔. 평균도 편향도 없음 | `norm="rmsnorm"` |
# | SwiGLU | Shazeer 2020 | 게이트가 달린 피드포워드: W2 (SiLU(x W1) ⊙ x W3) | `activation="swiglu"` |
# | GQA | Ainslie et al. 2023 | 키/값 헤드를 줄이고, 하나를 여러 쿼리 헤드가 나눠 씀 | `n_kv_heads` |
# | 편향 없음 | PaLM, Llama | 모든 선형층에서 편향을 뺌 | `bias=False` |
#
# ### RoPE: 회전으로 나타낸 위치
#
# RoPE는 위치 m에 있는 쿼리 (query)의 차원 쌍 (q₂ᵢ, q₂ᵢ₊₁)을 각각 m·θ⁻²ⁱ/ᵈ만큼 회전시키고,
# 위치 n의 키 (key)도 똑같이 회전시킵니다. 회전은 길이를 바꾸지 않고, 회전된 두 벡터의 내적은 둘
# 사이의 각도에만 달려 있습니다. 그래서 쿼리 m과 키 n의 점수는 상대 위치 m − n에만 달려 있고,
# 이것이 모든 층에서 성립합니다. 다섯 줄로 쓰고, qkv의 모듈과 맞춰 봅니다.

# %%
def rotate(x, position, theta=10000.0):
    """x: (..., d_head) at `position` -> x with each pair (x_2i, x_2i+1) turned by position * theta^(-2i/d)."""
    d = x.size(-1)
    angle = position * theta ** (-torch.arange(0, d, 2) / d)              # (d/2,)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * angle.cos() - x2 * angle.sin(), x1 * angle.sin() + x2 * angle.cos()), -1).flatten(-2)


rope_model = qkv.DecoderOnly(qkv.ModelConfig(arch="decoder-only", tgt_vocab_size=69, d_model=64, n_heads=4,
                                             n_decoder_layers=1, d_ff=256, positional="rope", max_len=128))
qkvs_rope = rope_model.decoder.layers[0].self_attn.rope                # the module attention uses
torch.manual_seed(0)
q, k = torch.randn(16), torch.randn(16)                                  # one query, one key, d_head 16
assert torch.allclose(rotate(q, 7), qkvs_rope(q.view(1, 1, 1, 16), start=7).flatten(), atol=1e-5)

scores = torch.tensor([[float(rotate(q, m) @ rotate(k, n)) for n in range(32)] for m in range(32)])
print(f"query at 10, key at 7: {scores[10, 7]:.4f};  query at 25, key at 22: {scores[25, 22]:.4f}  (same offset)")
fig, ax = plt.subplots(figsize=(3.2, 3))
ax.imshow(scores, cmap="RdBu")
ax.set_xlabel("key position n")
ax.set_ylabel("query position m")
ax.set_title("q·k with RoPE: constant along diagonals", fontsize=9)
fig.tight_layout()

# %% [markdown]
# 같은 쿼리와 키를 모든 위치 쌍에 놓아 보았습니다. 점수가 대각선 (같은 차이 m − n)을 따라
# 일정합니다. 논문의 사인파 벡터를 임베딩에 한 번 더하는 방식에서는 이런 규칙이 없어서, 모델이
# 절대 위치로부터 상대 위치를 배워야 합니다. RoPE에는 파라미터가 없습니다.
#
# ### RMSNorm과 SwiGLU
#
# RMSNorm은 평균을 빼지 않고 편향도 없는 층 정규화 (layer normalization)입니다.

# %%
rms_model = qkv.DecoderOnly(qkv.ModelConfig(arch="decoder-only", tgt_vocab_size=69, d_model=64, n_heads=4,
                                            n_decoder_layers=1, d_ff=256, norm="rmsnorm", norm_first=True))
print(type(rms_model.decoder.norm).__name__, "in", type(rms_model.decoder.norm).__module__)
print(inspect.getsource(type(rms_model.decoder.norm).forward))

# %% [markdown]
# (`note(...)`는 `qkv explain`이 기록할 때 중간 텐서를 남겨 둘 뿐, 숫자는 하나도 바꾸지 않습니다.)
# SwiGLU는 `W2 ReLU(x W1)`을 `W2 (SiLU(x W1) ⊙ x W3)`로 바꿉니다. 게이트 (x W3)가 은닉 유닛
# 하나하나에 곱해집니다. 행렬이 둘에서 셋이 되므로, qkv는 은닉층 폭을 `d_ff`의 2/3 (256 → 171)로
# 해서 파라미터 수를 거의 같게 유지합니다.
#
# ### 파라미터 세기
#
# 위에서 학습한 모델의 크기 (층 2개, 폭 64, 헤드 4개, d_ff 256, 토큰 69개: Tiny Shakespeare의
# 65자와 특수 토큰 4개)에서 한 번에 하나씩 바꿔, PyTorch가 센 파라미터 수를 부분별로 나눠 봅니다.

# %%
BASE = dict(arch="decoder-only", tgt_vocab_size=69, d_model=64, n_heads=4, n_decoder_layers=2, d_ff=256,
            dropout=0.0, norm_first=True, max_len=128)
VARIANTS = {"2017 (GPT)": {}, "+ RoPE": dict(positional="rope"), "+ RMSNorm": dict(norm="rmsnorm"),
            "+ SwiGLU": dict(activation="swiglu"), "+ GQA (2 kv heads)": dict(n_kv_heads=2),
            "+ MQA (1 kv head)": dict(n_kv_heads=1),
            "all: Llama-style": dict(positional="rope", norm="rmsnorm", activation="swiglu", n_kv_heads=2,
                                     bias=False)}


def parts(model):
    """Parameters by part: embeddings, attention (Q, K, V, out), feed-forward, norms."""
    out = collections.Counter()
    for name, p in model.named_parameters():
        part = ("embeddings" if name.startswith("embed") else "attention" if "self_attn" in name
                else "feed-forward" if ".ff." in name else "norms")
        out[part] += p.numel()
    return out


models = {}
print(f"{'variant':<20}{'embeddings':>11}{'attention':>11}{'feed-fwd':>10}{'norms':>7}{'total':>9}"
      f"{'KV bytes/token':>16}")
for label, change in VARIANTS.items():
    models[label] = model = qkv.DecoderOnly(qkv.ModelConfig(**BASE, **change))
    p = parts(model)
    print(f"{label:<20}{p['embeddings']:>11,}{p['attention']:>11,}{p['feed-forward']:>10,}{p['norms']:>7,}"
          f"{model.num_parameters():>9,}{cache_bytes_per_token(model):>16,.0f}")

# %% [markdown]
# 2017 행을 손으로 읽어 봅시다. 임베딩: 69 × 64 = 4,416 (출력층이 이것을 같이 씁니다:
# `tie_embeddings`). 어텐션, 층마다: 64 × 64 행렬 4개와 크기 64인 편향 4개, 4 × 4,160 = 16,640.
# 피드포워드: 64 × 256 + 256 + 256 × 64 + 64 = 33,088. 정규화: 층마다 둘에 마지막 하나 (pre-LN),
# 각각 크기 64인 이득 (gain)과 편향. 합계 4,416 + 2 × (16,640 + 33,088 + 256) + 128 = 104,512.
#
# RoPE는 아무것도 더하지 않습니다 (회전에는 파라미터가 없고, 사인파 벡터에도 없었습니다).
# RMSNorm은 정규화의 편향을 없애고, SwiGLU는 피드포워드를 몇 개 바꾸며 (3 × 64 × 171 대 2 × 64 ×
# 256), GQA는 키와 값 사영의 출력을 64에서 32 (또는 16)로 줄입니다.
#
# ### 키/값 캐시, 바이트로
#
# 생성하는 동안 층마다 지나간 토큰 하나하나의 키와 값을 보관합니다 (노트북 09).
#
#     토큰당 바이트 = 2 (키와 값) × 층 수 × 키/값 헤드 수 × d_head × 숫자 하나의 바이트
#
# 2017 모델이라면 2 × 2 × 4 × 16 × 4 (float32) = 1,024바이트로, 표가 실제 캐시에서 읽은 값과
# 같습니다. 헤드 4개 중 키/값 헤드가 2개인 GQA는 이를 절반으로, 하나인 MQA는 4분의 1로 줄입니다.
# 절약은 n_heads / n_kv_heads배입니다. 작은 모델에서는 아무것도 아니지만, 큰 모델에서는 메모리에
# 토큰이 몇 개 들어가느냐를 결정합니다.

# %%
def kv_bytes(layers, kv_heads, d_head, bytes_per_number=2):
    return 2 * layers * kv_heads * d_head * bytes_per_number


for label, kv_heads in [("multi-head, 64 kv heads", 64), ("GQA, 8 kv heads (as Llama 2 70B)", 8)]:
    per_token = kv_bytes(layers=80, kv_heads=kv_heads, d_head=128)       # Llama 2 70B's shape, float16
    print(f"{label:<34} {per_token / 1024:>6,.0f} KiB per token, "
          f"{per_token * 4096 / 2**30:>5.2f} GiB for a 4096-token context")

for label in ["+ GQA (2 kv heads)", "+ MQA (1 kv head)"]:                 # the small models: checked
    cfg = models[label].cfg
    by_hand = kv_bytes(cfg.n_decoder_layers, cfg.kv_heads, cfg.d_head, bytes_per_number=4)
    assert by_hand == cache_bytes_per_token(models[label])
    print(f"{label}: {by_hand} bytes per token by hand, as measured; "
          f"{cache_bytes_per_token(models['2017 (GPT)']) / by_hand:.0f}x less than multi-head")

# %% [markdown]
# Llama 2 70B는 쿼리 헤드가 64개지만 키/값 헤드는 8개입니다. 같은 모델을 멀티 헤드 어텐션으로
# 만들 때보다 토큰당 캐시가 8분의 1이고, 4096 토큰 문맥이면 10 GiB 대신 1.25 GiB입니다 (시퀀스
# 하나, 16비트 숫자 기준). GQA로 얻는 것은 메모리와, 매 단계 그 메모리를 읽어 오는 대역폭입니다.
# 대가는 품질이 조금 떨어지는 정도입니다.
#
# ### 연습 10.1: 설정의 KV 캐시
#
# `EXERCISE_CONFIG`의 키/값 캐시는 토큰당 몇 바이트를 담을까요 (float32, 4바이트)? 숫자를
# 적거나, 설정의 숫자들로 계산하는 식을 적으세요 (모델에서 읽지 말고).

# %%
print(EXERCISE_CONFIG.n_decoder_layers, "layers,", EXERCISE_CONFIG.n_heads, "heads,", EXERCISE_CONFIG.n_kv_heads,
      "key/value heads, d_model", EXERCISE_CONFIG.d_model)

kv_bytes_per_token = ...  # your code: 2 * layers * kv heads * d_head * 4

check_10_1(kv_bytes_per_token)

# %% [markdown]
# ### 연습 10.2: 파라미터를 손으로 세기
#
# 같은 설정입니다. 토큰 69개, d_model 64, 헤드 4개에 키/값 헤드 2개, 층 2개, d_ff 192인 SwiGLU
# (은닉 폭 2/3 × 192 = 128), pre-LN에 RMSNorm (이득만, 편향 없음. 그래서 마지막 정규화도 하나),
# 어디에도 편향 없음, 임베딩 공유, RoPE. 파라미터는 몇 개일까요?

# %%
n_parameters = ...  # your code: embeddings + 2 * (attention + feed-forward + 2 norms) + final norm

check_10_2(n_parameters)

# %% [markdown]
# ## 측정: 2017년에서 Llama까지의 사다리
#
# 이 변화들이 도움이 될까요? `qkv history --modern`은 2017년의 GPT, 변화 하나씩, 그리고 전부를
# 모은 것을 Tiny Shakespeare에서 같은 시드, 같은 데이터 순서, 같은 CPU 시간 예산 (각각 CPU 75초.
# `--quick`이면 전부 몇 분)으로 학습시킵니다. 노트북에서 돌리기에는 너무 길어서, 저장소에 기록된
# 실행 결과를 읽습니다 (`recipes/results/shakespeare_modern.json`, 코어 2개; 날짜와 머신은 파일에 있습니다).

# %%
measured = json.loads(Path("../../recipes/results/shakespeare_modern.json").read_text())["variants"]
labels = [v["label"].split(" (")[0] for v in measured.values()]
fig, (left, right) = plt.subplots(1, 2, figsize=(9, 2.8), sharey=True)
losses = [v["valid_loss"] for v in measured.values()]
left.barh(labels, losses, color="tab:blue")
left.set_xlim(min(losses) - 0.05, max(losses) + 0.02)
left.set_xlabel("validation loss (nats/char), lower is better")
right.barh(labels, [v["kv_cache_bytes_per_token"] for v in measured.values()], color="tab:gray")
right.set_xlabel("KV cache bytes per token")
left.invert_yaxis()
fig.tight_layout()
for v in measured.values():
    print(f"{v['label']:<48} {v['parameters']:>8,} parameters  loss {v['valid_loss']:.3f}  {v['steps']:>5} steps")

# %% [markdown]
# 이 크기와 예산에서 (시드 하나. 0.04쯤보다 작은 차이는 잡음입니다): RoPE가 단일 변화로는 가장
# 크게 좋아지고, SwiGLU는 조금 도움이 되며, GQA는 거의 대가 없이 캐시를 절반으로 줄입니다.
# RMSNorm은 여기서는 오히려 나빴습니다 (수식 그대로 쓴 구현이 CPU에서 PyTorch의 융합된 LayerNorm
# 커널보다 느려서 단계를 덜 밟았습니다). 전부 모은 Llama가 가장 좋습니다. docs/language_model.md에
# 자세한 논의가 있습니다.
#
# 모델이 아니라 옵티마이저 (optimizer)의 변화도 하나 있습니다. **Muon** (Jordan et al., 2024)은
# 가중치 행렬마다 모멘텀을 직교화해서 갱신하므로, 행렬의 모든 방향이 비슷한 만큼 움직입니다.
# qkv에서는 `train.optimizer = "muon"` (`qkv.train(..., optimizer="muon")`)입니다. 어텐션과
# 피드포워드 행렬에는 Muon을, 임베딩, 정규화, 편향에는 AdamW를 씁니다 (지금까지 무엇이 측정되었는지는
# docs/training.md에 있습니다).
#
# **기억할 것.** GPT는 트랜스포머의 디코더만 떼어 다음 토큰을 예측하도록 학습한 것입니다. 2017년
# 이후 레시피는 저마다 이유가 있는 세부에서 바뀌었습니다. 모든 층에서의 상대 위치 (RoPE), 더 싼
# 정규화 (RMSNorm), 게이트가 달린 피드포워드 (SwiGLU), 그리고 생성의 메모리를 n_heads / n_kv_heads
# 배 줄이는 적은 수의 키/값 헤드 (GQA).

# %% [markdown]
# ## 풀이 (Solutions)
#
# 각 풀이는 연습과 같은 확인 함수를 거칩니다.

# %%
layers, kv_heads, d_head = 2, 2, 64 // 4
kv_bytes_per_token = 2 * layers * kv_heads * d_head * 4               # keys and values, float32: 512

check_10_1(kv_bytes_per_token)

# %%
embeddings = 69 * 64                                          # tied: the output layer reuses them
attention = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64            # Q, K and V (2 heads of 16), out; no biases
feed_forward = 3 * 64 * 128                                   # W1, W3: 64 -> 128, W2: 128 -> 64
norm = 64                                                     # RMSNorm: a gain only
n_parameters = embeddings + 2 * (attention + feed_forward + 2 * norm) + norm

check_10_2(n_parameters)
