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
# # 5. 마스크와 교사 강요
#
# 마스크(mask)는 쿼리(query)가 어떤 키(key)를 볼 수 있는지 어텐션(attention)에 알려 줍니다.
# 트랜스포머(Transformer)에는 두 가지가 필요합니다.
#
# - **패딩 마스크**(padding mask): 배치 안의 문장들은 길이가 제각각이라, 짧은 문장은 `<pad>`
#   토큰으로 채웁니다. 이 토큰은 아무도 보면 안 됩니다.
# - **인과 마스크**(causal mask): 디코더(decoder)는 출력을 한 토큰씩 써 나가므로, 위치 $i$는
#   위치 $0..i$만 볼 수 있고 미래는 절대 볼 수 없습니다.
#
# 학습이 빠른 것도 인과 마스크 덕분입니다. **교사 강요**(teacher forcing)에서는 디코더가 정답
# 타깃 전체를 오른쪽으로 한 칸 민 채 한꺼번에 읽고, 다음 토큰 예측을 순전파(forward pass) 한
# 번에 모두 배웁니다. 두 마스크와 밀린 입력을 직접 만들어 보고, 모델의 것과 비교해 봅시다.

# %%
import inspect

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import qkv
from qkv.model import masks            # the paper's masks, to compare yours with

torch.set_grad_enabled(False)          # no training here: no gradients needed

run = qkv.train("dates", out="../runs/dates", steps=400, quiet=True, reuse=True)
tok = run.src_tokenizer                # one character vocabulary for source and target
PAD, BOS, EOS = run.cfg.pad_id, run.cfg.bos_id, run.cfg.eos_id
print(run)
print("special ids: <pad> =", PAD, " <bos> =", BOS, " <eos> =", EOS)


# %% [markdown]
# 연습 문제의 채점 함수를 여기서 정의해 두어, 맨 끝의 풀이 절에서도 쓸 수 있게 합니다.
# `show`는 불리언 마스크나 어텐션 가중치를 그림으로 그립니다.

# %%
def show(matrix, rows, cols, title, ax=None):
    """A mask or attention weights as a picture: row = query, column = key."""
    ax = ax or plt.subplots(figsize=(4.5, 4))[1]
    ax.imshow(matrix.float(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    ax.set_title(title, fontsize=10)
    return ax


def check_5_1(pad_mask):
    if pad_mask is ...:
        print("Exercise 5.1 waits for your answer / 연습 5.1이 답을 기다립니다")
        return
    expected = masks.padding_mask(src, PAD)
    assert pad_mask.dtype == torch.bool, "Not yet: a mask is boolean (True = may attend) / 아직: 마스크는 bool입니다"
    assert pad_mask.shape == expected.shape, \
        f"Not yet: shape {tuple(pad_mask.shape)}, expected (B, 1, 1, S) = {tuple(expected.shape)} / 아직: 모양은 (B, 1, 1, S)"
    assert torch.equal(pad_mask, expected), "Not yet: True where src != PAD / 아직: src != PAD인 곳이 True"
    print("Exercise 5.1 correct / 연습 5.1 정답")


def check_5_2(tgt_in, tgt_out):
    if tgt_in is ... or tgt_out is ...:
        print("Exercise 5.2 waits for your answer / 연습 5.2가 답을 기다립니다")
        return
    recorded = run.explain(source, target=target).trace          # what the model reads and predicts
    assert list(tgt_in) == recorded.tgt.ids, "Not yet: the decoder reads <bos> and then y / 아직: 디코더 입력은 <bos> 다음에 y"
    assert list(tgt_out) == recorded.next_ids, "Not yet: it must predict y and then <eos> / 아직: 목표는 y 다음에 <eos>"
    print("Exercise 5.2 correct / 연습 5.2 정답")


def check_5_3(causal):
    if causal is ...:
        print("Exercise 5.3 waits for your answer / 연습 5.3이 답을 기다립니다")
        return
    assert causal.dtype == torch.bool and causal.shape == (T, T), f"Not yet: a ({T}, {T}) bool tensor / 아직: ({T}, {T}) bool 텐서"
    assert not causal[0, 1], "Not yet: position 0 must not see position 1 (the future) / 아직: 0번은 1번(미래)을 보면 안 됩니다"
    assert torch.equal(causal, masks.causal_mask(T)), "Not yet: True on and below the diagonal / 아직: 대각선과 그 아래가 True"
    assert torch.equal(causal, trace.attention("dec", layer=0).mask), "Not yet: not the decoder's mask / 아직: 디코더의 마스크와 다릅니다"
    print("Exercise 5.3 correct / 연습 5.3 정답")


# %% [markdown]
# ## 1. 배치와 패딩
#
# 학습은 문장을 하나씩 넣지 않습니다. 여러 문장을 텐서 하나로 쌓습니다. 이 과제의 실제 쌍 두
# 개를 가져와 봅시다. 길이가 서로 다릅니다.

# %%
pairs = [("Tuesday, March 5, 2019", "2019-03-05"), ("12.07.1998", "1998-07-12")]
src_ids = [tok.encode(s) for s, _ in pairs]
S = max(len(ids) for ids in src_ids)
src = torch.tensor([ids + [PAD] * (S - len(ids)) for ids in src_ids])      # (B, S), padded with <pad>
print("lengths:", [len(ids) for ids in src_ids], " batch:", tuple(src.shape))
print(src)

# %% [markdown]
# 두 번째 행은 10글자 뒤에 `<pad>` 토큰 12개가 붙어 있습니다. 어텐션은 이것을 무시해야 합니다.
# `<pad>`는 문장의 일부가 아니고, 같은 문장이라면 긴 문장들과 한 배치에 있든 혼자 있든 결과가
# 같아야 합니다.
#
# 어텐션 점수의 모양은 (B, H, 쿼리, 키)입니다. 패딩 마스크는 **키**를 가립니다. 모든 헤드(head),
# 모든 쿼리에 대해 같은 키를 가리므로 모양이 (B, 1, 1, S)이고, 1인 축은 브로드캐스트됩니다.
#
# ### 연습 5.1
#
# `src`의 패딩 마스크를 만드세요. 실제 토큰이면 `True`, `<pad>`면 `False`이고 모양은
# (B, 1, 1, S)입니다. (힌트: `src != PAD`에 이어 `[:, None, None, :]`)

# %%
pad_mask = ...  # your code / 직접 작성

check_5_1(pad_mask)

# %% [markdown]
# `masks.padding_mask`가 하는 일과, 두 번째 행에 대한 그 마스크입니다.

# %%
print(inspect.getsource(masks.padding_mask))
print(masks.padding_mask(src, PAD)[1, 0, 0].int())

# %% [markdown]
# 제대로 동작할까요? 패딩된 배치 안에 있는 짧은 문장의 인코더(encoder) 출력은, 패딩 없이 그
# 문장만 넣었을 때의 출력과 같아야 합니다. 그리고 마스크를 빼면 `<pad>` 토큰이 진짜 토큰에
# 섞여 들어옵니다.

# %%
n = len(src_ids[1])
alone, _ = run.model.encode(src[1:, :n])                   # the short sentence by itself
batched, _ = run.model.encode(src)                          # in the padded batch, with its mask
unmasked = run.model.encoder(run.model.src_embed(src), None)   # the same batch, mask left out
print("with the mask:    largest difference", float((batched[1, :n] - alone[0]).abs().max()))
print("without the mask: largest difference", float((unmasked[1, :n] - alone[0]).abs().max()))

# %% [markdown]
# ## 2. 디코더의 입력: 오른쪽으로 민 타깃
#
# 디코더는 다음 토큰을 예측하도록 배웁니다. 타깃 $y$ = `2019-03-05`에 대해, 디코더는
# `<bos>`(문장 시작, begin of sequence)와 그 뒤의 $y$를 읽고, 각 위치에서 바로 다음 토큰을
# 예측해야 합니다. 마지막 토큰은 `<eos>`(문장 끝, end of sequence)입니다.
#
# | 위치 | 0 | 1 | 2 | … | 10 |
# |---|---|---|---|---|---|
# | 읽는 것 (`tgt_in`) | `<bos>` | `2` | `0` | … | `5` |
# | 예측할 것 (`tgt_out`) | `2` | `0` | `1` | … | `<eos>` |
#
# `tgt_in`은 `tgt_out`을 오른쪽으로 한 칸 옮기고 빈자리에 `<bos>`를 넣은 것입니다. 그래서
# "오른쪽으로 민다(shifted right)"고 합니다. 생성할 때는 `<bos>` 하나에서 시작해 모델이 `<eos>`를
# 쓰면 멈춥니다.

# %%
source, target = pairs[0]
y = tok.encode(target)
print(target, "->", y)

# %% [markdown]
# ### 연습 5.2
#
# 이 쌍의 `tgt_in`과 `tgt_out`을 `y`, `BOS`, `EOS`로 만들어 id 리스트로 적으세요. 채점 함수는
# `run.explain(source, target)`에서 모델이 실제로 읽고 예측하는 것과 비교합니다.

# %%
tgt_in = ...   # your code / 직접 작성: <bos> then y
tgt_out = ...  # your code / 직접 작성: y then <eos>

check_5_2(tgt_in, tgt_out)

# %% [markdown]
# ## 3. 교사 강요: 학습 한 스텝
#
# 학습할 때처럼 쌍 전체로 순전파를 한 번 합니다. 소스와 밀린 타깃이 들어가고, 위치마다 어휘
# 전체에 대한 점수 한 줄, 즉 로짓(logits)이 나옵니다. 손실(loss)은 각 위치의 진짜 다음 토큰에
# 대한 교차 엔트로피(cross-entropy)를 위치들에 걸쳐 평균한 값입니다. (실제 학습기는 레이블
# 스무딩(label smoothing)을 더하고 배치 전체로 평균합니다. 노트북 08에서 다룹니다.)

# %%
trace = run.explain(source, target=target).trace
dec_in = torch.tensor([trace.tgt.ids])                     # (1, T) <bos> 2 0 1 9 - 0 3 - 0 5
dec_out = torch.tensor([trace.next_ids])                   # (1, T) 2 0 1 9 - 0 3 - 0 5 <eos>
src1 = torch.tensor([tok.encode(source)])                  # (1, S)
T = dec_in.size(1)

logits = run.model(src1, dec_in)                           # (1, T, vocabulary)
loss = F.cross_entropy(logits[0], dec_out[0])
probs = logits[0].softmax(-1)
name = trace.tgt.tokens + ["<eos>"]                        # display names: <bos>, then the target
show_id = {i: t for i, t in zip(trace.tgt.ids + [EOS], name)}
for t in range(T):
    want = int(dec_out[0, t])
    guess = int(probs[t].argmax())
    print(f"position {t:2d}: reads {show_id[int(dec_in[0, t])]:5s}  must predict {show_id[want]:5s}  "
          f"p = {float(probs[t, want]):.3f}   model's first choice: {tok.id_to_token(guess)}")
print(f"loss = {float(loss):.4f}")

# %% [markdown]
# 교사 강요란 바로 이것입니다. 디코더는 모든 위치에서 자기가 추측한 토큰이 아니라 **정답**
# 이전 토큰들을 읽습니다. 위치 3에서 틀렸더라도 위치 4는 여전히 올바른 `9`를 읽습니다. 그래서
# 위치 하나하나가 답이 정해진 작은 문제가 되고, 그 문제들이 모두 같은 순전파 한 번에 채점됩니다.
# (확률이 1이 아니라 0.9 근처에서 멈추는 것은 이 실행이 레이블 스무딩 0.1로
# 학습되었기 때문입니다. 다른 토큰에도 확률을 조금 남겨 두게 하는 기법이고, 노트북 08에서
# 다룹니다.)
#
# ## 4. 인과 마스크
#
# 디코더가 타깃 전체를 한꺼번에 읽는다면, 위치 2가 자기가 맞혀야 할 위치 3의 토큰을 그냥 보는
# 것은 무엇이 막을까요? 인과 마스크입니다. 쿼리 $i$는 키 $0..i$에만 어텐션할 수 있습니다.
# 행렬로 쓰면 아래 삼각 행렬입니다.
#
# ### 연습 5.3
#
# 디코더의 `T` = 11개 위치에 대한 인과 마스크를 만드세요. (T, T) 모양의 불리언 텐서이고,
# 대각선과 그 아래가 `True`입니다. (힌트: `torch.ones(T, T, dtype=torch.bool)`과 `.tril()`)

# %%
causal = ...  # your code / 직접 작성

check_5_3(causal)

# %% [markdown]
# 라이브러리의 구현도 한 줄입니다. 아래는 디코더가 기록한 마스크와, 그 헤드 하나의 가중치입니다.
# 대각선 위로는 아무것도 없습니다.

# %%
print(inspect.getsource(masks.causal_mask))
dec = trace.attention("dec", layer=0)
fig, axes = plt.subplots(1, 2, figsize=(9, 4))
show(dec.mask, dec.query_tokens, dec.key_tokens, "causal mask (True = may attend)", axes[0])
show(dec.weights[0], dec.query_tokens, dec.key_tokens, "decoder layer 0, head 0: weights", axes[1])
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. 인과 마스크가 학습을 병렬로 만드는 이유
#
# 모델이 날짜를 쓸 때는 토큰마다 디코더를 한 번씩 돌립니다. `<bos>`로, 다음엔 `<bos> 2`로,
# 그다음엔 `<bos> 2 0`으로, 그렇게 매번 마지막 위치의 예측만 씁니다. 마스크 덕분에 전체를 한 번
# 돌린 순전파의 위치 $t$는, 한 단계씩 돌린 순전파 중 $t$번째가 보는 것과 정확히 같은 것을 봅니다.
# 그래서 같은 숫자를 계산합니다.

# %%
full = run.model(src1, dec_in)[0]                          # one pass, all T positions
diffs = [float((run.model(src1, dec_in[:, : t + 1])[0, -1] - full[t]).abs().max()) for t in range(T)]
print("one pass vs", T, "step-by-step passes, largest difference:", max(diffs))

# %% [markdown]
# 그리고 미래는 정말로 보이지 않습니다. 입력의 위치 6 토큰을 바꾸면, 위치 6부터의 예측만
# 바뀝니다.

# %%
changed = dec_in.clone()
changed[0, 6] = tok.encode("7")[0]                         # it read the '0' of "03"; now a '7'
after = run.model(src1, changed)[0]
print("position:         ", list(range(T)))
print("prediction changed:", [int(bool((after[t] - full[t]).abs().max() > 1e-5)) for t in range(T)])

# %% [markdown]
# 그래서 학습은 타깃의 예측 T개와 그 손실을 모두 병렬 순전파 한 번으로 계산합니다. 모든 위치에
# 대한 행렬 곱을 한꺼번에 하는 것이죠. RNN은 단계마다 이전 단계의 상태가 필요해서 위치를 하나씩
# 차례로 지나가야 했습니다. 트랜스포머가 GPU에서 그렇게 빨리 학습되는 이유의 상당 부분이 이
# 차이에 있습니다.
#
# 길이가 다른 타깃들을 배치로 묶으면 디코더에는 두 마스크가 동시에 필요합니다. 인과 마스크이면서
# `<pad>` 키도 가리는 `causal & (tgt_in != PAD)`이고, 모양은 (B, 1, T, T)입니다. (날짜 과제에서는
# 모든 타깃이 10글자짜리 `YYYY-MM-DD`라서 타깃에 패딩이 필요 없습니다.)
#
# ## 풀이
#
# 각 풀이는 연습 문제와 같은 채점을 거칩니다.

# %%
check_5_1((src != PAD)[:, None, None, :])

check_5_2([BOS] + y, y + [EOS])

check_5_3(torch.ones(T, T, dtype=torch.bool).tril())
