"""Checks that a page speaks one language: the English strings of qkv.explain.i18n left in a page's visible text."""

from __future__ import annotations

import html
import re

from qkv.explain.i18n import PLACEHOLDER, STRINGS

HANGUL = re.compile(r"[\uac00-\ud7a3]")


def visible_text(page: str) -> str:
    """The text a reader sees in an HTML page: no styles, scripts, title or tags, entities decoded."""
    body = re.sub(r"<(style|script|title)[^>]*>.*?</\1>", " ", page, flags=re.S)
    body = re.sub(r"</?(sub|sup|code|b|span)\b[^>]*>", "", body)           # inline: no space
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def _pieces(template: str) -> list[str]:
    """The literal text between a template's placeholders, tags removed."""
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", p)).split()) for p in PLACEHOLDER.split(template)[::2]]


def english_left(text: str, lang: str = "ko") -> list[str]:
    """English strings of the table (the literal pieces of every value that `lang` says differently,
    of at least 4 characters with a letter) still found in `text`, a page's visible text, as words
    (not inside `d_head` or `RMSNorm`, not a formula's name as in `Attention(Q, K, V)`). The pieces of
    `lang`'s own strings are taken out of the text first, as they may hold an English term beside its
    translation, "어텐션 (attention)"; a piece `lang` keeps in the same string ("post-LN") is allowed.
    An upper-cased piece counts too (CSS may upper-case a label)."""
    text = " ".join(text.split())
    own = sorted({p for v in STRINGS[lang].values() for p in _pieces(v) if HANGUL.search(p)}, key=len, reverse=True)
    for piece in own:
        text = text.replace(piece, " | ")
    found = set()
    for key, english in STRINGS["en"].items():
        if STRINGS[lang][key] == english:
            continue
        for piece in _pieces(english):
            piece = piece.strip(" .,:;·()“”→+=")
            if len(piece) < 4 or not re.search(r"[A-Za-z]", piece) or piece in " ".join(STRINGS[lang][key].split()):
                continue
            for variant in {piece, piece.upper()}:
                if re.search(rf"(?<!\w){re.escape(variant)}(?![\w(])", text):
                    found.add(f"{key}: {piece!r}")
    return sorted(found)
