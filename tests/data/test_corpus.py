"""Corpus files: parallel, TSV and monolingual text; one-line errors naming file and line."""

from pathlib import Path

import pytest

from qkv.data.corpus import (
    ParallelFiles,
    TsvFile,
    iter_text_lines,
    load_split,
    read_parallel,
    read_text,
    read_tsv,
    split_files,
)
from qkv.errors import DataError

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def test_read_parallel(tmp_path):
    src = write(tmp_path / "a.de", "\ufeffEin Hund.\r\nZwei Katzen.\nDrei Vögel.")  # BOM, CRLF, no final \n
    tgt = write(tmp_path / "a.en", "A dog.\nTwo cats.\nThree birds.\n")
    data = read_parallel(src, tgt)
    assert data.src == ["Ein Hund.", "Zwei Katzen.", "Drei Vögel."]
    assert data.tgt == ["A dog.", "Two cats.", "Three birds."]
    assert data.pairs()[1] == ("Zwei Katzen.", "Two cats.")
    assert len(data) == 3 and data.skipped == 0


@pytest.mark.parametrize("n_src, n_tgt", [(3, 5), (5, 3)])
def test_different_line_counts_give_both_counts(tmp_path, n_src, n_tgt):
    src = write(tmp_path / "x.de", "s\n" * n_src)
    tgt = write(tmp_path / "x.en", "t\n" * n_tgt)
    with pytest.raises(DataError) as info:
        read_parallel(src, tgt)
    message = str(info.value)
    assert f"x.de has {n_src} lines" in message and f"x.en has {n_tgt}" in message
    assert "\n" not in message


def test_parallel_files_are_read_lazily(tmp_path):
    src = write(tmp_path / "x.de", "eins\nzwei\ndrei\n")
    tgt = write(tmp_path / "x.en", "one\n")
    pairs = iter(ParallelFiles(src, tgt))
    assert next(pairs) == ("eins", "one")  # yielded before the mismatch is found
    with pytest.raises(DataError, match="3 lines"):
        next(pairs)


def test_missing_and_empty_files(tmp_path):
    present = write(tmp_path / "ok.en", "hello\n")
    with pytest.raises(DataError, match="file not found: .*nope.de"):
        read_parallel(tmp_path / "nope.de", present)
    empty = write(tmp_path / "empty.de", "")
    with pytest.raises(DataError, match="empty.de is empty"):
        read_parallel(empty, present)
    with pytest.raises(DataError, match="empty.de is empty"):
        read_parallel(present, empty)


def test_invalid_utf8_names_the_line(tmp_path):
    src = write(tmp_path / "bad.de", b"gut\nauch gut\nkaputt \xe4 hier\n")
    tgt = write(tmp_path / "bad.en", "good\nalso good\nbroken here\n")
    with pytest.raises(DataError, match=r"bad.de:3: invalid UTF-8"):
        read_parallel(src, tgt)


def test_empty_lines_are_skipped_pairwise_or_rejected(tmp_path):
    src = write(tmp_path / "e.de", "eins\n\ndrei\nvier\n")
    tgt = write(tmp_path / "e.en", "one\ntwo\nthree\n   \n")
    data = read_parallel(src, tgt)
    assert data.pairs() == [("eins", "one"), ("drei", "three")]
    assert data.skipped == 2
    with pytest.raises(DataError, match=r"e.de:2: empty line"):
        read_parallel(src, tgt, empty="error")


def test_tsv(tmp_path):
    path = write(tmp_path / "pairs.tsv", "Hallo\tHello\n\nWelt\tWorld\n")
    data = read_tsv(path)
    assert data.pairs() == [("Hallo", "Hello"), ("Welt", "World")]
    assert data.skipped == 1
    bad = write(tmp_path / "bad.tsv", "a\tb\nonly one column\n")
    with pytest.raises(DataError, match=r"bad.tsv:2: expected 2 tab-separated columns .* found 1"):
        read_tsv(bad)
    with pytest.raises(DataError, match=r"pairs.tsv:2"):
        list(TsvFile(path, empty="error"))


def test_monolingual_text(tmp_path):
    path = write(tmp_path / "lm.txt", "First line\n\nSecond line\r\n")
    assert read_text(path) == "First line\n\nSecond line\n"
    assert list(iter_text_lines(path)) == ["First line", "Second line"]
    with pytest.raises(DataError, match="lm.txt:2: empty line"):
        list(iter_text_lines(path, empty="error"))


def make_multi30k_like(root: Path) -> Path:
    for prefix, n in (("train", 4), ("val", 2), ("test_2016_flickr", 3)):
        for lang in ("de", "en"):
            write(root / f"{prefix}.{lang}", "".join(f"{prefix} {lang} {i}\n" for i in range(n)))
    return root


def test_load_split_resolves_names(tmp_path):
    root = make_multi30k_like(tmp_path)
    assert len(load_split(root, "train", "de", "en")) == 4
    for alias in ("valid", "val", "dev"):
        assert load_split(root, alias, "de", "en").src[0] == "val de 0"
    test = load_split(root, "test", "de", "en")
    assert test.pairs()[2] == ("test_2016_flickr de 2", "test_2016_flickr en 2")
    assert split_files(root, "test_2016_flickr", "de", "en")[1].name == "test_2016_flickr.en"
    with pytest.raises(DataError, match="splits there for 'de': test_2016_flickr, train, val"):
        load_split(root, "holdout", "de", "en")
    with pytest.raises(DataError, match="train.fr"):
        load_split(root, "train", "de", "fr")
    write(root / "test_2017.de", "x\n")
    with pytest.raises(DataError, match="several test sets"):
        split_files(root, "test", "de", "en")


def test_real_multi30k():
    root = DATA / "multi30k"
    if not (root / "train.de").is_file():
        pytest.skip("shared/data/multi30k is not available")
    train = load_split(root, "train", "de", "en")
    assert len(train) == 29000 and train.skipped == 0
    assert train.src[0] == "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche."
    assert train.tgt[0] == "Two young, White males are outside near many bushes."
    assert len(load_split(root, "valid", "de", "en")) == 1014
    assert len(load_split(root, "test", "de", "en")) == 1000


def test_wrong_kinds_of_corpus_files_get_messages_with_the_right_fix(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match="is a directory, not a text file.*data.dir"):
        read_text(tmp_path / "d")
    (tmp_path / "cr.txt").write_bytes(b"one\rtwo\rthree\r")
    with pytest.raises(DataError, match=r"cr.txt:1: .*carriage returns.*tr '\\r' '\\n'"):
        list(iter_text_lines(tmp_path / "cr.txt"))
    (tmp_path / "crlf.txt").write_bytes(b"one\r\ntwo\r\n")       # Windows line ends stay fine
    assert list(iter_text_lines(tmp_path / "crlf.txt")) == ["one", "two"]
    (tmp_path / "blank.txt").write_text("\n  \n\t\n")
    for read in (lambda p: list(iter_text_lines(p)), read_text, read_tsv, lambda p: read_parallel(p, p)):
        with pytest.raises(DataError, match="all 3 lines are blank.*will not help"):
            read(tmp_path / "blank.txt")
