"""Text folding shared by the name dictionary and the validators (standard library only)."""

from __future__ import annotations

import unicodedata

# Letters NFKD does not decompose into an ASCII base letter.
_SPECIAL = str.maketrans({"ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE",
                          "ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D",
                          "ð": "d", "þ": "th", "ı": "i"})


def fold(s: str) -> str:
    """`s` in ASCII: accents dropped (é -> e), ß -> ss, æ -> ae; other non-ASCII removed."""
    s = unicodedata.normalize("NFKD", s.translate(_SPECIAL))
    return s.encode("ascii", "ignore").decode("ascii")
