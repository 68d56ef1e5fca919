"""agent.pii validators and name tokenization: true and false examples, check-digit properties."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.pii import validators as v
from agent.pii.names import match_name, name_kind, tokenize

REPO = Path(__file__).resolve().parent.parent
TODAY = dt.date(2026, 11, 21)


def strong(verdict: v.Verdict) -> bool:
    return verdict is not None and verdict[0] == v.STRONG


def weak(verdict: v.Verdict) -> bool:
    return verdict is not None and verdict[0] == v.WEAK


# -- helpers to build valid values -----------------------------------------------------------------


def luhn_complete(prefix: str, length: int, body: str = "") -> str:
    """`prefix` + `body` padded with zeros to length-1, then the Luhn check digit."""
    partial = (prefix + body)[: length - 1].ljust(length - 1, "0")
    for d in "0123456789":
        if v.luhn_ok(partial + d):
            return partial + d
    raise AssertionError("unreachable")


def make_iban(country: str, bban: str) -> str:
    digits = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


def make_jwt(payload: dict[str, object], key: bytes = b"k") -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(payload).encode())
    sig = b64(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


# -- email -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["jane.doe@example.com", "j+tag@sub.example.co.uk",
                                   "o'brien@example.ie", "x@xn--bcher-kva.example"])
def test_email_valid(value: str) -> None:
    assert strong(v.email(value))


@pytest.mark.parametrize("value", ["jane.doe@", "@example.com", "jane..doe@example.com",
                                   "jane doe@example.com", "jane@example", "jane@-bad.com",
                                   "not an email", "a@b.c", "x" * 65 + "@example.com"])
def test_email_invalid(value: str) -> None:
    assert v.email(value) is None


# -- phone -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["+14155552671", "+1 (415) 555-2671", "+33 6 12 34 56 78",
                                   "+49 30 1234567", "0033 6 12 34 56 78", "(415) 555-2671",
                                   "415-555-2671", "06 12 34 56 78", "030 1234567",
                                   "612 345 678", "333 1234567", "+44 20 7946 0958 ext 12"])
def test_phone_strong(value: str) -> None:
    assert strong(v.phone(value)), value


@pytest.mark.parametrize("value", ["0612345678", "4155552671", "612345678"])
def test_phone_bare_digits_are_weak(value: str) -> None:
    assert weak(v.phone(value))


@pytest.mark.parametrize("value", ["2024-03-15", "15/03/2024", "123-45-6789", "+0123456789",
                                   "12345", "4111 1111 1111 1111", "0000000000", "phone",
                                   "+1 415 555 2671 99999", "1.5", "(415 555-2671"])
def test_phone_invalid(value: str) -> None:
    assert v.phone(value) is None, value


# -- payment cards ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["4111 1111 1111 1111", "4111-1111-1111-1111",
                                   "5500005555555559", "2223000048400011", "378282246310005",
                                   "3782 822463 10005", "6011111111111117", "3530111333300000",
                                   "30569309025904"])
def test_card_valid(value: str) -> None:
    assert strong(v.payment_card(value))


@pytest.mark.parametrize("value", ["4111 1111 1111 1112", "5500005555555550", "378282246310006",
                                   "1234 5678 9012 3456", "0000000000000000",
                                   "4111 11111 111 1111", "411111111111", "card 4111111111111111"])
def test_card_invalid(value: str) -> None:
    assert not strong(v.payment_card(value)), value


def test_card_luhn_valid_outside_known_iin_ranges_is_weak() -> None:
    number = luhn_complete("99", 16, "12345678")
    assert weak(v.payment_card(number))


@given(network=st.sampled_from([("4", 16), ("51", 16), ("2221", 16), ("37", 15), ("6011", 16),
                                ("3530", 16)]),
       body=st.text(alphabet="0123456789", min_size=14, max_size=14),
       position=st.integers(min_value=0, max_value=14), delta=st.integers(1, 9))
@settings(max_examples=300, deadline=None)
def test_card_one_digit_changed_fails_luhn(network: tuple[str, int], body: str, position: int,
                                           delta: int) -> None:
    prefix, length = network
    number = luhn_complete(prefix, length, body)
    assert strong(v.payment_card(number))
    position = position % length
    changed = number[:position] + str((int(number[position]) + delta) % 10) + number[position + 1:]
    assert not v.luhn_ok(changed)
    assert v.payment_card(changed) is None


@given(st.text(alphabet="0123456789", min_size=13, max_size=18))
@settings(max_examples=300, deadline=None)
def test_card_adjacent_transposition_detected(digits: str) -> None:
    """Luhn detects swapping two adjacent different digits (except 0<->9)."""
    number = luhn_complete("4", 16, digits)
    for i in range(len(number) - 1):
        a, b = number[i], number[i + 1]
        if a != b and {a, b} != {"0", "9"}:
            swapped = number[:i] + b + a + number[i + 2:]
            assert not v.luhn_ok(swapped)


# -- national and tax identifiers ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["536-22-1234", "772 81 4401", "001-01-0001", "899-99-9999"])
def test_ssn_valid(value: str) -> None:
    assert strong(v.us_ssn(value))


@pytest.mark.parametrize("value", ["000-12-3456", "666-12-3456", "900-12-3456", "999-99-9999",
                                   "123-00-4567", "123-45-0000", "078-05-1120", "123-45-6789",
                                   "219-09-9999", "12-345-6789", "1234-56-789"])
def test_ssn_invalid_ranges_and_fixtures(value: str) -> None:
    assert v.us_ssn(value) is None, value


def test_ssn_bare_digits_are_weak() -> None:
    assert weak(v.us_ssn("536221234"))


def test_fr_nir() -> None:
    assert strong(v.fr_nir("1 85 05 78 006 084 91"))
    assert strong(v.fr_nir("185057800608491"))
    assert strong(v.fr_nir("2 90 12 2A 004 117 73"))  # Corsica
    assert v.fr_nir("1 85 05 78 006 084 92") is None  # bad key
    assert v.fr_nir("5 85 05 78 006 084 91") is None  # bad sex digit


def test_es_dni_nie() -> None:
    assert strong(v.es_dni("12345678Z"))
    assert strong(v.es_dni("X1234567L"))
    assert v.es_dni("12345678A") is None
    assert v.es_dni("X1234567A") is None


def test_nl_bsn_is_weak_and_checked() -> None:
    assert weak(v.nl_bsn("111222333"))
    assert v.nl_bsn("111222334") is None


def test_br_cpf() -> None:
    assert strong(v.br_cpf("529.982.247-25"))
    assert weak(v.br_cpf("52998224725"))
    assert v.br_cpf("529.982.247-26") is None
    assert v.br_cpf("111.111.111-11") is None


def test_it_codice_fiscale() -> None:
    assert strong(v.it_codice_fiscale("RSSMRA85T10A562S"))
    assert v.it_codice_fiscale("RSSMRA85T10A562T") is None
    assert v.it_codice_fiscale("RSSMRA85T10A562") is None


def test_uk_nino() -> None:
    assert strong(v.uk_nino("AB 12 34 56 C"))
    assert v.uk_nino("QQ 12 34 56 C") is None  # Q is not a valid first letter
    assert v.uk_nino("GB 12 34 56 C") is None


def test_pt_nif_and_de_steuer_id_are_weak() -> None:
    assert weak(v.pt_nif("123456789"))
    assert v.pt_nif("123456780") is None
    assert weak(v.de_steuer_id("86095742719"))
    assert v.de_steuer_id("86095742710") is None


# -- IBAN ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432",
                                   "FR1420041010050500013M02606", "NL91ABNA0417164300",
                                   "ES9121000418450200051332", "IT60X0542811101000000123456"])
def test_iban_valid(value: str) -> None:
    assert strong(v.iban(value))


@pytest.mark.parametrize("value", ["DE88 3704 0044 0532 0130 00",  # bad check digits
                                   "DE89 3704 0044 0532 0130 0",  # wrong length for DE
                                   "GB82WEST12345698765433", "XX00", "not an iban"])
def test_iban_invalid(value: str) -> None:
    assert v.iban(value) is None


@given(st.text(alphabet="0123456789", min_size=18, max_size=18), st.integers(0, 17),
       st.integers(1, 9))
@settings(max_examples=300, deadline=None)
def test_iban_one_digit_changed_fails_mod97(bban: str, position: int, delta: int) -> None:
    good = make_iban("DE", bban)
    assert v.iban_ok(good)
    i = 4 + position
    bad = good[:i] + str((int(good[i]) + delta) % 10) + good[i + 1:]
    assert not v.iban_ok(bad)


# -- network ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["192.168.1.20", "8.8.8.8", "10.0.0.0/8", "2001:db8::1",
                                   "fe80::1ff:fe23:4567:890a", "::1"])
def test_ip_valid(value: str) -> None:
    assert strong(v.ip_address(value))


@pytest.mark.parametrize("value", ["256.1.1.1", "1.2.3", "192.168.01.1", "abc", "1.2.3.4.5",
                                   "12:30", "2024-01-01"])
def test_ip_invalid(value: str) -> None:
    assert v.ip_address(value) is None


# -- dates of birth --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1980-02-29", "1950-12-31", "31/12/1975", "05.06.1990",
                                   "2001-07-04 00:00:00", "2026-11-21"])
def test_birth_date_plausible(value: str) -> None:
    assert weak(v.birth_date(value, TODAY))


@pytest.mark.parametrize("value", ["2030-01-01", "1890-05-05", "1981-02-29", "2020-06-01 14:23:11",
                                   "31/31/1980", "yesterday", "1980", "13:45"])
def test_birth_date_implausible(value: str) -> None:
    assert v.birth_date(value, TODAY) is None, value


# -- secrets ---------------------------------------------------------------------------------------


def test_jwt() -> None:
    token = make_jwt({"sub": "42", "iat": 1700000000})
    assert strong(v.jwt(token))
    assert strong(v.jwt("Bearer " + token))
    head, body, sig = token.split(".")
    assert v.jwt(f"{head}.{body}") is None
    assert v.jwt(f"{body}.{body}.{sig}") is None  # the payload has no "alg": not a header
    assert v.jwt("a.b.c") is None
    assert v.jwt("www.example.com") is None


@pytest.mark.parametrize("value", [
    "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "rk_test_" + "51H8sWLJ3kq9ZmQ2xY7tR4pN",
    "AKIA" + "IOSFODNN7EXAMPLE",
    "ghp_" + "1a2B3c4D5e6F7g8H9i0JkLmNoPqRsTuVwXyZ",
    "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "AIza" + "SyA-1234567890abcdefghijklmnopqrstu",
    "glpat-" + "xxxxxxxxxxxxxxxxxxxx",
    "sk-ant-" + "api03-abcdefghijklmnopqrstuvwxyz012345",
    "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
])
def test_api_key_prefixes(value: str) -> None:
    assert strong(v.api_key(value)), value


def test_high_entropy_token_is_weak_and_words_are_not_tokens() -> None:
    assert weak(v.api_key("Zx8Qp2Lm9Rt4Vb7Nc1Kd5Hg3Jf6Ws0Ty"))
    for word in ("correcthorsebatterystaple", "internationalization", "hello world",
                 "Lorem ipsum dolor sit amet", "aaaaaaaaaaaaaaaaaaaaaaaa",
                 "550e8400-e29b-41d4-a716-446655440000", "ProductCategoryElectronics"):
        assert v.api_key(word) is None, word
    # hex digests (checksums, commit ids) are at most weak: never a secret on shape alone
    assert not strong(v.api_key(hashlib.sha256(b"x").hexdigest()))


def test_private_key() -> None:
    pem = ("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBQ1x0e7HyB2wW2bK6gqzN0U1Oe4yXqgdyG3r2"
           "X0z6Zn\n-----END PRIVATE KEY-----\n")
    assert strong(v.private_key(pem))
    assert strong(v.private_key(pem.replace("PRIVATE KEY", "RSA PRIVATE KEY")))
    assert strong(v.private_key(pem.replace("PRIVATE KEY", "OPENSSH PRIVATE KEY")))
    assert v.private_key(pem.replace("PRIVATE KEY", "PUBLIC KEY")) is None
    assert v.private_key(pem.replace("PRIVATE KEY", "CERTIFICATE")) is None
    assert v.private_key("-----BEGIN PRIVATE KEY-----\nabc") is None  # no END line


@pytest.mark.parametrize("value", [
    "$2b$12$" + "R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
    "$2y$10$" + "abcdefghijklmnopqrstuu5UP0P0XqBnC0uFsIlYHj.eN5GvLYC6y",
    "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
    "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E",
    "pbkdf2_sha256$600000$abcdefghijklmnop$VGhpcyBpcyBub3QgYSByZWFsIGhhc2g=",
    "$pbkdf2-sha256$29000$N2bMWYuxltLaew$g4XDSFuWCHtZY1Jd25QRpIAWb9fm5RV2",
    "pbkdf2:sha256:600000$salt1234$" + "ab" * 32,
    "$1$saltsalt$qjXMvbEw8oaL.CzflDugX/",
    "$5$rounds=5000$usesomesillystri$KqJWpanXZHKq2BOB43TSaYhEWsQ1Lr5QNyPCDH/Tp.6",
    "$6$saltsalt$" + "a" * 86,
    "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVka2V5c3RvcmVka2V5c3RvcmVkaw==:c2VydmVya2V5c2VydmVya2V5",
    "md5" + "0" * 31 + "1",
])
def test_password_hash_formats(value: str) -> None:
    assert strong(v.password_hash(value)), value


def test_password_hash_negatives() -> None:
    assert weak(v.password_hash(hashlib.md5(b"x").hexdigest()))  # a bare digest: weak only
    for value in ("$2b$12$short", "password123", "$6$salt$tooshort", "hunter2"):
        assert v.password_hash(value) is None, value


# -- people and places -----------------------------------------------------------------------------


def test_person_name() -> None:
    assert strong(v.person_name("Jean Dupont"))
    assert strong(v.person_name("María José García López"))
    assert strong(v.person_name("DUPONT Jean"))
    assert strong(v.person_name("O'Brien, Sarah"))
    assert weak(v.person_name("Giulia"))
    for value in ("Blue Widget", "jean dupont", "Order 42", "Paris", "ACME Corp International"):
        assert not strong(v.person_name(value)), value


def test_street_address() -> None:
    for value in ("221B Baker Street", "12 rue de la Paix", "Hauptstraße 5", "Calle Mayor 3, 2B",
                  "Via Roma 10", "Rua Augusta 100", "Damrak 1 straat", "Keizersgracht 123"):
        assert strong(v.street_address(value)), value
    for value in ("Baker Street", "Order 12", "Paris", "42"):
        assert v.street_address(value) is None, value


# -- name tokenization and the dictionary ----------------------------------------------------------


@pytest.mark.parametrize("name, tokens", [
    ("cust_email_addr", ["cust", "email", "addr"]),
    ("custEmailAddr2", ["cust", "email", "addr", "2"]),
    ("IPAddress", ["ip", "address"]),
    ("date-de-naissance", ["date", "de", "naissance"]),
    ("datedenaissance", ["date", "de", "naissance"]),
    ("Geburtsdatum", ["geburtsdatum"]),
    ("rechnungsadresse", ["rechnungs", "adresse"]),
    ("Straße", ["strasse"]),
    ("EmailAddresses", ["email", "address"]),
    ("número_teléfono", ["numero", "telefono"]),
])
def test_tokenize(name: str, tokens: list[str]) -> None:
    assert tokenize(name) == tokens


@pytest.mark.parametrize("name, cls, lang", [
    ("cust_email_addr", "email", "en"), ("courriel", "email", "fr"),
    ("correo_electronico", "email", "es"), ("emailadres", "email", "nl"),
    ("telefono", "phone", "es"), ("telefonnummer", "phone", "de"), ("cellulare", "phone", "it"),
    ("telemovel", "phone", "pt"), ("num_tel", "phone", "fr"), ("mobiel", "phone", "nl"),
    ("geburtsdatum", "date_of_birth", "de"), ("dob", "date_of_birth", "en"),
    ("date_de_naissance", "date_of_birth", "fr"), ("fecha_nacimiento", "date_of_birth", "es"),
    ("data_di_nascita", "date_of_birth", "it"), ("data_nascimento", "date_of_birth", "pt"),
    ("geboortedatum", "date_of_birth", "nl"),
    ("nir", "national_id", "fr"), ("ssn", "national_id", "en"), ("dni", "national_id", "es"),
    ("bsn", "national_id", "nl"), ("codice_fiscale", "tax_id", "it"), ("cpf", "tax_id", "pt"),
    ("steuer_id", "tax_id", "de"),
    ("prenom", "first_name", "fr"), ("Vorname", "first_name", "de"),
    ("voornaam", "first_name", "nl"), ("apellidos", "last_name", "es"),
    ("cognome", "last_name", "it"), ("sobrenome", "last_name", "pt"),
    ("achternaam", "last_name", "nl"), ("lastName", "last_name", "en"),
    ("nom_client", "person_name", "fr"), ("customer_name", "person_name", "en"),
    ("plz", "postal_code", "de"), ("codigo_postal", "postal_code", "es"),
    ("wohnort", "city", "de"), ("ville", "city", "fr"),
    ("rekeningnummer", "bank_account", "nl"), ("iban", "iban", "en"),
    ("kreditkartennummer", "payment_card", "de"), ("cc_number", "payment_card", "en"),
    ("client_ip", "ip_address", "en"), ("indirizzo_ip", "ip_address", "it"),
    ("passeport", "passport", "fr"), ("rijbewijs", "driver_license", "nl"),
    ("mot_de_passe", "password", "fr"), ("senha", "password", "pt"),
    ("password_hash", "password_hash", "en"), ("hashed_password", "password_hash", "en"),
    ("api_key", "secret", "en"), ("email_verification_token", "secret", "en"),
    ("private_key", "private_key", "en"), ("cle_privee", "private_key", "fr"),
    ("geschlecht", "gender", "de"), ("latitude", "geolocation", "en"),
    ("benutzername", "username", "de"), ("nome_utente", "username", "it"),
])
def test_match_name(name: str, cls: str, lang: str) -> None:
    match = match_name(name)
    assert match is not None, name
    assert match.pii_class == cls
    assert lang in match.lang.split("/")  # a phrase shared by languages lists them all


@pytest.mark.parametrize("name", ["status", "description", "product_name", "hostname", "filename",
                                  "nombre_producto", "email_count", "phone_verified", "is_mobile",
                                  "email_sent_at", "token_count", "max_tokens", "card_last4",
                                  "mac_address", "warehouse_address", "created_at", "amount",
                                  "usuario_id", "email_address_verified", "export", "id"])
def test_match_name_rejects(name: str) -> None:
    assert match_name(name) is None, match_name(name)


def test_name_heads_are_ambiguous_without_a_person_qualifier() -> None:
    for name in ("name", "nom", "nombre", "nome", "naam"):
        match = match_name(name)
        assert match is not None and match.ambiguous and match.pii_class == "person_name"


def test_name_kind() -> None:
    assert name_kind("status") == "categorical"
    assert name_kind("order_type") == "categorical"
    assert name_kind("description") == "free_text"
    assert name_kind("bemerkung") == "free_text"
    assert name_kind("email") is None


def test_package_imports_with_the_standard_library_only() -> None:
    """PL/Python runs Debian's /usr/bin/python3 without the venv: agent.pii must import there
    with nothing but the standard library (-S: not even site-packages)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import agent.pii as p; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] not in "
            "sys.stdlib_module_names and m.split('.')[0] not in ('agent', '__main__')); "
            "print(bad); f = p.classify_column('email', 'text', ['a@example.com'] * 20); "
            "print(f.pii_class)")
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    out = subprocess.run([python, "-I", "-S", "-c", code, str(REPO)], capture_output=True,
                         text=True, check=True).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == "email"
