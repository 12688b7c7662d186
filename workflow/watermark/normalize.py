"""Text normalisers run before a text is tokenised for detection, as the reference detector's
(lm-watermarking ``normalizers.py``, ``--normalizers``): they undo cheap string-level attacks
that change the tokens without changing what a reader sees.

* ``unicode`` - NFC; the invisible and unusual space characters of the reference's
  ``whitespaces`` ruleset (no-break, zero-width, bidi and variation-selector characters, ...)
  become a space, runs of spaces collapse to one, and control characters (Unicode category Cc,
  newlines and tabs included, as the reference) are dropped.
* ``homoglyphs`` - each character outside the text's most frequent script (ISO 15924 category,
  counted over all characters; COMMON and characters of no category are kept) is replaced by
  one of its Unicode confusables in that script or COMMON. The tables are homoglyphs-fork
  2.1.2's (the reference vendors that package's September 2022 confusables: 9,619 entries
  against 9,975). Where a character has several such confusables the reference takes a
  set's first element, which varies between Python processes, and a character with none stops
  it (IndexError); here the lowest code point is taken and a character with none is kept.

The reference's third, ``truecase``, needs a spaCy or NLTK model fetched at run time: not here.
"""

from __future__ import annotations

import bisect
import functools
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from importlib.resources import files

#: The reference's ``whitespaces`` ruleset: characters a reader does not see as text.
INVISIBLE = (
    "\u00a0\u1680\u180e\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u200b"
    "\u200c\u200d\u200e\u200f\u2060\u2063\u202a\u202b\u202c\u202d\u202e\u202f\u205f\u3000\ufeff"
    "\uffa0\ufff9\ufffa\ufffb\u3164" + "".join(chr(c) for c in range(0xFE00, 0xFE10))
)
_INVISIBLE = re.compile(f"[{re.escape(INVISIBLE)}]")
_SPACES = re.compile(" +")
_DATA = files("homoglyphs_fork")


def unicode(text: str) -> str:
    text = _INVISIBLE.sub(" ", unicodedata.normalize("NFC", text))
    text = _SPACES.sub(" ", text)
    return "".join(c for c in text if unicodedata.category(c) != "Cc")


@functools.cache
def _categories() -> tuple[frozenset[str], list[int], list[tuple[int, int, str]]]:
    data = json.loads((_DATA / "categories.json").read_text(encoding="utf-8"))
    points = sorted((int(a), int(b), str(c)) for a, b, c in data["points"])
    return frozenset(data["aliases"]), [p[0] for p in points], points


@functools.lru_cache(maxsize=65536)
def category(char: str) -> str | None:
    """The character's script: the first word of its Unicode name when that is a category,
    else the category whose code-point range holds it (None: no range does)."""
    aliases, starts, points = _categories()
    name = unicodedata.name(char, "").split(" ")[0]
    if name in aliases:
        return name
    index = bisect.bisect_right(starts, ord(char)) - 1
    if index >= 0 and points[index][0] <= ord(char) <= points[index][1]:
        return points[index][2]
    return None


@functools.cache
def _confusables() -> dict[str, list[str]]:
    return json.loads((_DATA / "confusables.json").read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=65536)
def _canonical(char: str, script: str) -> str:
    """The lowest single-character confusable of ``char`` in ``script`` or COMMON, or ``char``
    if none (the table also lists sequences: no alphabet holds those)."""
    twins = [
        c for c in _confusables().get(char, []) if len(c) == 1 and category(c) in (script, "COMMON")
    ]
    return min(twins) if twins else char


def homoglyphs(text: str) -> str:
    if not text:
        return text
    script = Counter(category(c) for c in text).most_common(1)[0][0]
    keep = {script, "COMMON", None}
    return "".join(c if category(c) in keep else _canonical(c, script) for c in text)


NORMALIZERS: dict[str, Callable[[str], str]] = {"unicode": unicode, "homoglyphs": homoglyphs}


def normalize(text: str, names: Sequence[str]) -> str:
    """``text`` through each named normaliser, in order (the reference's order is the user's)."""
    for name in names:
        if name not in NORMALIZERS:
            raise ValueError(f"unknown normaliser {name!r} (known: {', '.join(NORMALIZERS)})")
        text = NORMALIZERS[name](text)
    return text
