"""A small PostgreSQL SQL lexer: literal-free normalization and statement fingerprints.

``normalize(text)`` returns the text with comments removed, whitespace collapsed and every
constant (strings in all their forms, dollar-quoted bodies, numbers) replaced by ``$n`` placeholders
numbered after the highest parameter already present, like ``pg_stat_statements``. The result never
contains a literal value, so it can go into the audit ledger, and it is the cache key for statement
classification (the classification of a statement never depends on its literal values).

``cache_key(text)`` is a cheaper stand-in for ``normalize`` where only equality matters (the
per-backend verdict cache of the guard triggers): equal keys mean equal normalized texts.

``fingerprint(normalized)`` is the first 16 hex digits of SHA-256 over the normalized text with
keywords and unquoted identifiers lower-cased and every placeholder written ``?``: the same
statement sent with literals (simple protocol) or bind parameters (extended protocol) gets the
same fingerprint.

Character classes are written negated (every non-ASCII character is an identifier character, as
for PostgreSQL): a class reaching up to U+FFFF takes the re module milliseconds to compile, once
per backend. Token rules follow the PostgreSQL 15 lexer (src/backend/parser/scan.l): nested
``/* */`` comments,
``''`` inside strings, ``E''`` strings with backslash escapes, ``$tag$`` quoting, ``""`` quoted
identifiers, ``U&`` forms. Unterminated constructs run to the end of the text. With
``standard_conforming_strings = off`` (any session may set it) PostgreSQL also reads backslash
escapes in plain ``'...'`` strings: pass ``conforming=False`` then, or a string that PostgreSQL
ends later than this lexer would hide SQL from the guard (``'\\' AND '' = ' OR true --'``).
"""

from __future__ import annotations

import hashlib
import re

MAX_NORMALIZED_CHARS = 4096
"""Longer normalized texts are cut (with a trailing ``…``) before they reach the ledger."""

# identifier characters: a first one (letters, _, any non-ASCII), the next ones (also digits and
# $), those of a dollar-quote tag (no $)
_START = r"[^\x00-\x40\x5b-\x5e\x60\x7b-\x7f]"
_CONT = r"[^\x00-\x23\x25-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"
_TAG = r"[^\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<line_comment>--[^\n]*)
  | (?P<estring>[Ee]'(?:[^'\\]|\\.|'')*(?:'|\Z))
  | (?P<string>(?:[BbXxNn]|[Uu]&)?'(?:[^']|'')*(?:'|\Z))
  | (?P<dollar>\$(?P<tag>START TAG*)?\$)
  | (?P<param>\$[0-9]+)
  | (?P<qident>(?:[Uu]&)?"(?:[^"]|"")*(?:"|\Z))
  | (?P<number>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[Ee][+-]?[0-9]+)?)
  | (?P<ident>START CONT*)
  | (?P<op>::|(?:(?!--|/\*)[-+*/<>=~!@#%^&|`?])+)
  | (?P<punct>.)
    """.replace("START", _START).replace("CONT", _CONT).replace("TAG", _TAG),
    re.VERBOSE | re.DOTALL,
)


# standard_conforming_strings = off: plain and N'' strings take backslash escapes like E''.
_TOKEN_NONCONFORMING = re.compile(_TOKEN.pattern.replace(
    r"(?P<string>(?:[BbXxNn]|[Uu]&)?'(?:[^']|'')*(?:'|\Z))",
    r"(?P<string>[Nn]?'(?:[^'\\]|\\.|'')*(?:'|\Z)|(?:[BbXx]|[Uu]&)'(?:[^']|'')*(?:'|\Z))"),
    re.VERBOSE | re.DOTALL)
assert _TOKEN_NONCONFORMING.pattern != _TOKEN.pattern


def tokens(text: str, conforming: bool = True) -> list[tuple[str, str]]:
    """Split `text` into (kind, value) tokens; kinds are the group names of `_TOKEN` plus
    ``block_comment``; ``dollar`` tokens carry the whole quoted body. `conforming` is the
    session's standard_conforming_strings (see module docstring)."""
    token = _TOKEN if conforming else _TOKEN_NONCONFORMING
    out: list[tuple[str, str]] = []
    pos, end = 0, len(text)
    while pos < end:
        if text.startswith("/*", pos):
            depth, i = 1, pos + 2
            while i < end and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            out.append(("block_comment", text[pos:i]))
            pos = i
            continue
        m = token.match(text, pos)
        assert m is not None  # the last alternative matches any character
        kind = m.lastgroup or "punct"
        if kind == "tag":
            kind = "dollar"
        if kind == "dollar":
            opener = m.group(0)
            close = text.find(opener, m.end())
            stop = end if close < 0 else close + len(opener)
            out.append(("dollar", text[pos:stop]))
            pos = stop
            continue
        out.append((kind, m.group(0)))
        pos = m.end()
    return out


_CONSTANT_KINDS = frozenset({"string", "estring", "dollar", "number"})
_DROPPED_KINDS = frozenset({"ws", "line_comment", "block_comment"})


def normalize(text: str, conforming: bool = True, limit: int | None = MAX_NORMALIZED_CHARS) -> str:
    """`text` without comments or constants, whitespace collapsed (see module docstring), cut to
    `limit` characters (None: never cut; what a cache key needs, or two texts differing only
    after the cut would share an entry)."""
    toks = tokens(text, conforming)
    n = max((int(v[1:]) for k, v in toks if k == "param"), default=0)
    parts: list[str] = []
    for kind, value in toks:
        if kind in _DROPPED_KINDS:
            continue
        if kind in _CONSTANT_KINDS:
            n += 1
            value = f"${n}"
        parts.append(value)
    out = _join(parts)
    if limit is not None and len(out) > limit:
        out = out[: limit - 1] + "…"
    return out


# `tokens` in one C-level pass (re.findall): constants match outside the group, so they come out
# as "" and every other token (never empty) as itself. Identifiers, the most common tokens, are
# tried first (not where a constant starts: E'', B'', X'', N'', U&''), the catch-all last (not
# on letters, quotes or digits); tests/test_guard_classify.py checks that it splits texts
# exactly as `tokens` does. Block comments (nested), dollar quotes (closed by their tag) and
# backslashes (escapes depend on standard_conforming_strings) are left to `tokens`:
# `cache_key` refuses texts with them.
_KEY_TOKEN = re.compile(
    r"""
    ( \s+
    | (?![EeBbXxNn]')(?![Uu]&['"])START CONT*
    | --[^\n]* | \$[0-9]+ | (?:[Uu]&)?"(?:[^"]|"")*(?:"|\Z) | ::
    | (?:(?!--|/\*)[-+*/<>=~!@#%^&|`?])+
    | (?![^\x00-\x26\x28-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]|\.[0-9]). )
  | [Ee]'(?:[^'\\]|\\.|'')*(?:'|\Z)
  | (?:[BbXxNn]|[Uu]&)?'(?:[^']|'')*(?:'|\Z)
  | (?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[Ee][+-]?[0-9]+)?
    """.replace("START", _START).replace("CONT", _CONT),
    re.VERBOSE | re.DOTALL,
)
_NO_KEY = re.compile(r"/\*|\\|\$(?![0-9])")


# The common case in one C-level substitution: in a text with no quoted identifier, comment,
# dollar quote, backslash or prefixed string (E'', B'', X'', N'', U&''), every constant is a
# plain '' string or a number, and a number starts wherever a digit does not continue an
# identifier, a parameter or another number (a lookbehind on the digit just matched). Whether
# the text is such a text is seen in the result: the first construct that could mislead the
# substitution stands outside every string it found (backslashes excepted: checked first).
_SIMPLE_CONSTANT = re.compile(
    r"'(?:[^']|'')*(?:'|\Z)"
    r"|[0-9](?<![^\x00-\x23\x25-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f][0-9])[0-9]*(?:\.[0-9]*)?"
    r"(?:[Ee][+-]?[0-9]+)?"
    r"|\.[0-9]+(?:[Ee][+-]?[0-9]+)?", re.DOTALL)
_NOT_SIMPLE = re.compile(r"""/\*|\$(?![0-9])|"|--|[EeBbXxNn&]\x00""")


def cache_key(text: str) -> str | None:
    """A key with ``cache_key(a) == cache_key(b)`` only if ``normalize(a) == normalize(b)``
    (every token but constants kept verbatim, even whitespace and comments; constants marked by
    a NUL character, which no statement text can hold), in a few microseconds; None for texts
    it leaves to `normalize`: with a block comment, a dollar quote or a backslash.
    tests/test_guard_classify.py checks that both ways of computing it find exactly the
    constants `tokens` finds; the two are told apart by their first characters."""
    if "\\" in text:
        return None
    key = _SIMPLE_CONSTANT.sub("\x00", text)
    if _NOT_SIMPLE.search(key) is None:
        return "\x00s" + key
    if _NO_KEY.search(text):
        return None
    return "\x00t" + "\x00".join(_KEY_TOKEN.findall(text))


def _join(parts: list[str]) -> str:
    """Join tokens with single spaces, except around punctuation where a space adds nothing."""
    out: list[str] = []
    for p in parts:
        if out and not (p in (",", ";", ")", ".", "::") or out[-1] in ("(", ".", "::")
                        or p == "(" and _word(out[-1])):
            out.append(" ")
        out.append(p)
    return "".join(out)


def _word(s: str) -> bool:
    return bool(s) and (s[-1].isalnum() or s[-1] in '_"')


def fingerprint(normalized: str) -> str:
    """16 hex digits identifying the statement shape (see module docstring)."""
    canon: list[str] = []
    for kind, value in tokens(normalized):
        if kind in _DROPPED_KINDS:
            continue
        if kind == "param":
            value = "?"
        elif kind == "ident":
            value = value.lower()
        canon.append(value)
    return hashlib.sha256(" ".join(canon).encode("utf-8")).hexdigest()[:16]


def strip_prepare(text: str) -> str | None:
    """The statement of ``PREPARE name [(types)] AS statement`` (as shown by
    ``pg_prepared_statements.statement`` for SQL-level PREPARE), or None if `text` is not one."""
    toks = [(k, v, i) for k, v, i in _positions(text) if k not in _DROPPED_KINDS]
    if len(toks) < 3 or toks[0][1].upper() != "PREPARE":
        return None
    i, depth = 2, 0
    while i < len(toks):
        kind, value, start = toks[i]
        if value == "(":
            depth += 1
        elif value == ")":
            depth -= 1
        elif depth == 0 and kind == "ident" and value.upper() == "AS":
            return text[start + 2:].strip()
        i += 1
    return None


def _positions(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    for kind, value in tokens(text):
        out.append((kind, value, pos))
        pos += len(value)
    return out
