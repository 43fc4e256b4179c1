"""Tokenizers: fixed special ids, exact round trips, save/load, clear errors."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkv.errors import ConfigError, DataError
from qkv.tokenizers import (
    BOS_ID,
    EOS_ID,
    KINDS,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
    load_tokenizer,
    train_tokenizer,
)

CORPUS = [
    "Ein Mann fährt Fahrrad.",
    "Zwei Hunde spielen im Schnee, und ein Kind lacht!",
    "A man rides a bike.",
    "Two dogs play in the snow, and a child laughs!",
    "Die Straße ist nass; der Mann trägt einen Hut.",
    "The street is wet; the man wears a hat.",
] * 20

UNICODE_SAMPLES = [
    "",
    " ",
    "Größe Übermaß straße",
    "한국어 문장입니다.",
    "emoji 🚀🤖👍🏽 and family 👨‍👩‍👧",
    "tabs\tand\nnewlines\r\n  double  spaces ",
    "literal <eos> and <pad> text",
    "\u0000 control \u200b zero-width",
]


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, Tokenizer]:
    return {kind: train_tokenizer(kind, CORPUS, vocab_size=400) for kind in KINDS}


@pytest.fixture(scope="module")
def bpe(tokenizers) -> BPETokenizer:
    return tokenizers["bpe"]


@pytest.mark.parametrize("kind", list(KINDS))
def test_special_tokens_have_fixed_ids(tokenizers, kind):
    tok = tokenizers[kind]
    for i, token in enumerate(SPECIAL_TOKENS):
        assert tok.id_to_token(i) == token
        assert tok.token_to_id(token) == i
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)


@pytest.mark.parametrize("kind", list(KINDS))
def test_encode_adds_no_specials_and_decode_skips_them(tokenizers, kind):
    tok = tokenizers[kind]
    ids = tok.encode("A man rides a bike.")
    assert ids and min(ids) >= len(SPECIAL_TOKENS)
    assert tok.decode([BOS_ID, *ids, EOS_ID, PAD_ID, PAD_ID]) == tok.decode(ids)
    assert tok.encode_batch(["A man", "Zwei Hunde"]) == [tok.encode("A man"), tok.encode("Zwei Hunde")]


@pytest.mark.parametrize("kind", list(KINDS))
def test_save_load_round_trip(tokenizers, kind, tmp_path):
    tok = tokenizers[kind]
    path = tmp_path / "sub" / "tok.json"
    tok.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["tok.json"]  # no temporary file left
    loaded = load_tokenizer(path)
    assert type(loaded) is type(tok)
    assert loaded.vocab_size == tok.vocab_size
    text = "Zwei Hunde spielen im Schnee. Größe! 🚀"
    assert loaded.encode(text) == tok.encode(text)
    assert [loaded.id_to_token(i) for i in range(loaded.vocab_size)] == [
        tok.id_to_token(i) for i in range(tok.vocab_size)
    ]
    assert type(tok).load(path).encode(text) == tok.encode(text)


def test_load_of_wrong_kind_says_so(tokenizers, tmp_path):
    tokenizers["char"].save(tmp_path / "c.json")
    with pytest.raises(DataError, match="char tokenizer, not bpe"):
        BPETokenizer.load(tmp_path / "c.json")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not json at all", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b'{"model": {}}', "not a qkv tokenizer"),
        (b'{"qkv_tokenizer": 1, "kind": "sentencepiece"}', "unknown tokenizer kind"),
        (b'{"qkv_tokenizer": 1, "kind": "char", "vocab": ["a", "b"]}', "must start with <pad>"),
        (b'{"qkv_tokenizer": 1, "kind": "bpe", "hf": {"model": 3}}', "BPE model cannot be read"),
        (b'{"qkv_tokenizer": 99, "kind": "char"}', "format 99"),
    ],
)
def test_loading_a_non_tokenizer_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        load_tokenizer(path)
    assert "\n" not in str(info.value)


def test_missing_file_and_unknown_kind():
    with pytest.raises(DataError, match="not found"):
        load_tokenizer("/nonexistent/tok.json")
    with pytest.raises(ConfigError, match="char, word, bpe"):
        train_tokenizer("sentencepiece", CORPUS)


# --- char --------------------------------------------------------------------------------------


ALPHABET = "abcxyz äöü.,!"


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=50))
def test_char_round_trip_on_its_alphabet(text):
    tok = CharTokenizer.from_alphabet(ALPHABET)
    assert tok.decode(tok.encode(text)) == text
    assert tok.tokens(text) == list(text)
    assert len(tok.encode(text)) == len(text)


def test_char_unknown_characters_become_unk():
    tok = CharTokenizer.from_alphabet("ab")
    assert tok.vocab_size == 6
    assert tok.encode("aXb") == [tok.token_to_id("a"), UNK_ID, tok.token_to_id("b")]
    assert tok.tokens("aX") == ["a", "<unk>"]
    assert tok.decode(tok.encode("aXb")) == "ab"  # unk is special, so decode skips it


def test_char_training_orders_by_frequency_and_caps():
    tok = CharTokenizer.train(["aaab", "ab", "c"], vocab_size=6)
    assert tok.vocab == [*SPECIAL_TOKENS, "a", "b"]
    assert CharTokenizer.train(["aaab", "c"], min_freq=2).vocab == [*SPECIAL_TOKENS, "a"]
    with pytest.raises(DataError, match="min_freq"):
        CharTokenizer.train(["abc"], min_freq=5)


def test_decode_rejects_ids_outside_the_vocabulary():
    tok = CharTokenizer.from_alphabet("ab")
    with pytest.raises(DataError, match="outside the vocabulary"):
        tok.decode([4, 99])
    with pytest.raises(DataError, match="outside the vocabulary"):
        tok.id_to_token(-1)
    assert tok.token_to_id("zz") is None


# --- word --------------------------------------------------------------------------------------


def test_word_splits_punctuation_and_maps_rare_words_to_unk():
    tok = WordTokenizer.train(["the cat sat.", "the dog sat!", "a bird"], min_freq=2)
    assert tok.vocab == [*SPECIAL_TOKENS, "sat", "the"]
    assert WordTokenizer.split("Hello, world! Größe 42") == ["Hello", ",", "world", "!", "Größe", "42"]
    assert tok.encode("the fish sat") == [tok.token_to_id("the"), UNK_ID, tok.token_to_id("sat")]
    assert tok.tokens("the fish") == ["the", "<unk>"]
    assert tok.decode(tok.encode("the sat")) == "the sat"


def test_word_vocab_size_caps_the_vocabulary():
    tok = WordTokenizer.train(CORPUS, vocab_size=10)
    assert tok.vocab_size == 10


# --- BPE ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", UNICODE_SAMPLES)
def test_bpe_round_trips_any_unicode(bpe, text):
    ids = bpe.encode(text)
    assert UNK_ID not in ids
    assert bpe.decode(ids) == text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_bpe_round_trip_property(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_learns_merges_and_respects_vocab_size(bpe):
    assert 260 <= bpe.vocab_size <= 400
    assert len(bpe.encode("Zwei Hunde spielen im Schnee")) < len("Zwei Hunde spielen im Schnee") / 2
    with pytest.raises(ConfigError, match="260"):
        BPETokenizer.train(CORPUS, vocab_size=100)


def test_bpe_tokens_are_readable_text(bpe):
    text = "Ein Mann fährt Fahrrad."
    pieces = bpe.tokens(text)
    assert "".join(pieces) == text
    assert len(pieces) == len(bpe.encode(text))
    assert "\\x" in "".join(bpe.tokens("🚀"))  # a character split across tokens shows its bytes


def test_bpe_typed_special_token_is_plain_text(bpe):
    ids = bpe.encode("<eos>")
    assert EOS_ID not in ids
    assert bpe.decode(ids) == "<eos>"


def test_saved_file_is_json_with_kind(bpe, tmp_path):
    bpe.save(tmp_path / "t.json")
    data = json.loads((tmp_path / "t.json").read_text(encoding="utf-8"))
    assert data["qkv_tokenizer"] == 1 and data["kind"] == "bpe"


# --- the `qkv tokenize` command ----------------------------------------------------------------


def test_cli_tokenize_trains_saves_and_loads(tmp_path, capsys):
    from qkv.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS), encoding="utf-8")
    saved = tmp_path / "tok.json"
    assert main(["tokenize", "--kind", "word", "--train", str(corpus), "--save", str(saved), "A man rides."]) == 0
    out = capsys.readouterr().out
    tok = load_tokenizer(saved)
    rows = [line.split("│")[1:4] for line in out.splitlines() if line.startswith("│")]
    table = [(int(i), eval(t.strip()), int(n)) for i, t, n in rows]   # the table: position, token, id
    assert table == list(zip(range(4), ["A", "man", "rides", "."], tok.encode("A man rides.")))
    assert main(["tokenize", "-t", str(saved), "A man rides."]) == 0
    out = capsys.readouterr().out
    assert f"word tokenizer ({saved})" in out.replace("\n", "")
    assert [int(line.split("│")[3]) for line in out.splitlines() if line.startswith("│")] == tok.encode("A man rides.")


def test_cli_tokenize_compare_shows_three_kinds_with_counts(tmp_path, capsys):
    from qkv.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS * 3), encoding="utf-8")
    text = "A man rides a bicycle."
    assert main(["tokenize", "--compare", "--train", str(corpus), "--vocab-size", "300", text]) == 0
    out = capsys.readouterr().out
    counts = {line.split("│")[1].strip(): int(line.split("│")[2]) for line in out.splitlines()
              if line.startswith("│") and line.split("│")[1].strip()}
    expected = {k: len(train_tokenizer(k, CORPUS * 3, vocab_size=300).tokens(text)) for k in KINDS}
    assert counts == expected
    assert counts["char"] == len(text) > counts["bpe"] >= counts["word"]
    assert main(["tokenize", "--compare", "--save", str(tmp_path / "t.json"), text]) == 2
    assert "without --compare" in capsys.readouterr().err


def test_cli_tokenize_errors_are_one_line(tmp_path, capsys):
    from qkv.cli import main

    (tmp_path / "x.json").write_text("{}", encoding="utf-8")
    assert main(["tokenize", "-t", str(tmp_path / "x.json"), "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "not a qkv tokenizer" in err and err.count("\n") == 1


def test_bpe_training_skips_lines_over_the_limit_with_one_warning(monkeypatch):
    """A line longer than MAX_TRAIN_LINE_CHARS never reaches the tokenizers library (a 50 MB line
    aborted the process there); the limit is set small here to keep the test fast."""
    import warnings

    import qkv.tokenizers as tokenizers
    from qkv.errors import QkvWarning

    monkeypatch.setattr(tokenizers, "MAX_TRAIN_LINE_CHARS", 50)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tok = tokenizers.train_tokenizer("bpe", ["ab ab ab", "x" * 51, "y" * 80, "ab ab"], 300, 1)
    said = [str(w.message) for w in caught if issubclass(w.category, QkvWarning)]
    assert len(said) == 1 and "skipped 2 tokenizer training lines longer than 50 characters (the longest 80)" in said[0]
    assert tok.token_to_id("xx") is None and tok.token_to_id("ab") is not None


def test_a_skipped_training_line_is_one_warning_line_on_the_command_line(monkeypatch, tmp_path, capsys):
    import qkv.tokenizers as tokenizers
    from qkv.cli import main

    monkeypatch.setattr(tokenizers, "MAX_TRAIN_LINE_CHARS", 50)
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world\n" + "z" * 500 + "\nhello again\n")
    assert main(["tokenize", "--kind", "bpe", "--train", str(corpus), "hello"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: skipped 1 tokenizer training line longer than 50 characters") and err.count("\n") == 1
    assert main(["tokenize", "--kind", "bpe", "x" * 51]) == 2
    assert capsys.readouterr().err.startswith("error: TEXT has 51 characters, more than the 50")


def test_bpe_encodes_a_text_over_the_limit_in_pieces_with_the_same_ids(monkeypatch):
    import qkv.tokenizers as tokenizers

    tok = tokenizers.train_tokenizer("bpe", ["the cat sat on the mat", "the dog ran"] * 20, 300, 2)
    text = "the cat sat on the mat and the dog ran far, " * 40 + "x" * 120
    whole = tok.encode(text)
    monkeypatch.setattr(tokenizers, "MAX_TRAIN_LINE_CHARS", 50)
    assert tokenizers._pieces(text, 50)[0].endswith("the") and "".join(tokenizers._pieces(text, 50)) == text
    assert tok.encode(text) == whole and tok.encode_batch(["ab", text]) == [tok.encode("ab"), whole]
