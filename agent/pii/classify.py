"""One column's decision: name evidence + value evidence -> class, confidence, evidence.

``classify_column(name, data_type, values)`` returns a `Finding` or None. The rules (the
reasoning is in docs/discovery.md):

1. **Types first.** A class is only considered for types that can hold it (an ``email`` is text,
   a ``date_of_birth`` a date, timestamp or text, ...): ``email_sent_at timestamptz`` is no email.
   Booleans, JSON, arrays and similar are not examined.
2. **Name evidence** comes from `names.match_name`. A clear name (``email``, ``geburtsdatum``)
   flags the column by itself; values then raise the confidence (noisy-OR of the two), lower it
   when few of them fit, or reject it when the class has a reliable validator and almost none of
   at least 10 sampled values fit (``mail_server`` holding host names).
3. **Value evidence** alone must be strong and consistent: at least 80% of the sampled values
   pass a *strong* validator (60% for the dictionary-based person-name and street-address
   checks), from at least 3 values. Weak validators (bare 9 digits for an SSN, any plausible
   date for a birth date) only corroborate a name.
4. **Vocabularies are not personal data.** Value-only evidence for a personal class is rejected
   when the sample is enum-like: 10 or more values but no more than max(3, n/10) distinct
   (a ``status`` column repeating the same few fixture emails). Credentials are exempt: one
   API key repeated in every row is still a secret.
5. **Ambiguous names** (``name``, ``addr``, ``pan``, ``cell``, ...) need their class's validator
   to pass on half of the values, or, for ``name``, a table of persons (``customers.name``).
6. When values clearly show another class than the name (``address`` full of IPs, a
   ``bank_account`` full of IBANs), the values win and the evidence says so.

Evidence strings carry counts, formats and dictionary terms, never a sampled value.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from . import validators as v
from .classes import DEFAULT_METHOD
from .names import NameMatch, is_person_table, match_name, name_kind

# -- data types ------------------------------------------------------------------------------------

_TYPE_FAMILIES: dict[str, str] = {}
for _family, _names in {
    "text": "text varchar character_varying char character bpchar citext name string",
    "int": "smallint integer int int2 int4 int8 bigint serial bigserial smallserial",
    "numeric": "numeric decimal real float float4 float8 double_precision money",
    "date": "date",
    "timestamp": "timestamp timestamptz timestamp_with_time_zone timestamp_without_time_zone",
    "time": "time timetz time_with_time_zone time_without_time_zone interval",
    "bool": "boolean bool",
    "inet": "inet cidr",
    "uuid": "uuid",
    "json": "json jsonb xml hstore",
    "bytea": "bytea",
    "geo": "point geometry geography",
    "enum": "enum",
}.items():
    for _n in _names.split():
        _TYPE_FAMILIES[_n] = _family


def type_family(data_type: str | None) -> str:
    """PostgreSQL type name (``format_type`` output or internal name) -> family; "unknown" when
    no type is given (values are then judged as text), "array" for arrays, else "other"."""
    if not data_type:
        return "unknown"
    t = data_type.strip().lower()
    if t.endswith("[]") or t.startswith("_"):
        return "array"
    t = re.sub(r"\(.*?\)", "", t).strip()
    t = t.rsplit(".", 1)[-1].strip('"')
    return _TYPE_FAMILIES.get(re.sub(r"\s+", "_", t), "other")


_T = frozenset({"text", "unknown"})
# Which type families can hold each class.
COMPATIBLE: dict[str, frozenset[str]] = {
    "person_name": _T, "first_name": _T, "last_name": _T, "email": _T, "username": _T,
    "address": _T, "city": _T, "passport": _T, "driver_license": _T, "iban": _T,
    "phone": _T | {"int", "numeric"},
    "payment_card": _T | {"int", "numeric"},
    "national_id": _T | {"int", "numeric"},
    "tax_id": _T | {"int", "numeric"},
    "bank_account": _T | {"int", "numeric"},
    "postal_code": _T | {"int"},
    "date_of_birth": _T | {"date", "timestamp"},
    "ip_address": _T | {"inet"},
    "geolocation": _T | {"numeric", "int", "geo"},
    "gender": _T | {"enum", "int"},
    "secret": _T | {"uuid", "bytea"},
    "private_key": _T | {"bytea"},
    "password": _T | {"bytea"},
    "password_hash": _T | {"bytea"},
}
NEVER_EXAMINED = frozenset({"bool", "json", "array", "time", "other"})

# -- validators per class --------------------------------------------------------------------------

VALIDATORS: dict[str, tuple[Callable[[str], v.Verdict], ...]] = {
    "email": (v.email,),
    "phone": (v.phone,),
    "payment_card": (v.payment_card, v.cvv),
    "national_id": (v.us_ssn, v.fr_nir, v.es_dni, v.uk_nino, v.nl_bsn),
    "tax_id": (v.it_codice_fiscale, v.br_cpf, v.es_dni, v.pt_nif, v.de_steuer_id),
    "iban": (v.iban,),
    "bank_account": (v.bank_account_number,),
    "ip_address": (v.ip_address,),
    "date_of_birth": (v.birth_date,),
    "secret": (v.jwt, v.api_key),
    "private_key": (v.private_key,),
    "password_hash": (v.password_hash,),
    "person_name": (v.person_name,),
    "address": (v.street_address,),
    "postal_code": (v.postal_code,),
    "gender": (v.gender,),
    "geolocation": (v.geolocation,),
    "username": (v.username,),
}
# first/last names share the person-name check.
_SAME_CHECK = {"first_name": "person_name", "last_name": "person_name"}
NAME_FAMILY = frozenset({"person_name", "first_name", "last_name"})

# Confidence of a clear column name alone, per class.
NAME_CONFIDENCE: dict[str, float] = {
    "person_name": 0.8, "first_name": 0.85, "last_name": 0.85, "email": 0.85, "phone": 0.8,
    "username": 0.75, "address": 0.75, "postal_code": 0.75, "city": 0.6, "date_of_birth": 0.85,
    "gender": 0.75, "geolocation": 0.65, "ip_address": 0.8, "national_id": 0.85, "tax_id": 0.85,
    "passport": 0.85, "driver_license": 0.8, "iban": 0.85, "bank_account": 0.75,
    "payment_card": 0.85, "secret": 0.8, "password": 0.85, "password_hash": 0.85,
    "private_key": 0.85,
}
AMBIGUOUS_NAME_CONFIDENCE = 0.45
PERSON_TABLE_CONFIDENCE = 0.6

# Confidence of a column whose sampled values all pass the class's strong validator.
VALUE_CONFIDENCE: dict[str, float] = {
    "private_key": 0.99, "password_hash": 0.98, "secret": 0.95, "iban": 0.97,
    "payment_card": 0.95, "email": 0.95, "national_id": 0.85, "tax_id": 0.85, "phone": 0.85,
    "ip_address": 0.85, "address": 0.7, "person_name": 0.65,
}
# Share of sampled values that must pass a strong validator for value-only evidence.
VALUE_ONLY_MIN: dict[str, float] = {"person_name": 0.6, "address": 0.6}
DEFAULT_VALUE_ONLY_MIN = 0.8
MIN_VALUE_ONLY_SAMPLES = 3
# Preference when several classes fit the values equally well (most specific first).
VALUE_PRIORITY = ("private_key", "password_hash", "secret", "iban", "payment_card", "email",
                  "national_id", "tax_id", "phone", "ip_address", "address", "person_name")
# A clear name is contradicted (column rejected) when its class has one of these reliable
# validators and fewer than 20% of at least 10 sampled values pass it.
CONTRADICTABLE = frozenset({"email", "phone", "payment_card", "iban", "ip_address",
                            "date_of_birth"})
CONTRADICTION_MIN_SAMPLES = 10
# Validators that only recognise part of a class (a list of given names, street words, common
# postcode shapes): when few values pass, that says nothing against the name.
PARTIAL_VALIDATORS = frozenset({"person_name", "address", "postal_code", "username", "gender",
                                "geolocation"})
# Credentials stay sensitive when one value repeats; the enum-like rule does not apply to them.
CREDENTIALS = frozenset({"secret", "private_key", "password", "password_hash"})
MIN_CONFIDENCE = 0.5

_PLACEHOLDERS = frozenset({"", "n/a", "na", "none", "null", "nil", "-", "--", "?", "tbd",
                           "redacted", "[redacted]", "***", "xxx"})
MAX_VALUES = 10_000
MAX_VALUE_LENGTH = 16_384

_PLURAL = {
    "email": "valid emails", "phone": "phone numbers", "payment_card": "payment card numbers",
    "national_id": "valid national ids", "tax_id": "valid tax ids", "iban": "valid IBANs (mod 97)",
    "bank_account": "account-number-like", "ip_address": "IP addresses",
    "date_of_birth": "plausible birth dates", "secret": "secrets",
    "private_key": "private keys", "password_hash": "password hashes",
    "person_name": "person names", "address": "street addresses", "postal_code": "postal codes",
    "gender": "gender values", "geolocation": "coordinates", "username": "login-like",
}


@dataclass(frozen=True)
class Finding:
    """A column judged to hold PII. ``evidence`` explains why, in words and counts: it never
    contains a sampled value. ``method`` is the default masking method for the class."""

    pii_class: str
    confidence: float
    evidence: tuple[str, ...]
    sampled: int = 0

    @property
    def method(self) -> str:
        return DEFAULT_METHOD[self.pii_class]

    def to_dict(self) -> dict[str, object]:
        return {"class": self.pii_class, "confidence": self.confidence, "method": self.method,
                "evidence": list(self.evidence), "sampled": self.sampled}


@dataclass(frozen=True)
class Assessment:
    """The full decision: a finding, or the reason there is none (for ``--all`` reports)."""

    finding: Finding | None
    reason: str | None = None


@dataclass
class _Tally:
    strong: int = 0
    any: int = 0
    labels: Counter[str] = field(default_factory=Counter)


def _clean(values: Iterable[object]) -> list[str]:
    out: list[str] = []
    for value in values:
        if value is None or isinstance(value, (bytes, bytearray, memoryview, bool)):
            continue
        if isinstance(value, (dt.date, dt.datetime)):
            s = value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
        else:
            s = str(value)
        s = s.strip()[:MAX_VALUE_LENGTH]
        if s.lower() in _PLACEHOLDERS:
            continue
        out.append(s)
        if len(out) >= MAX_VALUES:
            break
    return out


def _tally(values: list[str], family: str, today: dt.date | None) -> dict[str, _Tally]:
    tallies: dict[str, _Tally] = {}
    for cls, checks in VALIDATORS.items():
        if family not in COMPATIBLE[cls]:
            continue
        t = _Tally()
        for s in values:
            verdict: v.Verdict = None
            for check in checks:
                verdict = (v.birth_date(s, today) if check is v.birth_date else check(s))
                if verdict:
                    break
            if verdict:
                t.any += 1
                t.labels[verdict[1]] += 1
                if verdict[0] == v.STRONG:
                    t.strong += 1
        if t.any:
            tallies[cls] = t
    return tallies


def _size_factor(n: int) -> float:
    """Fewer sampled values, less confidence: 0.575 at 3 values, 1.0 from 20."""
    return min(1.0, 0.5 + n / 40)


def _noisy_or(*ps: float) -> float:
    out = 1.0
    for p in ps:
        out *= 1.0 - p
    return 1.0 - out


def _round(p: float) -> float:
    return round(min(0.99, max(0.0, p)), 2)


# Validator labels that repeat the class sentence and are left out of the evidence.
_PLAIN_LABELS = frozenset({"email", "plausible birth date", "IBAN", "payment card", "person name",
                           "street address", "postal code", "gender value", "coordinate",
                           "login-like", "account number", "private key"})


def _value_sentence(cls: str, count: int, n: int, tally: _Tally) -> str:
    labels = [label for label, _ in tally.labels.most_common(3) if label not in _PLAIN_LABELS]
    suffix = f" ({', '.join(labels)})" if labels else ""
    return f"{count}/{n} sampled values are {_PLURAL.get(cls, cls)}{suffix}"


def _value_only_class(tallies: dict[str, _Tally], n: int) -> str | None:
    if n < MIN_VALUE_ONLY_SAMPLES:
        return None
    best: tuple[float, int, str] | None = None
    for rank, cls in enumerate(VALUE_PRIORITY):
        t = tallies.get(cls)
        if not t:
            continue
        frac = t.strong / n
        if frac >= VALUE_ONLY_MIN.get(cls, DEFAULT_VALUE_ONLY_MIN):
            key = (frac, -rank, cls)
            if best is None or key > best:
                best = key
    return best[2] if best else None


def _check_class(cls: str) -> str:
    return _SAME_CHECK.get(cls, cls)


def assess_column(name: str, data_type: str | None, values: Iterable[object], *,
                  table: str | None = None, today: dt.date | None = None) -> Assessment:
    """`classify_column` with the reason when the column is not flagged."""
    result = _assess(name, data_type, values, table, today)
    f = result.finding
    if f is not None and f.confidence < MIN_CONFIDENCE:
        return Assessment(None, f"{f.pii_class} at confidence {f.confidence:.2f}, below "
                                f"{MIN_CONFIDENCE}: " + "; ".join(f.evidence))
    return result


def _assess(name: str, data_type: str | None, values: Iterable[object], table: str | None,
            today: dt.date | None) -> Assessment:
    family = type_family(data_type)
    if family in NEVER_EXAMINED:
        return Assessment(None, f"type {data_type} is not examined")
    match: NameMatch | None = match_name(name)
    notes: list[str] = []
    if match and family not in COMPATIBLE[match.pii_class]:
        notes.append(f"{match.describe()} but type {data_type} cannot hold {match.pii_class}")
        match = None
    vals = _clean(values)
    n = len(vals)
    distinct = len(set(vals))
    tallies = _tally(vals, family, today) if n else {}
    value_cls = _value_only_class(tallies, n)
    enum_like = n >= 10 and distinct <= max(3, n // 10)

    def value_finding(cls: str, extra: list[str]) -> Finding:
        t = tallies[cls]
        conf = VALUE_CONFIDENCE[cls] * (t.strong / n) * _size_factor(n)
        return Finding(cls, _round(conf), (_value_sentence(cls, t.strong, n, t), *extra), n)

    def enum_rejection(cls: str) -> str:
        return (f"values look like {cls} ({tallies[cls].strong}/{n}) but only {distinct} "
                f"distinct in {n} sampled: a fixed vocabulary, not per-row personal data")

    if match and not match.ambiguous:
        cls = match.pii_class
        check = _check_class(cls)
        name_conf = NAME_CONFIDENCE[cls]
        t = tallies.get(check)
        any_frac = t.any / n if (t and n) else 0.0
        same_family = value_cls in NAME_FAMILY and cls in NAME_FAMILY
        if value_cls and value_cls != check and not same_family and any_frac < 0.5:
            if enum_like and value_cls not in CREDENTIALS:
                return Assessment(None, enum_rejection(value_cls))
            f = value_finding(value_cls, [f"{match.describe()}, but the values say {value_cls}"])
            return Assessment(f)
        if check in VALIDATORS and n and not (check in PARTIAL_VALIDATORS and any_frac < 0.5):
            count = t.any if t else 0
            if any_frac >= 0.5 and t is not None:
                base = VALUE_CONFIDENCE.get(check, 0.5) if t.strong >= t.any / 2 else 0.5
                value_conf = base * any_frac * _size_factor(n)
                return Assessment(Finding(cls, _round(_noisy_or(name_conf, value_conf)),
                                          (match.describe(),
                                           _value_sentence(check, count, n, t or _Tally())), n))
            if check in CONTRADICTABLE and n >= CONTRADICTION_MIN_SAMPLES and any_frac < 0.2:
                return Assessment(None, f"{match.describe()} but only {count}/{n} sampled values "
                                        f"are {_PLURAL[check]}")
            return Assessment(Finding(cls, _round(name_conf * 0.7), (
                match.describe(), f"only {count}/{n} sampled values are {_PLURAL[check]}"), n))
        evidence = [match.describe()] + ([] if n else ["no values sampled"])
        return Assessment(Finding(cls, _round(name_conf), tuple(evidence), n))

    if match and match.ambiguous:
        cls = match.pii_class
        check = _check_class(cls)
        t = tallies.get(check)
        any_frac = t.any / n if (t and n) else 0.0
        if value_cls and (not enum_like or value_cls in CREDENTIALS):
            f = value_finding(value_cls, [])
            if value_cls == check:
                conf = _noisy_or(AMBIGUOUS_NAME_CONFIDENCE, f.confidence)
                return Assessment(Finding(value_cls, _round(conf),
                                          (f"{match.describe()} (ambiguous)", *f.evidence), n))
            return Assessment(f)
        if t is not None and any_frac >= 0.5 and not enum_like:
            value_conf = 0.5 * any_frac * _size_factor(n)
            conf = _noisy_or(AMBIGUOUS_NAME_CONFIDENCE, value_conf)
            return Assessment(Finding(cls, _round(conf), (
                f"{match.describe()} (ambiguous)", _value_sentence(check, t.any, n, t)), n))
        if cls in NAME_FAMILY and is_person_table(table):
            evidence = [f"{match.describe()} (ambiguous) in table '{table}' of persons"]
            if t is not None and n:
                evidence.append(_value_sentence(check, t.any, n, t))
            return Assessment(Finding(cls, PERSON_TABLE_CONFIDENCE, tuple(evidence), n))
        return Assessment(None, f"{match.describe()}, an ambiguous name, and the sampled values "
                                f"do not confirm {cls}")

    if value_cls:
        if enum_like and value_cls not in CREDENTIALS:
            return Assessment(None, enum_rejection(value_cls))
        extra = []
        kind = name_kind(name)
        if kind:
            extra.append(f"despite a {kind.replace('_', '-')} column name")
        return Assessment(value_finding(value_cls, extra + notes))
    return Assessment(None, "; ".join(notes) or "no name or value evidence")


def classify_column(name: str, data_type: str | None, values: Iterable[object], *,
                    table: str | None = None, today: dt.date | None = None) -> Finding | None:
    """Classify one column from its name, its PostgreSQL type (``format_type`` output such as
    ``character varying(255)``, an internal name such as ``int8``, or None when unknown) and
    sampled values (any objects; None, bytes and placeholders such as 'n/a' are ignored).

    Returns a `Finding` with confidence >= MIN_CONFIDENCE, or None. ``table`` (optional) lets
    an ambiguous ``name`` column count as a person's name in a table of persons; ``today`` fixes
    the reference date of the birth-date check (tests)."""
    finding = assess_column(name, data_type, values, table=table, today=today).finding
    if finding is None or finding.confidence < MIN_CONFIDENCE:
        return None
    return finding
