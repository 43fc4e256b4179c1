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
# # 1. 토큰: 텍스트에서 숫자로
#
# 트랜스포머는 숫자로 계산하므로, 텍스트를 먼저 조각, 곧 **토큰 (token)** 으로 자르고 각 토큰을 고정된
# 어휘(vocabulary) 안의 번호, 곧 **id**로 바꿔야 합니다. 이것이 토크나이저(tokenizer)의 일이고, 그 선택이
# 이후의 모든 것을 결정합니다. 시퀀스가 얼마나 길어지는지(어텐션 (attention) 비용은 길이의 제곱으로
# 늘어납니다), 어휘가 얼마나 큰지(토큰마다 임베딩 (embedding) 행이 하나씩 있습니다), 그리고 모델이 끝내
# 볼 수 없는 것이 무엇인지(어휘 밖의 텍스트)를요.
#
# 이 노트북은 qkv에서 같은 인터페이스(`qkv.tokenizers`) 뒤에 있는 세 종류를 비교합니다. **문자 (character)**,
# **단어 (word)**, 그리고 **바이트 수준 BPE** (byte-pair encoding, GPT-2의 방식)입니다.

# %%
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt

import qkv
from qkv.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer

# Tiny Shakespeare when the shared data sits next to the repository, otherwise its first 12 KB,
# shipped with the course.
shared = Path("../../../shared/data/tinyshakespeare/input.txt")
source = shared if shared.is_file() else Path("../data/shakespeare_excerpt.txt")
text = source.read_text(encoding="utf-8")[:200_000]
lines = text.splitlines(keepends=True)
cut = int(0.9 * len(lines))
train_lines, held_out = lines[:cut], "".join(lines[cut:])   # learn the vocabulary on 90%, test on the rest
print(f"{source.name}: {len(text):,} characters; {len(train_lines):,} lines to learn from, "
      f"{len(held_out):,} characters held out")
print(text[:200])


# %% [markdown]
# 연습 문제의 확인 함수들을 여기서 정의합니다. 맨 끝의 풀이 부분도 이 함수들을 사용합니다 (읽으면 답이
# 드러납니다).

# %%
def check_1_1(answer):
    if answer is ...:
        print("Exercise 1.1 waits for your answer: a number / 연습 1.1: 숫자를 넣으세요")
        return
    right = len(words.encode(sentence))
    assert answer == right, (f"Not yet: {answer} is not the count; words and punctuation marks are separate tokens / "
                             f"아직 아닙니다: 단어와 문장 부호가 각각 토큰입니다")
    print(f"Right: {right} tokens / 정답: 토큰 {right}개")


def check_1_2(answer):
    if answer is ...:
        print("Exercise 1.2 waits for your answer: a fraction between 0 and 1 / 연습 1.2: 0과 1 사이의 비율을 넣으세요")
        return
    right = sum(i == words.unk_id for i in held_out_word_ids) / len(held_out_word_ids)
    assert abs(float(answer) - right) < 1e-9, (f"Not yet: count the ids equal to words.unk_id, divide by all ids / "
                                              f"아직 아닙니다: unk_id와 같은 id의 수를 전체 수로 나누세요")
    print(f"Right: {right:.1%} of the held-out words are unknown / 정답: 처음 보는 단어 {right:.1%}")


def check_1_3(answer):
    if answer is ...:
        print('Exercise 1.3 waits for your answer: a pair such as ("a", "b") / 연습 1.3: ("a", "b") 같은 쌍을 넣으세요')
        return
    counts = pair_counts(toy)
    best = max(counts, key=counts.get)
    assert tuple(answer) == best, (f"Not yet: {tuple(answer)} occurs {counts.get(tuple(answer), 0)} times, "
                                   f"another pair more often / 아직 아닙니다: 더 자주 나오는 쌍이 있습니다")
    print(f"Right: {best} occurs {counts[best]} times / 정답: {counts[best]}번")


# %% [markdown]
# ## 1. 문자
#
# 가장 단순한 토크나이저는 문자 하나에 토큰 하나입니다. `CharTokenizer.train`은 본 문자를 모두 어휘에
# 넣습니다. qkv의 모든 토크나이저는 앞의 네 id를 같은 특수 토큰에 씁니다. `<pad>` (0, 배치를 채우는 자리),
# `<bos>` (1, 시작), `<eos>` (2, 끝), `<unk>` (3, 어휘에 없는 모든 것).

# %%
chars = CharTokenizer.train(train_lines)
print(chars, chars.vocab[:14], "...")

sentence = "To be, or not to be: that is the question."
ids = chars.encode(sentence)
print(len(ids), "ids:", ids)
print("tokens:", chars.tokens(sentence))
print("back:  ", chars.decode(ids))

# %% [markdown]
# 어휘는 작고(수십 개의 id), 모르는 영어 단어는 없습니다. 어떤 단어든 아는 글자로 쓸 수 있으니까요. 대신
# 길이가 대가입니다. 글자마다 토큰 하나이므로 문장이 긴 시퀀스가 되고, 모델은 `q`, `u`, `e`가 자주 함께
# 나온다는 것을 처음부터 배워야 합니다.
#
# ## 2. 단어
#
# `WordTokenizer`는 공백에서 자르고, 문장 부호는 각각 독립된 토큰으로 둡니다 (`\w+|[^\w\s]`). 시퀀스는
# 훨씬 짧아지고, 어휘는 훨씬 커집니다.

# %%
words = WordTokenizer.train(train_lines)
print(words)
print("tokens:", words.tokens(sentence))

# %% [markdown]
# ### 연습 1.1: 눈으로 세기
#
# 아무것도 실행하기 전에 답해 보세요. `sentence`,
# `"To be, or not to be: that is the question."`은 단어 토큰 몇 개가 될까요? 숫자를 쓰세요.

# %%
n_word_tokens = ...  # your answer: a number, counted by eye

# %%
check_1_1(n_word_tokens)

# %% [markdown]
# ### 모르는 단어
#
# 학습에서 한 번도 나오지 않은 단어에는 id가 없습니다. 그 단어는 `<unk>`가 되고, 뜻은 모델에게서
# 사라집니다. 텍스트 중 따로 떼어 둔 10%에서는 이런 일이 얼마나 자주 일어날까요?

# %%
held_out_word_ids = words.encode(held_out)
unknown = Counter(t for t in words.split(held_out) if words.token_to_id(t) is None)
print(f"{len(held_out_word_ids):,} word tokens held out; some unknown ones: {[w for w, _ in unknown.most_common(8)]}")
print("a modern sentence:", words.tokens("Transformers are cool"))

# %% [markdown]
# ### 연습 1.2: 모르는 단어의 비율
#
# `held_out_word_ids` 중 모르는 단어의 id `words.unk_id`는 몇 퍼센트일까요? 비율(0과 1 사이)로 계산하세요.

# %%
unk_share = ...  # your code: the fraction of held_out_word_ids equal to words.unk_id

# %%
check_1_2(unk_share)


# %% [markdown]
# ## 3. 바이트 쌍 인코딩(BPE), 손으로
#
# BPE (Sennrich et al., 2016)는 둘의 중간입니다. 문자에서 시작해, 학습 단어들 안에서 이웃한 기호 쌍을 모두
# 세고, **가장 자주 나오는 쌍을 합쳐** 새 기호로 만듭니다. 어휘가 원하는 크기가 될 때까지 반복합니다.
# 자주 쓰는 단어는 토큰 하나가 되고, 드문 단어는 몇 조각이 되며, 모르는 것은 없습니다.
#
# 단어와 그 단어의 출현 횟수로 된 작은 말뭉치(corpus)입니다.

# %%
toy = {tuple("hug"): 10, tuple("pug"): 5, tuple("pun"): 12, tuple("bun"): 4, tuple("hugs"): 5}


def pair_counts(words_with_counts):
    """How often each pair of neighbouring symbols occurs, counting each word as often as it occurs."""
    counts = Counter()
    for symbols, n in words_with_counts.items():
        for pair in zip(symbols, symbols[1:]):
            counts[pair] += n
    return counts


def merge(words_with_counts, pair):
    """Every occurrence of `pair` becomes one symbol."""
    merged = {}
    for symbols, n in words_with_counts.items():
        out, i = [], 0
        while i < len(symbols):
            if symbols[i:i + 2] == pair:
                out.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                out.append(symbols[i])
                i += 1
        merged[tuple(out)] = n
    return merged


print(pair_counts(toy))

# %% [markdown]
# ### 연습 1.3: 첫 번째 병합
#
# BPE는 어떤 쌍을 가장 먼저 합칠까요? 위의 횟수에서 읽어 내세요 (계산해도 됩니다).

# %%
first_merge = ...  # your answer: a pair of symbols, e.g. ("a", "b")

# %%
check_1_3(first_merge)

# %% [markdown]
# 세 번의 병합. 매번 그 시점에 가장 자주 나오는 쌍을 합칩니다.

# %%
corpus = dict(toy)
for step in range(1, 4):
    counts = pair_counts(corpus)
    best = max(counts, key=counts.get)
    corpus = merge(corpus, best)
    print(f"merge {step}: {best} ({counts[best]} times) ->", list(corpus))

# %% [markdown]
# ## 4. 바이트 수준 BPE, 실제로 학습하기
#
# qkv의 `BPETokenizer`는 같은 알고리즘을 Hugging Face `tokenizers` 라이브러리에서 실행하되, 문자가 아니라
# **바이트** 위에서 실행합니다 (GPT-2와 같습니다). 가능한 256개의 바이트가 시작 어휘이므로, 어떤 언어의
# 어떤 텍스트든 쓸 수 있습니다. 같은 줄들로 id 500개짜리를 학습시켜 봅시다.

# %%
bpe = BPETokenizer.train(train_lines, vocab_size=500)
print(bpe)
print("tokens:", bpe.tokens(sentence))
print("a modern sentence:", bpe.tokens("Transformers are cool"))

# %% [markdown]
# 자주 쓰는 단어(` the`, ` be`)는 앞의 공백까지 포함해 토큰 하나입니다. 학습 텍스트에 없던 단어는 더 작은
# 조각으로 쓰이고, `<unk>`가 되는 것은 없습니다.
#
# ### 한국어
#
# 영어로 배운 세 토크나이저는 한국어 문장을 어떻게 읽을까요?

# %%
korean = "사느냐 죽느냐, 그것이 문제로다."
print("characters:", chars.tokens(korean))
print("words:     ", words.tokens(korean))
print("BPE:       ", len(bpe.encode(korean)), "tokens:", bpe.tokens(korean)[:9], "...")
print("BPE decodes it back exactly:", bpe.decode(bpe.encode(korean)) == korean)

# %% [markdown]
# 문자와 단어 토크나이저는 `<unk>`만 봅니다. 바이트 수준 BPE는 여전히 문장을 바이트 단위로 씁니다. 한글
# 한 음절은 UTF-8로 3바이트이므로 토큰 3개가 되고, `\xNN`으로 보입니다. 이 BPE는 한국어를 본 적이 없어서
# 한국어를 위한 병합을 하나도 배우지 않았기 때문입니다. 한국어 텍스트로 학습한 토크나이저라면 그 바이트들을
# 음절과 흔한 단어로 합칠 것입니다. 다국어 모델의 토크나이저는 읽을 모든 언어에서 배워야 합니다. 그렇지
# 않으면 그 언어들은 토큰이 몇 배나 더 듭니다.
#
# ## 5. 어휘 크기와 길이
#
# 따로 떼어 둔 텍스트에 대한 각 토크나이저의 어휘 크기, 토큰 수, 토큰당 글자 수, 모르는 토큰의 비율입니다.

# %%
tokenizers = {"characters": chars, "words": words}
for size in (300, 500, 1000, 4000):
    tokenizers[f"BPE {size}"] = bpe if size == 500 else BPETokenizer.train(train_lines, vocab_size=size)
print(f"{'tokenizer':12} {'vocabulary':>10} {'tokens':>8} {'chars/token':>12} {'unknown':>8}")
rows = {}
for name, tok in tokenizers.items():
    held_ids = tok.encode(held_out)
    rows[name] = (tok.vocab_size, len(held_ids))
    print(f"{name:12} {tok.vocab_size:10,} {len(held_ids):8,} {len(held_out) / len(held_ids):12.2f} "
          f"{sum(i == tok.unk_id for i in held_ids) / len(held_ids):8.1%}")

fig, ax = plt.subplots(figsize=(5.5, 3.2))
for name, (vocab_size, n_tokens) in rows.items():
    ax.scatter(vocab_size, n_tokens, color="tab:blue" if name.startswith("BPE") else "tab:orange")
    ax.annotate(name, (vocab_size, n_tokens), textcoords="offset points", xytext=(5, 3), fontsize=8)
ax.set(xscale="log", xlabel="vocabulary size (ids)", ylabel="tokens for the held-out text",
       title="Larger vocabulary, shorter sequences")
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# (텍스트가 12 KB 발췌본뿐일 때는 BPE가 큰 크기에 닿기 전에 두 번 이상 나오는 쌍이 떨어집니다. 어휘 열이
# 어디서 멈췄는지 보여 줍니다.)
#
# 맞바꿈(trade-off)은 이렇습니다. 문자는 어휘가 가장 작고 시퀀스가 가장 깁니다. 단어는 그 반대이며,
# 모르는 단어까지 생깁니다. BPE는 그 사이의 한 점을 고를 수 있게 해 주고, 모르는 토큰이 없습니다. 원래의
# 트랜스포머는 영어와 독일어가 함께 쓰는 약 37,000개 토큰의 BPE를 썼습니다.
#
# ## 6. 학습된 실행(run)의 토크나이저
#
# 이제부터 모든 노트북은 같은 작은 학습 모델을 씁니다. `Tuesday, March 5, 2019` 같은 날짜를
# `2019-03-05`로 바꾸는 모델입니다. 아래 줄은 처음에는 모델을 학습시키고(노트북에서 약 1분), 그 뒤로는
# 불러오기만 합니다. 실행은 자신의 토크나이저를 간직하므로, 읽는 텍스트는 학습 때와 똑같이 잘립니다.

# %%
run = qkv.train("dates", out="../runs/dates", steps=400, quiet=True, reuse=True)
tok = run.src_tokenizer
print(run)
print(tok, "- kind:", tok.kind, "- the same for the target side:", run.tgt_tokenizer.vocab == tok.vocab)
print(tok.vocab)

date = "Tuesday, March 5, 2019"
print(tok.tokens(date))
print(tok.encode(date))
print(date, "->", run.translate(date))

# %% [markdown]
# 이 과제에는 문자 어휘가 잘 맞습니다. 수십 개의 기호로 모든 날짜를 쓸 수 있고, 모델은 그것을 한 글자씩
# 읽고 씁니다. 다음 노트북은 모델이 각 id로 무엇을 하는지 봅니다. id를 벡터로 바꿉니다.
#
# ## 풀이

# %%
check_1_1(13)   # To · be · , · or · not · to · be · : · that · is · the · question · .

# %%
check_1_2(sum(i == words.unk_id for i in held_out_word_ids) / len(held_out_word_ids))

# %%
check_1_3(("u", "g"))   # ug occurs in hug (10), pug (5) and hugs (5): 20 times
