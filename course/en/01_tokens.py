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
# # 1. Tokens: from text to numbers
#
# A Transformer computes with numbers, so text must first be cut into pieces, **tokens**, and
# each token replaced by its number, its **id**, in a fixed vocabulary. That is the tokenizer's
# job, and its choices shape everything after: how long the sequences are (attention's cost grows
# with the square of the length), how large the vocabulary is (one embedding row per token), and
# what the model can never see (text that falls outside the vocabulary).
#
# This notebook compares three kinds, all in qkv behind one interface (`qkv.tokenizers`):
# **characters**, **words**, and **byte-level BPE** (byte-pair encoding, as in GPT-2).

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
# The checks of the exercises are defined here, so that the Solutions section at the end can run
# them too (reading them gives the answers away).

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
# ## 1. Characters
#
# The simplest tokenizer: one token per character. `CharTokenizer.train` keeps every character
# it sees. Every qkv tokenizer reserves the same four special ids first: `<pad>` (0, filler in a
# batch), `<bos>` (1, begin), `<eos>` (2, end) and `<unk>` (3, anything not in the vocabulary).

# %%
chars = CharTokenizer.train(train_lines)
print(chars, chars.vocab[:14], "...")

sentence = "To be, or not to be: that is the question."
ids = chars.encode(sentence)
print(len(ids), "ids:", ids)
print("tokens:", chars.tokens(sentence))
print("back:  ", chars.decode(ids))

# %% [markdown]
# A small vocabulary (a few dozen ids) and no unknown English word: any word is spelled with
# known letters. The price is length: one token per character, so a sentence is a long sequence,
# and the model must learn from scratch that `q`, `u`, `e` often go together.
#
# ## 2. Words
#
# `WordTokenizer` splits on spaces and keeps punctuation marks as tokens of their own
# (`\w+|[^\w\s]`). Sequences become much shorter, the vocabulary much larger.

# %%
words = WordTokenizer.train(train_lines)
print(words)
print("tokens:", words.tokens(sentence))

# %% [markdown]
# ### Exercise 1.1: count by eye
#
# Before running anything: how many word tokens does `sentence` give,
# `"To be, or not to be: that is the question."`? Write the number.

# %%
n_word_tokens = ...  # your answer: a number, counted by eye

# %%
check_1_1(n_word_tokens)

# %% [markdown]
# ### Unknown words
#
# A word that never occurred in training has no id: it becomes `<unk>`, and whatever it meant
# is lost to the model. How often does that happen on the held-out tenth of the text?

# %%
held_out_word_ids = words.encode(held_out)
unknown = Counter(t for t in words.split(held_out) if words.token_to_id(t) is None)
print(f"{len(held_out_word_ids):,} word tokens held out; some unknown ones: {[w for w, _ in unknown.most_common(8)]}")
print("a modern sentence:", words.tokens("Transformers are cool"))

# %% [markdown]
# ### Exercise 1.2: the unknown share
#
# What fraction of `held_out_word_ids` is the unknown id `words.unk_id`?

# %%
unk_share = ...  # your code: the fraction of held_out_word_ids equal to words.unk_id

# %%
check_1_2(unk_share)


# %% [markdown]
# ## 3. Byte-pair encoding, by hand
#
# BPE (Sennrich et al., 2016) sits between the two. Start from characters; count every pair of
# neighbouring symbols in the training words; **merge the most frequent pair** into a new symbol;
# repeat until the vocabulary has the size you want. Frequent words end up as one token, rare
# words as a few pieces, and nothing is ever unknown.
#
# A toy corpus of words and how often each occurs:

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
# ### Exercise 1.3: the first merge
#
# Which pair does BPE merge first? Read it off the counts above (or compute it).

# %%
first_merge = ...  # your answer: a pair of symbols, e.g. ("a", "b")

# %%
check_1_3(first_merge)

# %% [markdown]
# Three merges, each the most frequent pair at that moment:

# %%
corpus = dict(toy)
for step in range(1, 4):
    counts = pair_counts(corpus)
    best = max(counts, key=counts.get)
    corpus = merge(corpus, best)
    print(f"merge {step}: {best} ({counts[best]} times) ->", list(corpus))

# %% [markdown]
# ## 4. Byte-level BPE, trained for real
#
# qkv's `BPETokenizer` runs the same algorithm in the Hugging Face `tokenizers` library, on
# **bytes** instead of characters (as GPT-2 does): the 256 possible bytes are the starting
# vocabulary, so any text, in any language, can be written with it. Train one with 500 ids on
# the same lines:

# %%
bpe = BPETokenizer.train(train_lines, vocab_size=500)
print(bpe)
print("tokens:", bpe.tokens(sentence))
print("a modern sentence:", bpe.tokens("Transformers are cool"))

# %% [markdown]
# Frequent words (` the`, ` be`) are single tokens, with their leading space; a word the training
# text never had is spelled from smaller pieces, and nothing becomes `<unk>`.
#
# ### Korean
#
# How do the three read a Korean sentence, when they learned from English?

# %%
korean = "사느냐 죽느냐, 그것이 문제로다."
print("characters:", chars.tokens(korean))
print("words:     ", words.tokens(korean))
print("BPE:       ", len(bpe.encode(korean)), "tokens:", bpe.tokens(korean)[:9], "...")
print("BPE decodes it back exactly:", bpe.decode(bpe.encode(korean)) == korean)

# %% [markdown]
# Characters and words see only `<unk>`. Byte-level BPE still writes the sentence, byte by byte:
# a Hangul syllable is 3 bytes in UTF-8, so 3 tokens, shown as `\xNN`, because this BPE never saw
# Korean and learned no merges for it. A tokenizer trained on Korean text would merge those bytes
# into syllables and common words. A multilingual model's tokenizer must learn from every language
# it will read, or those languages cost several times more tokens.
#
# ## 5. Length against vocabulary size
#
# Each tokenizer on the held-out text: the vocabulary, the number of tokens, characters per token,
# and the share of unknown tokens.

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
# (When the text is only the 12 KB excerpt, BPE runs out of pairs that occur twice before it
# reaches the larger sizes; the vocabulary column shows where it stopped.)
#
# The trade-off: characters give the smallest vocabulary and the longest sequences; words the
# opposite, with unknown words besides; BPE lets you choose a point in between, with no unknowns.
# The original Transformer used BPE with a vocabulary of about 37,000 tokens shared by English
# and German.
#
# ## 6. The tokenizer of a trained run
#
# Every notebook from here on uses the same small trained model: it turns dates such as
# `Tuesday, March 5, 2019` into `2019-03-05`. The line below trains it the first time (about a
# minute on a laptop) and loads it every time after. A run keeps its tokenizer, so what it reads
# is cut exactly as in training:

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
# A character vocabulary fits this task: a few dozen symbols write every date, and the model
# reads and writes them one character at a time. The next notebook looks at what the model does with each
# id: it turns it into a vector.
#
# ## Solutions

# %%
check_1_1(13)   # To · be · , · or · not · to · be · : · that · is · the · question · .

# %%
check_1_2(sum(i == words.unk_id for i in held_out_word_ids) / len(held_out_word_ids))

# %%
check_1_3(("u", "g"))   # ug occurs in hug (10), pug (5) and hugs (5): 20 times
