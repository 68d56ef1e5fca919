"""agent.pii.classify: the column decision rules (names, values, decoys), without a database."""

from __future__ import annotations

import random
import re
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.pii import CLASSES, DEFAULT_METHOD, Finding, assess_column, classify_column
from agent.pii.classify import type_family

R = random.Random(7)


def emails(n: int) -> list[str]:
    return [f"{''.join(R.choices(string.ascii_lowercase, k=8))}{i}@example{i % 5}.com"
            for i in range(n)]


def cards(n: int) -> list[str]:
    out = []
    while len(out) < n:
        body = "4" + "".join(R.choices(string.digits, k=14))
        for d in string.digits:
            total = 0
            for i, ch in enumerate(reversed(body + d)):
                x = int(ch) * (2 if i % 2 else 1)
                total += x - 9 if x > 9 else x
            if total % 10 == 0:
                out.append(body + d)
                break
    return out


def test_clear_name_and_values_give_high_confidence_and_evidence_without_values() -> None:
    values = emails(100)
    f = classify_column("cust_email_addr", "character varying(255)", values)
    assert f is not None and f.pii_class == "email" and f.confidence >= 0.95
    assert f.evidence == ("name matches 'email addr' (en)",
                          "100/100 sampled values are valid emails")
    assert f.method == "partial" and f.sampled == 100
    assert not any(v in e for v in values for e in f.evidence)


def test_clear_name_alone_is_enough_without_values() -> None:
    f = classify_column("geburtsdatum", "date", [])
    assert f is not None and f.pii_class == "date_of_birth"
    assert "no values sampled" in f.evidence


def test_value_evidence_alone_must_be_strong_and_consistent() -> None:
    f = classify_column("contact", "text", emails(100))
    assert f is not None and f.pii_class == "email"
    mixed = emails(70) + ["n/a"] * 5 + ["call back later"] * 30
    assert classify_column("contact", "text", mixed) is None  # 70% < 80%
    # weak evidence (bare 9 digits in SSN ranges, any date) never flags on its own
    assert classify_column("ref", "text", [f"{R.randint(100, 665)}{R.randint(10, 99)}"
                                           f"{R.randint(1000, 9999)}" for _ in range(100)]) is None
    assert classify_column("col_h", "text", ["1980-02-03", "1975-05-06"] * 50) is None


def test_decoy_status_column_of_fixture_emails_is_a_vocabulary() -> None:
    fixture = ["test@example.com", "qa@example.org", "noreply@example.net"] * 34
    a = assess_column("status", "text", fixture)
    assert a.finding is None
    assert "3 distinct in 102 sampled" in a.reason and "fixed vocabulary" in a.reason
    # the same rule whatever the column is called: it is about the values, not the name
    assert classify_column("owner", "text", fixture) is None
    # ... but a status column holding a different email per row is personal data
    f = classify_column("status", "text", emails(100))
    assert f is not None and f.pii_class == "email"
    assert "despite a categorical column name" in f.evidence


def test_decoy_description_with_card_like_numbers_failing_luhn() -> None:
    bad = []
    for card in cards(100):
        last = str((int(card[-1]) + 1) % 10)
        bad.append(" ".join((card[:-1] + last)[i:i + 4] for i in range(0, 16, 4)))
    assert classify_column("description", "text", bad) is None
    good = [" ".join(c[i:i + 4] for i in range(0, 16, 4)) for c in cards(100)]
    f = classify_column("description", "text", good)
    assert f is not None and f.pii_class == "payment_card"


def test_credentials_are_exempt_from_the_vocabulary_rule() -> None:
    key = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
    f = classify_column("config_value", "text", [key] * 50)
    assert f is not None and f.pii_class == "secret"


def test_types_filter_names() -> None:
    assert classify_column("email_sent_at", "timestamp with time zone", ["2024-01-01"]) is None
    assert classify_column("email", "boolean", [True]) is None
    assert classify_column("token_count", "integer", [1, 2, 3]) is None
    assert classify_column("last_login", "timestamptz", []) is None
    assert classify_column("phone", "bigint", [33612345678] * 3) is not None
    assert classify_column("profile", "jsonb", ['{"email": "a@b.co"}']) is None
    assert assess_column("tags", "text[]", []).reason == "type text[] is not examined"


def test_clear_name_contradicted_by_many_values_is_rejected() -> None:
    hosts = [f"smtp{i}.example.com" for i in range(50)]
    a = assess_column("mail_server", "text", hosts)
    assert a.finding is None and "0/50 sampled values are valid emails" in a.reason
    # a partial validator (given names) never contradicts: surnames are not in its list
    f = classify_column("nachname", "text", ["Müller", "Schröder", "Weber"] * 20)
    assert f is not None and f.pii_class == "last_name"


def test_values_win_over_a_misleading_name() -> None:
    ips = [f"10.{R.randint(0, 255)}.{R.randint(0, 255)}.{R.randint(1, 254)}" for _ in range(60)]
    f = classify_column("address", "text", ips)
    assert f is not None and f.pii_class == "ip_address"
    assert "name matches 'address' (en), but the values say ip_address" in f.evidence


def test_ambiguous_names() -> None:
    products = ["Ergonomic Desk Lamp", "Wireless Mouse", "Yoga Mat"] * 20
    assert classify_column("name", "text", products, table="products") is None
    surnames = ["DUBOIS", "LEFEVRE", "GARNIER", "FAURE", "ROUSSEAU"] * 20
    assert classify_column("nom", "text", surnames) is None
    f = classify_column("nom", "text", surnames, table="clients")
    assert f is not None and f.pii_class == "person_name" and "of persons" in f.evidence[0]
    full = ["Jean Dupont", "Maria Rossi", "Peter Jansen", "Lucia Garcia", "Anna Schmidt"] * 4
    full += [f"{n} {R.choice(['Ng', 'Ka', 'Oe'])}{i}" for i, n in enumerate(["Tom"] * 5)]
    f = classify_column("name", "text", full * 2)
    assert f is not None and f.pii_class == "person_name"
    # "product_name" is a thing's name: no name evidence, only what the values say
    assert classify_column("product_name", "text", products) is None
    f = classify_column("product_name", "text", full)
    assert f is not None and not any("name matches" in e for e in f.evidence)


def test_ambiguous_phone_word_needs_phone_values() -> None:
    assert classify_column("portable", "text", ["oui", "non"] * 20) is None
    f = classify_column("portable", "text", [f"06 {R.randint(10, 99)} {R.randint(10, 99)} "
                                             f"{R.randint(10, 99)} {R.randint(10, 99)}"
                                             for _ in range(40)])
    assert f is not None and f.pii_class == "phone"


def test_low_confidence_is_a_rejection_with_reason() -> None:
    a = assess_column("phone", "text", ["see notes"] * 6 + ["+33612345678"] * 2)
    # 2/8 phones (< 50%), fewer than 10 values: flagged with reduced confidence 0.56
    assert a.finding is not None and a.finding.confidence < 0.6
    assert "only 2/8 sampled values are phone numbers" in a.finding.evidence
    b = assess_column("ville", "text", ["Paris"] * 3)
    assert b.finding is not None and b.finding.confidence == 0.6


def test_every_class_has_a_default_method() -> None:
    assert set(DEFAULT_METHOD) == set(CLASSES)
    assert set(DEFAULT_METHOD.values()) <= {"partial", "redact", "null"}
    assert DEFAULT_METHOD["email"] == "partial" and DEFAULT_METHOD["payment_card"] == "redact"
    assert DEFAULT_METHOD["private_key"] == "null" and DEFAULT_METHOD["password_hash"] == "null"


def test_type_family() -> None:
    assert type_family("character varying(255)") == "text"
    assert type_family("timestamp(3) with time zone") == "timestamp"
    assert type_family("int8") == "int"
    assert type_family("pg_catalog.inet") == "inet"
    assert type_family("integer[]") == "array"
    assert type_family(None) == "unknown"
    assert type_family("tsvector") == "other"


def test_plpython_style_values_are_accepted() -> None:
    """PL/Python hands dates as str and numerics as Decimal; bytes and None are ignored."""
    import datetime as dt
    import decimal

    f = classify_column("dob", "date", [dt.date(1980, 1, 2), None, b"\x00", "1975-03-04"])
    assert f is not None and f.sampled == 2
    assert classify_column("lat", "numeric", [decimal.Decimal("48.8566")]) is not None


_MARKED = st.one_of(
    st.text(alphabet=string.ascii_letters + " .-@", max_size=20).map(lambda t: f"Qzx{t}"),
    st.integers(0, 10**6).map(lambda i: f"qzx{i}@example.com"),
    st.integers(0, 10**6).map(lambda i: f"Qzx Qzx{i}"),
)
_DIGITS = st.text(alphabet=string.digits, min_size=8, max_size=19)


@given(st.lists(st.one_of(_MARKED, _DIGITS, st.sampled_from(cards(20))), min_size=1,
                max_size=40),
       st.sampled_from(["email", "contact", "phone", "notes", "ssn", "name", "token", "x"]))
@settings(max_examples=300, deadline=None)
def test_evidence_never_contains_a_sampled_value(values: list[str], column: str) -> None:
    """Marked values (text with "qzx", long digit runs, card numbers) never reach the evidence
    or the rejection reason: those carry counts (at most 5 digits) and fixed words only."""
    a = assess_column(column, "text", values, table="customers")
    text = " ".join(a.finding.evidence) if a.finding else (a.reason or "")
    assert "qzx" not in text.lower()
    assert not re.search(r"\d{6,}", text), text


@given(st.lists(st.sampled_from(emails(3)), min_size=10, max_size=60)
       | st.lists(st.sampled_from(cards(3)), min_size=10, max_size=60))
@settings(max_examples=100, deadline=None)
def test_any_sample_of_three_distinct_values_is_not_flagged_without_a_name(
        values: list[str]) -> None:
    assert classify_column("value", "text", values) is None


def test_finding_dict() -> None:
    f = Finding("email", 0.9, ("a",), 3)
    assert f.to_dict() == {"class": "email", "confidence": 0.9, "method": "partial",
                           "evidence": ["a"], "sampled": 3}
