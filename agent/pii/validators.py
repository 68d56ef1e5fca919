"""Value validators: does one sampled value have the shape (and check digits) of a PII class?

Each validator takes a string and answers ``STRONG``, ``WEAK`` or ``None``, possibly with a label
naming the format (``"US SSN"``, ``"E.164"``, ``"bcrypt"``):

* ``STRONG``: the shape is specific enough that a column full of such values is that class even
  with a meaningless column name (an email, a Luhn-valid number in a card network's IIN range, an
  IBAN whose mod-97 check holds, a JWT whose header decodes, a PEM private key, ...);
* ``WEAK``: consistent with the class but common by chance (nine bare digits in the SSN ranges
  match about a third of random 9-digit ids; any date of the last 120 years "could" be a birth
  date). Weak values only corroborate a column name, they never flag a column on their own.

Standard library only: this module is also imported by PL/Python inside the server.
Sources: Luhn and IIN ranges (ISO/IEC 7812, network docs as summarised on Wikipedia "Payment card
number"), IBAN (ISO 13616, SWIFT IBAN registry lengths), SSA "Social Security Number
Randomization" (invalid areas 000, 666, 900-999), RFC 7519 (JWT), RFC 7468 (PEM labels), the
modular crypt format (passlib docs), E.164.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
import json
import math
import re
from collections import Counter

from .text import fold

STRONG = "strong"
WEAK = "weak"

Verdict = tuple[str, str] | None  # (STRONG|WEAK, label) or None

# -- helpers ---------------------------------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check used by payment cards and a few national ids."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def shannon_entropy(s: str) -> float:
    """Bits per character of `s` (0 for the empty string)."""
    if not s:
        return 0.0
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def _only_digits(s: str, seps: str = " -") -> str | None:
    """`s` without the separator characters if what remains is all digits, else None."""
    out = s.translate({ord(c): None for c in seps})
    return out if out.isdigit() else None


# -- email -----------------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"^(?P<local>[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{2,59}))$")


def email(s: str) -> Verdict:
    """A practical RFC 5321 mailbox: dot-atom local part, a domain with a real-looking TLD."""
    if len(s) > 254 or "@" not in s:
        return None
    m = _EMAIL.match(s)
    if not m or len(m.group("local")) > 64:
        return None
    return (STRONG, "email")


# -- phone -----------------------------------------------------------------------------------------

_PHONE_CHARS = re.compile(r"^\+?[0-9 ().\-/]+$")
_PHONE_EXT = re.compile(r"\s*(?:ext\.?|x|#)\s*\d{1,6}$", re.IGNORECASE)
_DATE_LIKE = re.compile(r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}$|^\d{1,2}[-/.]\d{1,2}[-/.]\d{4}$")
_NANP = re.compile(r"^(?:1[ .\-]?)?\(?[2-9]\d{2}\)?[ .\-]?[2-9]\d{2}[ .\-]?\d{4}$")


def phone(s: str) -> Verdict:
    """E.164 / international numbers (strong), and the common national shapes: NANP, a trunk
    prefix 0 followed by 9-11 digits (FR, DE, UK, NL, IT, BE, ...), Spanish 9-digit and Italian
    mobile numbers. Formatted national numbers are strong; bare digit runs are weak (they could
    be any id)."""
    s = _PHONE_EXT.sub("", s.strip())
    if not _PHONE_CHARS.match(s) or _DATE_LIKE.match(s):
        return None
    if s.count("(") != s.count(")") or s.count("+") > 1:
        return None
    digits = re.sub(r"\D", "", s)
    if len(set(digits)) <= 2:  # 000000000, 1111111111: placeholders
        return None
    formatted = any(c in s for c in " ().-/")
    if s.startswith("+"):
        if 8 <= len(digits) <= 15 and digits[0] != "0":
            return (STRONG, "E.164")
        return None
    if s.startswith("00") and 10 <= len(digits) <= 17 and digits[2] != "0":
        return (STRONG, "international (00)")
    if _NANP.match(s) and len(digits) in (10, 11):
        return (STRONG if formatted else WEAK, "NANP")
    if digits.startswith("0") and 9 <= len(digits) <= 12 and digits[1] != "0":
        return (STRONG if formatted else WEAK, "national, trunk prefix 0")
    if len(digits) == 9 and digits[0] in "6789" and not _SSN_DASHED.match(s):
        return (STRONG if formatted else WEAK, "national (ES)")
    if len(digits) == 10 and digits[0] == "3":
        return (STRONG if formatted else WEAK, "mobile (IT)")
    return None


# -- payment cards ---------------------------------------------------------------------------------

# (network, IIN ranges as (low, high) prefixes of equal length, allowed lengths)
_CARD_NETWORKS: tuple[tuple[str, tuple[tuple[str, str], ...], tuple[int, ...]], ...] = (
    ("visa", (("4", "4"),), (13, 16, 19)),
    ("mastercard", (("51", "55"), ("2221", "2720")), (16,)),
    ("amex", (("34", "34"), ("37", "37")), (15,)),
    ("discover", (("6011", "6011"), ("644", "649"), ("65", "65"), ("622126", "622925")),
     (16, 17, 18, 19)),
    ("jcb", (("3528", "3589"),), (16, 17, 18, 19)),
    ("diners", (("300", "305"), ("36", "36"), ("38", "39")), (14, 15, 16, 17, 18, 19)),
    ("unionpay", (("62", "62"), ("81", "81")), (16, 17, 18, 19)),
    ("maestro", (("5018", "5018"), ("5020", "5020"), ("5038", "5038"), ("5893", "5893"),
                 ("6304", "6304"), ("6759", "6759"), ("6761", "6763")), tuple(range(12, 20))),
    ("mir", (("2200", "2204"),), (16, 17, 18, 19)),
)
_CARD_SHAPE = re.compile(r"^\d{12,19}$|^\d{4}(?:[ \-]\d{4}){2,3}(?:[ \-]\d{1,3})?$"
                         r"|^\d{4}[ \-]\d{6}[ \-]\d{4,5}$")


def card_network(digits: str) -> str | None:
    """The network whose IIN range and length match `digits`, if any (no Luhn check here)."""
    for name, ranges, lengths in _CARD_NETWORKS:
        if len(digits) not in lengths:
            continue
        for low, high in ranges:
            prefix = digits[: len(low)]
            if low <= prefix <= high:
                return name
    return None


def payment_card(s: str) -> Verdict:
    """A PAN: 12-19 digits (plain or grouped by 4, or 4-6-5) passing Luhn. Strong when the IIN
    range and length belong to a known network; weak when only Luhn holds (1 in 10 random
    numbers does)."""
    s = s.strip()
    if not _CARD_SHAPE.match(s):
        return None
    digits = _only_digits(s)
    if digits is None or len(set(digits)) == 1 or not luhn_ok(digits):
        return None
    network = card_network(digits)
    return (STRONG, "payment card") if network else (WEAK, "Luhn-valid number")


_CVV = re.compile(r"^\d{3,4}$")

# -- national and tax identifiers ------------------------------------------------------------------

_SSN_DASHED = re.compile(r"^(\d{3})[- ](\d{2})[- ](\d{4})$")
_SSN_BARE = re.compile(r"^(\d{3})(\d{2})(\d{4})$")
# Numbers the SSA or the press made public and that fill test fixtures (hoopinspect declines the
# same): Woolworth's wallet card, the 1962 "Blue cross" ad, the obvious sequences.
_SSN_FIXTURES = frozenset({"078051120", "219099999", "123456789", "987654321", "111111111",
                           "333333333", "457555462"})


def us_ssn(s: str) -> Verdict:
    """A US Social Security number in the ranges the SSA issues: area not 000, 666 or 900-999,
    group not 00, serial not 0000; well-known published numbers excluded. Dashed or spaced
    AAA-GG-SSSS is strong; nine bare digits are weak."""
    s = s.strip()
    m = _SSN_DASHED.match(s)
    strength = STRONG
    if not m:
        m = _SSN_BARE.match(s)
        strength = WEAK
    if not m:
        return None
    area, group, serial = m.groups()
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return None
    if area + group + serial in _SSN_FIXTURES:
        return None
    return (strength, "US SSN")


_NIR = re.compile(r"^([1-478])\s?(\d{2})\s?(\d{2})\s?(\d{2}|2A|2B)\s?(\d{3})\s?(\d{3})\s?(\d{2})$",
                  re.IGNORECASE)


def fr_nir(s: str) -> Verdict:
    """French social security number (NIR / numero INSEE): sex, year, month, department,
    commune, order, then the key 97 - (number mod 97); Corsica 2A/2B counted as 19/18."""
    m = _NIR.match(s.strip())
    if not m:
        return None
    sex, year, month, dept, commune, order, key = m.groups()
    month_n = int(month)
    if not (1 <= month_n <= 12 or 20 <= month_n <= 42 or 50 <= month_n <= 99):
        return None
    dept_num = {"2A": "19", "2B": "18"}.get(dept.upper(), dept)
    number = int(sex + year + month + dept_num + commune + order)
    if 97 - number % 97 != int(key):
        return None
    return (STRONG, "FR NIR")


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"
_DNI = re.compile(r"^(\d{8})-?([A-Z])$")
_NIE = re.compile(r"^([XYZ])-?(\d{7})-?([A-Z])$")


def es_dni(s: str) -> Verdict:
    """Spanish DNI (8 digits + control letter, mod 23) or NIE (X/Y/Z + 7 digits + letter)."""
    s = s.strip().upper()
    m = _DNI.match(s)
    if m:
        return (STRONG, "ES DNI") if _DNI_LETTERS[int(m.group(1)) % 23] == m.group(2) else None
    m = _NIE.match(s)
    if m:
        number = "XYZ".index(m.group(1)) * 10_000_000 + int(m.group(2))
        return (STRONG, "ES NIE") if _DNI_LETTERS[number % 23] == m.group(3) else None
    return None


def nl_bsn(s: str) -> Verdict:
    """Dutch BSN: 9 digits passing the "11-proef" (weights 9..2 and -1). Weak: 1 in 11 random
    9-digit numbers passes."""
    digits = _only_digits(s.strip(), " .-")
    if digits is None or len(digits) != 9 or digits == "000000000":
        return None
    total = sum(int(d) * w for d, w in zip(digits[:8], range(9, 1, -1))) - int(digits[8])
    return (WEAK, "NL BSN") if total % 11 == 0 else None


_NINO = re.compile(r"^(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
                   r"\s?\d{2}\s?\d{2}\s?\d{2}\s?[A-D]$")


def uk_nino(s: str) -> Verdict:
    """UK National Insurance number: two letters (with HMRC's excluded letters and prefixes),
    six digits, suffix A-D."""
    return (STRONG, "UK NINO") if _NINO.match(s.strip().upper()) else None


_CPF_FORMATTED = re.compile(r"^\d{3}\.\d{3}\.\d{3}-\d{2}$")


def br_cpf(s: str) -> Verdict:
    """Brazilian CPF: 11 digits with two mod-11 check digits; ddd.ddd.ddd-dd is strong."""
    s = s.strip()
    digits = _only_digits(s, ".- ")
    if digits is None or len(digits) != 11 or len(set(digits)) == 1:
        return None
    for n in (9, 10):
        check = sum(int(d) * w for d, w in zip(digits[:n], range(n + 1, 1, -1))) * 10 % 11 % 10
        if check != int(digits[n]):
            return None
    return (STRONG if _CPF_FORMATTED.match(s) else WEAK, "BR CPF")


_CF = re.compile(r"^[A-Z]{6}[0-9LMNPQRSTUV]{2}[ABCDEHLMPRST][0-9LMNPQRSTUV]{2}[A-Z]"
                 r"[0-9LMNPQRSTUV]{3}[A-Z]$")
_CF_ODD = [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25,
           24, 23]


def it_codice_fiscale(s: str) -> Verdict:
    """Italian codice fiscale (16 characters, omocodia substitutions allowed) with its check
    letter."""
    s = s.strip().upper()
    if not _CF.match(s):
        return None
    total = 0
    for i, ch in enumerate(s[:15]):
        v = int(ch) if ch.isdigit() else ord(ch) - 65
        total += _CF_ODD[v] if i % 2 == 0 else v
    return (STRONG, "IT codice fiscale") if chr(65 + total % 26) == s[15] else None


def pt_nif(s: str) -> Verdict:
    """Portuguese NIF: 9 digits, first in 1-3, 5, 6, 8, 9, mod-11 check digit. Weak."""
    digits = _only_digits(s.strip(), " ")
    if digits is None or len(digits) != 9 or digits[0] not in "1235689":
        return None
    check = 11 - sum(int(d) * w for d, w in zip(digits[:8], range(9, 1, -1))) % 11
    return (WEAK, "PT NIF") if (0 if check >= 10 else check) == int(digits[8]) else None


def de_steuer_id(s: str) -> Verdict:
    """German Steuer-Identifikationsnummer: 11 digits, no leading 0, ISO 7064 MOD 11,10. Weak."""
    digits = _only_digits(s.strip(), " ")
    if digits is None or len(digits) != 11 or digits[0] == "0":
        return None
    product = 10
    for d in digits[:10]:
        total = (int(d) + product) % 10 or 10
        product = total * 2 % 11
    check = (11 - product) % 10
    return (WEAK, "DE Steuer-ID") if check == int(digits[10]) else None


# -- IBAN ------------------------------------------------------------------------------------------

# SWIFT IBAN registry lengths (a subset: Europe and the most common elsewhere).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20,
    "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18,
    "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30,
    "KW": 30, "KZ": 20, "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}
_IBAN = re.compile(r"^[A-Z]{2}\d{2}[A-Z0-9]{11,30}$")


def iban_ok(s: str) -> bool:
    """ISO 13616: country code, check digits, BBAN; registry length; mod 97 == 1."""
    compact = s.replace(" ", "").replace("-", "").upper()
    if not _IBAN.match(compact):
        return False
    length = IBAN_LENGTHS.get(compact[:2])
    if length is not None and len(compact) != length:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def iban(s: str) -> Verdict:
    return (STRONG, "IBAN") if iban_ok(s.strip()) else None


# -- network ---------------------------------------------------------------------------------------


def ip_address(s: str) -> Verdict:
    """IPv4 (strict dotted quad) or IPv6, optionally with a prefix length as inet::text shows."""
    s = s.strip()
    if not s or len(s) > 64 or not (":" in s or s.count(".") == 3):
        return None
    try:
        addr = ipaddress.ip_interface(s)
    except ValueError:
        return None
    return (STRONG, "IPv6" if addr.version == 6 else "IPv4")


# -- dates -----------------------------------------------------------------------------------------

_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?"
                       r"(?:Z|[+-]\d{2}(?::?\d{2})?)?)?$")
_DMY = re.compile(r"^(\d{1,2})[./-](\d{1,2})[./-](\d{4})$")


def parse_date(s: str) -> tuple[dt.date, bool] | None:
    """(date, has a non-midnight time) from ISO 8601 / PostgreSQL output, or D/M/Y and M/D/Y
    with four-digit years (day-first when ambiguous)."""
    s = s.strip()
    m = _ISO_DATE.match(s)
    if m:
        y, mo, d, hh, mi, ss = m.groups()
        try:
            day = dt.date(int(y), int(mo), int(d))
        except ValueError:
            return None
        timed = any(int(x) for x in (hh, mi, ss) if x is not None)
        return day, timed
    m = _DMY.match(s)
    if m:
        a, b, y = (int(x) for x in m.groups())
        for d, mo in ((a, b), (b, a)):
            try:
                return dt.date(y, mo, d), False
            except ValueError:
                continue
    return None


def birth_date(s: str, today: dt.date | None = None) -> Verdict:
    """A date (no time of day) at most 120 years before `today` and not after it. Always weak:
    any recent date passes, so only a column name can say the date is a birth."""
    parsed = parse_date(s)
    if parsed is None:
        return None
    day, timed = parsed
    today = today or dt.date.today()
    if timed or day > today or day < today.replace(year=today.year - 120, day=min(today.day, 28)):
        return None
    return (WEAK, "plausible birth date")


# -- secrets ---------------------------------------------------------------------------------------

_B64URL = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")


def _b64url_json(segment: str) -> object:
    padded = segment + "=" * (-len(segment) % 4)
    try:
        return json.loads(base64.urlsafe_b64decode(padded).decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None


def jwt(s: str) -> Verdict:
    """RFC 7519 compact JWS: header.payload.signature, base64url; the header must decode to a
    JSON object with "alg", the payload to a JSON object."""
    s = s.strip()
    if s.lower().startswith("bearer "):
        s = s[7:].strip()
    parts = s.split(".")
    if len(parts) != 3 or len(s) < 30 or not all(_B64URL.match(p) for p in parts[:2]):
        return None
    if parts[2] and not _B64URL.match(parts[2]):
        return None
    header = _b64url_json(parts[0])
    payload = _b64url_json(parts[1])
    if isinstance(header, dict) and "alg" in header and isinstance(payload, dict):
        return (STRONG, "JWT")
    return None


# Provider key formats (gitleaks / GitHub secret scanning document the same shapes).
_KEY_PREFIXES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (label, re.compile(rx)) for label, rx in (
        ("Stripe key", r"^(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}$"),
        ("Stripe webhook secret", r"^whsec_[0-9A-Za-z+/=]{24,}$"),
        ("AWS access key id", r"^(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA|ASCA)"
                              r"[A-Z2-7]{16}$"),
        ("GitHub token", r"^gh[pousr]_[A-Za-z0-9]{36,251}$"),
        ("GitHub fine-grained token", r"^github_pat_[A-Za-z0-9_]{60,255}$"),
        ("GitLab token", r"^glpat-[A-Za-z0-9_-]{20,}$"),
        ("Slack token", r"^xox[abposr]-(?:\d+-)*[A-Za-z0-9-]{10,}$"),
        ("Google API key", r"^AIza[0-9A-Za-z_-]{35}$"),
        ("Anthropic key", r"^sk-ant-[A-Za-z0-9_-]{20,}$"),
        ("OpenAI key", r"^sk-(?:proj-|svcacct-)?[A-Za-z0-9_-]{20,}$"),
        ("SendGrid key", r"^SG\.[A-Za-z0-9_-]{16,32}\.[A-Za-z0-9_-]{30,50}$"),
        ("Twilio key", r"^SK[0-9a-f]{32}$"),
        ("npm token", r"^npm_[A-Za-z0-9]{36}$"),
        ("PyPI token", r"^pypi-[A-Za-z0-9_-]{50,}$"),
        ("Shopify token", r"^shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}$"),
        ("Mailgun key", r"^key-[0-9a-f]{32}$"),
        ("DigitalOcean token", r"^do[opr]_v1_[a-f0-9]{64}$"),
        ("Hugging Face token", r"^hf_[A-Za-z]{34,}$"),
        ("Square token", r"^sq0(?:atp|csp)-[0-9A-Za-z_-]{22,43}$"),
    ))
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9+/=_\-.~]{20,512}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
                   r"[0-9a-fA-F]{12}$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")


def api_key(s: str) -> Verdict:
    """A provider API key or token by its documented prefix (strong), or a random-looking token
    (weak): 20+ characters of a base64/hex alphabet with high entropy and mixed character
    classes. UUIDs and plain hex digests (checksums, commit ids) are not tokens by shape alone."""
    s = s.strip()
    for label, rx in _KEY_PREFIXES:
        if rx.match(s):
            return (STRONG, label)
    if not _TOKEN_CHARS.match(s) or _UUID.match(s):
        return None
    if _HEX.match(s):
        return (WEAK, "hex token") if len(s) >= 32 and shannon_entropy(s) >= 3.0 else None
    classes = sum(bool(re.search(rx, s)) for rx in (r"[a-z]", r"[A-Z]", r"[0-9]"))
    if classes >= 3 and shannon_entropy(s) >= 3.5:
        return (WEAK, "high-entropy token")
    return None


def secret_token(s: str) -> Verdict:
    """JWT or API key (the `secret` class)."""
    return jwt(s) or api_key(s)


_PEM_PRIVATE = re.compile(
    r"-----BEGIN ((?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?)-----"
    r"[\sA-Za-z0-9+/=:,\-]+?-----END \1-----", re.DOTALL)


def private_key(s: str) -> Verdict:
    """A PEM (RFC 7468), OpenSSH or PGP private key block."""
    m = _PEM_PRIVATE.search(s)
    if not m:
        return None
    return (STRONG, m.group(1).replace(" BLOCK", "").replace("PRIVATE KEY", "private key").strip()
            or "private key")


_PASSWORD_HASHES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (label, re.compile(rx)) for label, rx in (
        ("bcrypt", r"^\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}$"),
        ("bcrypt (Django)", r"^bcrypt(?:_sha256)?\$\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}$"),
        ("argon2", r"^(?:argon2)?\$argon2(?:id|i|d)\$(?:v=\d+\$)?m=\d+,t=\d+,p=\d+"
                   r"\$[A-Za-z0-9+/.=-]+\$[A-Za-z0-9+/.=-]+$"),
        ("scrypt", r"^\$scrypt\$ln=\d+,r=\d+,p=\d+\$[A-Za-z0-9+/.=]+\$[A-Za-z0-9+/.=]+$"),
        ("scrypt (Werkzeug)", r"^scrypt:\d+:\d+:\d+\$[A-Za-z0-9./+=]+\$[0-9a-f]{64,}$"),
        ("yescrypt / scrypt crypt", r"^\$(?:y|7|gy)\$[./A-Za-z0-9$]{20,}$"),
        ("pbkdf2 (Django)", r"^pbkdf2_sha(?:1|256|512)\$\d+\$[A-Za-z0-9./+=]+\$[A-Za-z0-9./+=]+$"),
        ("pbkdf2 (passlib)", r"^\$pbkdf2(?:-sha(?:256|512))?\$\d+\$[A-Za-z0-9./+=]+"
                             r"\$[A-Za-z0-9./+=]+$"),
        ("pbkdf2 (Werkzeug)", r"^pbkdf2:sha(?:1|256|512)(?::\d+)?\$[A-Za-z0-9./+=]+"
                              r"\$[0-9a-f]{40,}$"),
        ("md5-crypt", r"^\$(?:1|apr1)\$[./A-Za-z0-9]{1,8}\$[./A-Za-z0-9]{22}$"),
        ("sha256-crypt", r"^\$5\$(?:rounds=\d+\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{43}$"),
        ("sha512-crypt", r"^\$6\$(?:rounds=\d+\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{86}$"),
        ("PostgreSQL SCRAM-SHA-256", r"^SCRAM-SHA-256\$\d+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+"
                                     r":[A-Za-z0-9+/=]+$"),
        ("PostgreSQL md5", r"^md5[0-9a-f]{32}$"),
    ))
_HEX_DIGEST_LENGTHS = {32: "MD5", 40: "SHA-1", 64: "SHA-256", 128: "SHA-512"}


def password_hash(s: str) -> Verdict:
    """A password hash in modular crypt format or a framework's format (bcrypt, argon2, scrypt,
    pbkdf2, md5-crypt, sha256/512-crypt, PostgreSQL md5/SCRAM): strong. A bare hex digest is
    weak (checksums look the same)."""
    s = s.strip()
    for label, rx in _PASSWORD_HASHES:
        if rx.match(s):
            return (STRONG, label)
    if _HEX.match(s) and len(s) in _HEX_DIGEST_LENGTHS:
        return (WEAK, f"hex digest ({_HEX_DIGEST_LENGTHS[len(s)]})")
    return None


# -- people and places (weak corroboration) --------------------------------------------------------

# Common given names across the languages the name dictionary covers. Only corroborates: a
# column of values starting with known given names is probably person names. Lower case,
# without accents.
GIVEN_NAMES = frozenset("""
james john robert michael william david richard joseph thomas charles christopher daniel matthew
anthony mark donald steven paul andrew joshua kenneth kevin brian george timothy ronald edward
jason jeffrey ryan jacob gary nicholas eric jonathan stephen larry justin scott brandon benjamin
samuel frank gregory raymond alexander patrick jack dennis jerry tyler aaron henry adam peter
nathan zachary kyle walter harold jeremy ethan carl keith roger gerald christian terry sean
arthur austin noah lawrence jesse joe bryan billy jordan albert dylan bruce willie gabriel alan
juan logan wayne ralph roy eugene randy vincent russell louis philip bobby johnny bradley oliver
harry liam lucas mason elijah leo owen luke isaac hugo
mary patricia jennifer linda elizabeth barbara susan jessica sarah karen lisa nancy betty
margaret sandra ashley kimberly emily donna michelle carol amanda dorothy melissa deborah
stephanie rebecca sharon laura cynthia kathleen amy angela shirley anna brenda pamela emma
nicole helen samantha katherine christine debra rachel carolyn janet catherine maria heather
diane ruth julie olivia joyce virginia victoria kelly lauren christina joan evelyn judith megan
andrea cheryl hannah jacqueline martha gloria teresa ann sara madison frances kathryn janice
jean abigail alice judy sophia grace denise amber doris marilyn danielle beverly isabella
theresa diana natalie brittany charlotte marie kayla alexis lori ava mia chloe zoe lily ella
jean pierre michel philippe alain nicolas christophe patrick jacques francois laurent eric
stephane sebastien julien olivier thierry frederic david pascal vincent guillaume antoine
mathieu maxime romain thomas alexandre bernard didier yves gilles arnaud benoit cedric jerome
marie nathalie isabelle sylvie catherine sophie christine veronique valerie sandrine celine
stephanie aurelie camille julie emilie manon lea chloe ines juliette louise claire helene
anne monique francoise brigitte martine chantal elodie amandine margaux mathilde pauline
thomas michael andreas stefan christian peter klaus wolfgang jurgen markus frank uwe tobias
sebastian florian alexander matthias daniel martin jan dirk sven torsten jens lukas felix
maximilian jonas leon paul finn moritz niklas tim philipp dieter heinz gunter horst helmut
ursula sabine petra monika susanne andrea claudia birgit stefanie nicole katrin julia anja
heike karin renate gabriele angelika lena laura hannah lea sophie marie anna johanna greta
jose antonio manuel francisco juan david javier jesus carlos miguel rafael pedro alejandro
fernando pablo jorge luis sergio alberto alvaro diego adrian raul enrique ramon vicente
andres joaquin santiago ignacio rodrigo oscar ruben mario
maria carmen josefa isabel dolores pilar teresa ana laura cristina marta lucia paula elena
raquel sara rosa mercedes silvia patricia beatriz alicia irene rocio nuria montserrat
giuseppe giovanni antonio mario luigi francesco angelo vincenzo pietro salvatore carlo franco
domenico bruno paolo michele giorgio aldo sergio luciano marco andrea roberto stefano
alessandro matteo lorenzo davide simone riccardo federico gabriele emanuele fabio massimo
giulia francesca chiara sara martina alessia valentina elisa silvia federica giovanna rosa
angela lucia anna paola laura elena giuseppina sofia aurora alice ginevra beatrice
joao antonio jose francisco manuel carlos paulo pedro luis rui jorge miguel tiago ricardo
andre bruno diogo goncalo rafael duarte rodrigo afonso tomas vitor fernando
maria ana joana sofia beatriz mariana ines catarina rita carla sandra patricia filipa marta
daniela leonor matilde francisca luisa teresa fernanda adriana camila juliana
jan pieter kees henk johan willem hendrik gerrit cornelis bas sander thijs daan bram ruben
lars koen joost jeroen wouter niels stijn tom dennis mark rob erik
anna maria johanna cornelia elisabeth wilhelmina hendrika sanne lisa emma julia fleur anouk
eva lotte sophie femke iris marloes esther ingrid anke linda
mohammed mohamed ahmed ali fatima aisha omar youssef yusuf hassan hussein ibrahim khalid
wei li ming hui jun yan hiroshi yuki kenji akira sakura priya raj amit anil sunita rahul
""".split())

_NAME_WORD = re.compile(r"^[A-Z][A-Za-z'\-]*[a-z]\.?$|^[A-Z][A-Z'\-]+$|^[A-Z]\.$"
                        r"|^(?:de|da|di|del|della|van|von|der|den|le|la|du|dos|das|y|e|ter|ten)$")


def person_name(s: str) -> Verdict:
    """Two to five capitalised words, one of them a common given name: strong ("Jean Dupont",
    "Dupont, Jean", "María José García López"). One capitalised word that is a given name: weak
    (a first-name column)."""
    s = s.strip()
    if not s or len(s) > 100:
        return None
    folded = fold(s).replace(",", " ")
    words = folded.split()
    if not 1 <= len(words) <= 5 or not all(_NAME_WORD.match(w) for w in words):
        return None
    known = any(w.lower().strip(".") in GIVEN_NAMES for w in words)
    if not known:
        return None
    capitalised = [w for w in words if w[0].isupper()]
    if len(capitalised) >= 2:
        return (STRONG, "person name")
    return (WEAK, "given name")


# Street types in the covered languages; a value with a house number and one of these words
# reads as a street address.
_STREET_WORDS = frozenset("""
street st str road rd avenue ave av lane ln drive dr boulevard blvd bd court ct place pl square
way terrace circle highway hwy close crescent
rue avenue boulevard chemin allee impasse place quai route cours passage
strasse str weg platz gasse allee ring damm ufer chaussee
calle avenida plaza paseo camino carrera ronda travesia glorieta
via viale piazza corso vicolo largo strada piazzale
rua avenida travessa praca largo estrada alameda
straat laan plein gracht weg kade singel dijk steeg
""".split())
_STREET_NUMBER = re.compile(r"\b\d{1,5}[a-zA-Z]?\b")
_STREET_SUFFIXES = ("strasse", "str.", "weg", "straat", "laan", "gasse", "platz", "plein",
                    "gracht", "kade", "dijk", "singel", "allee", "damm", "ufer")


def street_address(s: str) -> Verdict:
    """A street address: a house number and a street-type word ("221B Baker Street", "12 rue de
    la Paix", "Hauptstrasse 5", "Calle Mayor 3, 2B", "Via Roma 10")."""
    s = s.strip()
    if not 6 <= len(s) <= 200 or not _STREET_NUMBER.search(s):
        return None
    folded = fold(s).lower()
    words = re.findall(r"[a-z]+\.?", folded)
    if not 2 <= len(words) + 1 <= 16:
        return None
    bare = {w.rstrip(".") for w in words}
    if bare & _STREET_WORDS or any(w.endswith(_STREET_SUFFIXES) for w in words):
        return (STRONG, "street address")
    return None


_POSTAL = re.compile(
    r"^(?:\d{5}(?:-\d{4})?"                       # US, FR, DE, ES, IT, ...
    r"|\d{4}\s?[A-Z]{2}"                          # NL
    r"|\d{4}-\d{3}"                               # PT
    r"|\d{5}-\d{3}"                               # BR
    r"|\d{4}"                                     # BE, CH, AT, DK, ...
    r"|[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}"         # UK
    r"|[A-Z]\d[A-Z]\s?\d[A-Z]\d)$", re.IGNORECASE)  # CA


def postal_code(s: str) -> Verdict:
    return (WEAK, "postal code") if _POSTAL.match(s.strip()) else None


_GENDER_VALUES = frozenset("""
m f male female man woman men women h homme femme masculin feminin mann frau mannlich weiblich
hombre mujer masculino femenino uomo donna maschio femmina maschile femminile feminino
vrouw x other diverse divers non-binary nonbinary nb unknown u
""".split())


def gender(s: str) -> Verdict:
    return (WEAK, "gender value") if fold(s.strip()).lower() in _GENDER_VALUES else None


_POINT = re.compile(r"^\(?\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\)?$")


def geolocation(s: str) -> Verdict:
    """A latitude, a longitude or a (x,y) pair in range."""
    s = s.strip()
    m = _POINT.match(s)
    try:
        if m:
            a, b = float(m.group(1)), float(m.group(2))
            ok = abs(a) <= 180 and abs(b) <= 180
        else:
            ok = abs(float(s)) <= 180 and "." in s
    except ValueError:
        return None
    return (WEAK, "coordinate") if ok else None


def cvv(s: str) -> Verdict:
    return (WEAK, "card security code") if _CVV.match(s.strip()) else None


_USERNAME = re.compile(r"^@?[A-Za-z][A-Za-z0-9._-]{2,31}$")


def username(s: str) -> Verdict:
    """A login-like word (letters first, then letters, digits, dot, dash, underscore). Weak."""
    return (WEAK, "login-like") if _USERNAME.match(s.strip()) else None


_ACCOUNT_NUMBER = re.compile(r"^\d[\d \-]{4,32}\d$")


def bank_account_number(s: str) -> Verdict:
    """6 to 34 digits, possibly grouped: a domestic account number. Weak."""
    s = s.strip()
    if not _ACCOUNT_NUMBER.match(s):
        return None
    digits = _only_digits(s)
    return (WEAK, "account number") if digits and 6 <= len(digits) <= 34 else None
