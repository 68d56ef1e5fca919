"""SQL identifiers as PostgreSQL reads them (src/backend/parser/scan.l, identifier rules).

Unquoted parts fold to lower case; "quoted" parts are kept as written, with `""` for a quote.
"""

from __future__ import annotations


def split_qualified_name(text: str) -> tuple[str, ...]:
    """Split `a.b`, `"My Schema"."T.1"` into identifier parts, folding unquoted parts to lower case.

    Raises ValueError for empty parts or an unterminated quote.
    """
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == '"':
            j, chars = i + 1, []
            while True:
                if j >= n:
                    raise ValueError(f"unterminated quoted identifier in {text!r}")
                if text[j] == '"':
                    if j + 1 < n and text[j + 1] == '"':
                        chars.append('"')
                        j += 2
                        continue
                    break
                chars.append(text[j])
                j += 1
            part, i = "".join(chars), j + 1
        else:
            j = text.find(".", i)
            j = n if j < 0 else j
            part, i = text[i:j].strip().lower(), j
        if not part:
            raise ValueError(f"empty name part in {text!r}")
        parts.append(part)
        if i >= n:
            return tuple(parts)
        if text[i] != ".":
            raise ValueError(f"unexpected {text[i]!r} after a quoted identifier in {text!r}")
        i += 1
