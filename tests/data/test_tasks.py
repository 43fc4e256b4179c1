"""Built-in synthetic tasks: correct answers, determinism, length ranges, disjoint splits."""

import datetime

import pytest

from qkv.data.tasks import SPLITS, TASKS, get_task, make_task, split_of
from qkv.errors import ConfigError, DataError
from qkv.tokenizers import UNK_ID, CharTokenizer

# Every human format the dates task may write, as strptime patterns (C locale names).
DATE_PATTERNS = [
    "%B %d, %Y", "%d %b %y", "%Y/%m/%d", "%d.%m.%Y", "%A, %B %d, %Y", "%d %B %Y",
    "%b %d, %Y", "%m/%d/%Y", "%d-%b-%Y", "%a %d %b %Y", "%Y%m%d",
]


def parse_date(text: str) -> set[datetime.date]:
    """Every reading of `text` under the known patterns (a correct task gives exactly one)."""
    readings = set()
    for pattern in DATE_PATTERNS:
        try:
            readings.add(datetime.datetime.strptime(text, pattern).date())
        except ValueError:
            pass
    return readings


def check_answer(name: str, src: str, tgt: str) -> None:
    if name == "copy":
        assert tgt == src
    elif name == "reverse":
        assert tgt == src[::-1]
    elif name == "sort":
        assert tgt == "".join(sorted(src))
    elif name == "addition":
        a, b = src.split("+")
        assert int(tgt) == int(a) + int(b)
    elif name == "dates":
        assert parse_date(src) == {datetime.date.fromisoformat(tgt)}, src
        assert len(tgt) == 10
    else:  # a new task needs a check here
        raise AssertionError(f"no answer check for task {name}")


@pytest.mark.parametrize("name", list(TASKS))
def test_answers_are_correct(name):
    pairs = make_task(name, 300, seed=1)
    assert len(pairs) == 300
    for src, tgt in pairs:
        check_answer(name, src, tgt)


def test_dates_use_many_formats():
    sources = [src for src, _ in make_task("dates", 500, seed=0)]
    used = {p for src in sources for p in DATE_PATTERNS if _parses(src, p)}
    assert len(used) >= 10
    assert any("," in s and s.split(",")[0] in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
                                                  "Saturday", "Sunday") for s in sources)


def _parses(text: str, pattern: str) -> bool:
    try:
        datetime.datetime.strptime(text, pattern)
        return True
    except ValueError:
        return False


@pytest.mark.parametrize("name", list(TASKS))
def test_deterministic_given_seed(name):
    assert make_task(name, 50, seed=7) == make_task(name, 50, seed=7)
    assert make_task(name, 50, seed=7) != make_task(name, 50, seed=8)


@pytest.mark.parametrize("name", list(TASKS))
def test_splits_never_share_an_input(name):
    sources = {split: {src for src, _ in make_task(name, 200, seed=i, split=split)}
               for i, split in enumerate(SPLITS)}
    assert all(len(s) == 200 for s in sources.values())  # distinct within a split
    assert not sources["train"] & sources["valid"]
    assert not sources["train"] & sources["test"]
    assert not sources["valid"] & sources["test"]
    for split, srcs in sources.items():
        assert {split_of(s) for s in srcs} == {split}


@pytest.mark.parametrize("name", list(TASKS))
def test_alphabet_covers_every_character(name):
    tok = CharTokenizer.from_alphabet(get_task(name).alphabet)
    for src, tgt in make_task(name, 200, seed=3):
        assert UNK_ID not in tok.encode(src) + tok.encode(tgt)
        assert tok.decode(tok.encode(src)) == src


@pytest.mark.parametrize("name", ["copy", "reverse", "sort"])
def test_length_range_and_longer_test_inputs(name):
    train = make_task(name, 100, min_len=2, max_len=5)
    assert {len(src) for src, _ in train} == {2, 3, 4, 5}
    longer = make_task(name, 100, split="test", min_len=11, max_len=15)
    assert all(11 <= len(src) <= 15 for src, _ in longer)


def test_addition_length_counts_digits():
    pairs = make_task("addition", 200, min_len=4, max_len=5)
    for src, _ in pairs:
        a, b = src.split("+")
        assert max(len(a), len(b)) in (4, 5)
        assert a == str(int(a)) and b == str(int(b))  # no leading zeros


def test_errors_name_the_fix():
    with pytest.raises(ConfigError, match="copy, reverse, sort, addition, dates"):
        make_task("multiply", 10)
    with pytest.raises(ConfigError, match="train, valid, test"):
        make_task("copy", 10, split="dev")
    with pytest.raises(ConfigError, match="no length"):
        make_task("dates", 10, max_len=5)
    with pytest.raises(ConfigError, match="min_len <= max_len"):
        make_task("copy", 10, min_len=5, max_len=2)
    with pytest.raises(DataError, match="widen the length range"):
        make_task("copy", 30, min_len=1, max_len=1)  # only 26 one-letter inputs exist
