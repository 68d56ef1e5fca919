"""PII-safe statement text: constants replaced by $n (as pg_stat_statements shows queries) and a
fingerprint that groups statements differing only in constants. Nothing leaves the host before
going through here (docs/events.md: `statement`, `fingerprint`).

    r = Redactor()
    r.redact("SELECT * FROM t WHERE email = 'a@b.c' AND id IN (1, 2)")
    # -> ("SELECT * FROM t WHERE email = $1 AND id IN ($2, $3)", "6c1a2b...")

How (all with PostgreSQL's own scanner and parser, libpg_query through pglast):

1. `pglast.parser.normalize` replaces the constants the parser knows about (what
   pg_stat_statements does, plus passwords of CREATE/ALTER ROLE).
2. It leaves constants in some utility statements (COPY ... FROM 'file', COMMENT ... IS '...',
   CREATE VIEW ... 'literal', ALTER SYSTEM, OPTIONS (...)) and it keeps comments. So its output
   is always re-scanned, and rebuilt from the scanner's tokens alone: every remaining constant
   token (ICONST, FCONST, SCONST, BCONST, XCONST, USCONST) becomes $n, and comments are
   dropped. Whatever the parser does, only keywords, identifiers, operators and $n survive.
3. Text that does not parse is redacted by step 2 alone. Text that does not even scan (an
   unterminated quote or comment) keeps the redacted part before the scanner error and replaces
   the rest by `/* unparseable: N bytes */`; if that prefix fails too, the whole statement is
   that placeholder. This fails closed: the text is never passed through.
4. The fingerprint is libpg_query's fingerprint of the *redacted* text (16 hex digits): the raw
   text would do for DML, but for some utility statements libpg_query fingerprints constants
   (ALTER ROLE ... PASSWORD 'x' fingerprints differ per password), and a hash of a low-entropy
   secret can be brute-forced. Redacted text that does not parse gets a BLAKE2b hash of the
   redacted text instead, so it never depends on a constant either.

Identifiers are kept (pg_stat_statements keeps them too): a table named after a person stays.
"""

from __future__ import annotations

import hashlib
import re
from typing import TypeVar

from pglast import parser as _pg

CONSTANT_TOKENS = frozenset({"ICONST", "FCONST", "SCONST", "BCONST", "XCONST", "USCONST"})
COMMENT_TOKENS = frozenset({"C_COMMENT", "SQL_COMMENT"})
# Tokens that are kept verbatim: keywords (any kind but NO_KEYWORD), identifiers, operators,
# parameters, punctuation. Any other token (a kind a future scanner adds) is treated as a
# constant: fail closed.
KEPT_TOKENS = frozenset({"IDENT", "UIDENT", "Op", "PARAM", "TYPECAST", "DOT_DOT",
                         "COLON_EQUALS", "EQUALS_GREATER", "LESS_EQUALS", "GREATER_EQUALS",
                         "NOT_EQUALS"})
_PARAM_RE = re.compile(r"\$(\d+)")
# What a constant or comment left in *parsed* text must contain: a quote (string, bit, hex,
# Unicode-escape constants), a comment opener, a dollar quote, or a digit starting a token
# (digits after a letter, `_`, `$` or a non-ASCII character, which PostgreSQL's scanner takes as
# an identifier character, belong to identifiers and $n parameters). Checked on a translation
# of the text to character classes ("0" digit, "a" word, "$", " " anything else ASCII): a few
# C-level `in` tests, several times cheaper than a regular expression on the hot path.
_CLASSES = str.maketrans({**{chr(c): " " for c in range(128)},
                          **{d: "0" for d in "0123456789"}, "$": "$",
                          **{ch: "a" for ch in "_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"}})


# numeric_shape works on the UTF-8 bytes: bytes.translate is one table lookup per byte, and
# every byte of a non-ASCII character (>= 0x80) is an identifier character there, as in scan.l.
_BYTE_CLASSES = bytes(
    ord("0") if chr(b).isdigit() and b < 128 else
    ord("a") if b >= 128 or b == ord("_") or chr(b).isalpha() else
    ord("$") if b == ord("$") else ord(" ")
    for b in range(256))
_ZERO_DIGITS = bytes.maketrans(b"123456789", b"000000000")


def numeric_shape(sql: str) -> bytes | None:
    """A cache key shared by statements that differ only in the values of numeric constants
    (`... WHERE aid = 12` and `... WHERE aid = 977`), or None when that cannot be told safely.

    Safe only when every digit starts or continues a numeric token: no quote, comment or dollar
    sign (strings and parameters), and no digit right after an identifier character (t1, tablé1,
    and 1e5 / 0x1F forms). Then changing digits changes only constants' values, which
    normalization replaces by position, so the normalized text and fingerprint are the same.
    The key is bytes, so it never equals a statement's own text (str) in a shared cache."""
    if "'" in sql or "--" in sql or "/*" in sql or "$" in sql:
        return None
    try:
        raw = sql.encode()
    except UnicodeEncodeError:  # lone surrogates: no shortcut
        return None
    # As str: `in` on bytes first tries the operand as an int (a raised and cleared TypeError).
    c = raw.translate(_BYTE_CLASSES).decode("ascii")
    if "0" not in c or "a0" in c:
        return None
    return raw.translate(_ZERO_DIGITS)


def may_hold_constant(text: str) -> bool:
    """True unless `text` (parsed, normalized) certainly has no constant and no comment left."""
    if "'" in text or "--" in text or "/*" in text:
        return True
    c = text.translate(_CLASSES)
    return (c.startswith("0") or " 0" in c or "$ " in c or "$a" in c or "$$" in c
            or c.endswith("$"))


UNPARSEABLE = "/* unparseable: {} bytes */"

K = TypeVar("K")
V = TypeVar("V")


class _BoundedCache(dict[K, V]):
    """A dict of at most `maxsize` entries (via `put`) that starts afresh when full.

    Cheaper per call than an LRU (no reordering on every hit) on the capture hot path, where
    most misses are one-off texts (literals vary) and the hits are a small hot set that refills
    at once after a reset. Lookups are plain `dict.get` (no Python-level call)."""

    __slots__ = ("_max",)

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self._max = maxsize

    def put(self, key: K, value: V) -> None:
        if self._max <= 0:
            return
        if len(self) >= self._max:
            self.clear()
        self[key] = value


class Redactor:
    """Statement text redaction and fingerprints; holds bounded caches (one per instance,
    no module-level state). Texts longer than `max_cached_chars` are not cached."""

    def __init__(self, cache_size: int = 4096, max_cached_chars: int = 16384) -> None:
        self._redacted: _BoundedCache[str | bytes, tuple[str, str]] = _BoundedCache(cache_size)
        self._fingerprints: _BoundedCache[str, str] = _BoundedCache(cache_size)
        self._max_cached = max_cached_chars

    def redact(self, sql: str) -> tuple[str, str]:
        """(normalized text, fingerprint) of one statement."""
        hit = self._redacted.get(sql)
        if hit is not None:
            return hit
        key = numeric_shape(sql)
        if key is not None:  # same statement as one already seen, but for its numbers
            hit = self._redacted.get(key)
            if hit is not None:
                return hit
        normalized = self._normalize(sql)
        fp = self._fingerprints.get(normalized)
        if fp is None:
            fp = _fingerprint(normalized)
            if len(normalized) <= self._max_cached:
                self._fingerprints.put(normalized, fp)
        if len(sql) <= self._max_cached:
            self._redacted.put(key if key is not None else sql, (normalized, fp))
        return normalized, fp

    def normalize(self, sql: str) -> str:
        """`sql` with every constant replaced by $n and comments removed."""
        return self.redact(sql)[0]

    def fingerprint(self, sql: str) -> str:
        """16 hex digits, equal for statements that differ only in constants."""
        return self.redact(sql)[1]

    def split(self, sql: str) -> list[str]:
        """The statements of a multi-statement string (parser first, scanner if it does not
        parse, the whole stripped text if it does not scan), without their ';'."""
        try:
            return list(_pg.split(sql))
        except Exception:  # pglast.parser.ParseError
            pass
        try:
            tokens = _pg.scan(sql)
        except Exception:
            stripped = sql.strip()
            return [stripped] if stripped else []
        # pglast's own scanner split drops pieces it cannot classify: split on ';' tokens
        # outside parentheses ourselves.
        parts: list[str] = []
        start = depth = 0
        for tok in tokens:
            if tok.name == "ASCII_40":
                depth += 1
            elif tok.name == "ASCII_41":
                depth = max(0, depth - 1)
            elif tok.name == "ASCII_59" and depth == 0:
                parts.append(sql[start:tok.start])
                start = tok.end + 1
        parts.append(sql[start:])
        return [p.strip() for p in parts if p.strip()]

    @staticmethod
    def _normalize(sql: str) -> str:
        try:
            text = _pg.normalize(sql)
        except Exception:  # does not parse: the scanner pass alone redacts it
            return scrub(sql)
        # The re-scan (step 2) rebuilds the text from tokens; for parsed text with no quote,
        # comment, dollar quote or numeric token left it would return the text unchanged, so
        # it is skipped: it costs several times the normalizer itself on the capture hot path.
        return scrub(text) if may_hold_constant(text) else text


def scrub(text: str) -> str:
    """Rebuild `text` from its scanner tokens: constants become $n (numbered after the highest
    $n already there), comments disappear, whitespace between tokens is kept (or becomes one
    space where a comment was). Fails closed on text that does not scan."""
    try:
        tokens = _pg.scan(text)
    except _pg.ParseError as e:
        where = e.args[1] if len(e.args) > 1 and isinstance(e.args[1], int) else -1
        if 0 <= where <= len(text):
            try:
                prefix = _rebuild(text[:where], _pg.scan(text[:where]))
            except Exception:
                return UNPARSEABLE.format(len(text.encode("utf-8", "replace")))
            tail = UNPARSEABLE.format(len(text[where:].encode("utf-8", "replace")))
            return f"{prefix} {tail}" if prefix else tail
        return UNPARSEABLE.format(len(text.encode("utf-8", "replace")))
    except Exception:
        return UNPARSEABLE.format(len(text.encode("utf-8", "replace")))
    return _rebuild(text, tokens)


def _rebuild(text: str, tokens: list[_pg.Token]) -> str:
    n = max((int(x) for x in _PARAM_RE.findall(text)), default=0)
    out: list[str] = []
    gap_start = -1  # where the whitespace/comments before the next kept token start
    for tok in tokens:
        name = tok.name
        if name in COMMENT_TOKENS:
            continue
        if gap_start >= 0:
            gap = text[gap_start:tok.start]
            if gap:
                out.append(gap if gap.isspace() else " ")
        if tok.kind != "NO_KEYWORD" or name in KEPT_TOKENS or name.startswith("ASCII_"):
            out.append(text[tok.start:tok.end + 1])
        else:
            n += 1
            out.append(f"${n}")
        gap_start = tok.end + 1
    return "".join(out)


def _fingerprint(redacted: str) -> str:
    try:
        fp = _pg.fingerprint(redacted)
        if isinstance(fp, str) and len(fp) == 16:
            return fp
    except Exception:  # redacted text that does not parse ("COPY t FROM $1")
        pass
    return hashlib.blake2b(redacted.encode("utf-8", "replace"), digest_size=8).hexdigest()
