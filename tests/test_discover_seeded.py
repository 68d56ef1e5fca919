"""Discovery acceptance: a seeded database with known PII and decoys, the real CLI, precision
and recall.

The database holds realistic generated data in 20 tables and two schemas: English, German,
Spanish, French, Italian, Portuguese and Dutch customer tables (obvious names in each language),
credentials and accounts (API keys, JWTs, PEM keys, password hashes, session tokens), tables
whose PII sits behind non-obvious names (``contact``, ``payment_ref``, ``ship_to``, ``col_a``...),
ordinary non-PII columns (ids, amounts, timestamps, product names, free text, checksums, JSON,
user agents) and the two decoys of issue 4: ``customers.status`` holding the same three test
fixture emails in every row, and ``orders.description`` holding card-like numbers that fail Luhn.
A ``pgwarden_state`` schema holds emails that must not be reported (pgwarden's own schemas).
Known limits are seeded too, so the measure is not flattering: PII inside free text and JSON,
surnames alone under a non-obvious name, bare 9-digit SSNs under a non-obvious name (expected
misses); a one-row support address and warehouse coordinates (expected false positives).

`pgwarden discover --json --write-suggestions FILE` runs as a subprocess (the installed console
script). Precision and recall of the detection (PII or not) and the class accuracy are printed
in pytest's terminal summary with every miss and false positive named.

Thresholds: recall >= 0.9 and precision >= 0.9, fixed before measuring. Recall matters most (a
miss is a column left unmasked for AI agents), but a discovery that flags one column in ten
wrongly trains reviewers to accept suggestions blindly. Both decoys must stay unflagged, and no
sampled value may appear in stdout, stderr or the suggestions file.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import random
import string
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from ruamel.yaml import YAML

from agent.pgcluster import PgCluster

PGWARDEN = str(Path(sys.executable).with_name("pgwarden"))
DB = "pii_seeded"
ROWS = 300

# -- the summary plugin: precision/recall in pytest's terminal summary --------------------------


class _DiscoveryReport:
    """Registered at run time; prints its lines in the terminal summary (captured or not)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.lines:
            terminalreporter.section("pgwarden discover: precision / recall on the seeded database")
            for line in self.lines:
                terminalreporter.write_line(line)


@pytest.fixture
def discovery_report(request: pytest.FixtureRequest) -> _DiscoveryReport:
    pm = request.config.pluginmanager
    plugin = pm.get_plugin("pgwarden-discovery-report")
    if plugin is None:
        plugin = _DiscoveryReport()
        pm.register(plugin, "pgwarden-discovery-report")
    return plugin


# -- realistic value generators -------------------------------------------------------------------

FIRST = {
    "en": "Olivia Liam Emma Noah Ava Ethan Sophia Mason Isabella Lucas Harper Logan Evelyn Caleb "
          "Abigail Wyatt Madison Hunter Aubrey Brooke Declan Sienna Tristan Willow",
    "de": "Lukas Anna Jonas Lea Felix Marie Paul Hannah Moritz Greta Tobias Ursula Jürgen Birgit "
          "Henrik Wiebke Malte Frauke Sönke Imke",
    "es": "Alejandro Lucía Javier Carmen Diego Elena Pablo Marta Álvaro Nuria Iker Ainhoa Unai "
          "Itziar Jorge Rocío",
    "fr": "Camille Louis Chloé Hugo Manon Théo Léa Mathis Inès Nathan Océane Gaëtan Maëlle Loïc "
          "Solène Yannick",
    "it": "Giulia Lorenzo Francesca Matteo Chiara Alessandro Martina Riccardo Sara Federico "
          "Ilaria Tommaso Benedetta Gianluca",
    "pt": "João Beatriz Tiago Mariana Rui Inês Gonçalo Leonor Duarte Matilde Afonso Carolina "
          "Vasco Benedita",
    "nl": "Daan Sanne Bram Fleur Thijs Anouk Sem Lotte Joris Femke Stijn Mirthe Wouter Noor",
}
LAST = {
    "en": "Smith Johnson Williams Brown Jones Miller Davis Wilson Anderson Taylor Thomas Moore "
          "Jackson White Harris Clark Lewis Walker Hall Young",
    "de": "Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Koch "
          "Richter Klein Wolf Schröder Neumann",
    "es": "García Fernández González Rodríguez López Martínez Sánchez Pérez Gómez Martín "
          "Jiménez Ruiz Hernández Díaz",
    "fr": "Martin Bernard Dubois Thomas Robert Richard Petit Durand Leroy Moreau Simon Laurent "
          "Lefèbvre Michel Garnier",
    "it": "Rossi Russo Ferrari Esposito Bianchi Romano Colombo Ricci Marino Greco Bruno Gallo "
          "Conti De Luca",
    "pt": "Silva Santos Ferreira Pereira Oliveira Costa Rodrigues Martins Jesus Sousa Fernandes "
          "Gonçalves",
    "nl": "de Jong Jansen de Vries van den Berg van Dijk Bakker Janssen Visser Smit Meijer "
          "de Boer Mulder",
}
CITIES = {
    "de": "Berlin Hamburg München Köln Frankfurt Stuttgart Düsseldorf Leipzig Dortmund Bremen",
    "fr": "Paris Marseille Lyon Toulouse Nice Nantes Strasbourg Montpellier Bordeaux Lille",
    "nl": "Amsterdam Rotterdam Utrecht Eindhoven Groningen Tilburg Almere Breda Nijmegen Haarlem",
}
STREETS = {
    "en": ["{n} Baker Street", "{n} Maple Avenue", "{n} Oak Lane", "{n} Sunset Blvd",
           "{n} High Road"],
    "de": ["Hauptstraße {n}", "Bahnhofstraße {n}", "Gartenweg {n}", "Lindenallee {n}",
           "Marktplatz {n}"],
    "es": ["Calle Mayor {n}", "Avenida de la Constitución {n}", "Plaza España {n}",
           "Calle de Alcalá {n}, 3º B"],
    "fr": ["{n} rue de la Paix", "{n} avenue Victor Hugo", "{n} boulevard Voltaire",
           "{n} chemin des Vignes", "{n} place Bellecour"],
    "pt": ["Rua Augusta {n}", "Avenida da Liberdade {n}", "Travessa do Carmo {n}",
           "Praça do Comércio {n}"],
}
PRODUCTS = ["Ergonomic Desk Lamp", "Stainless Steel Water Bottle", "Wireless Mouse",
            "Noise Cancelling Headphones", "Organic Green Tea 100g", "Yoga Mat Pro",
            "USB-C Charging Cable 2m", "Ceramic Coffee Mug", "Standing Desk Frame",
            "Mechanical Keyboard TKL", "Cast Iron Skillet 28cm", "Hiking Backpack 40L"]
NOTES = ["Customer asked about delivery times.", "Prefers contact in the afternoon.",
         "Requested an invoice with the company address.", "Returned item, refund issued.",
         "Loyal since the spring campaign.", "Called twice about the warranty.",
         "Needs wheelchair access at the pickup point.", "Interested in the premium plan."]
FIXTURE_EMAILS = ["test@example.com", "qa-fixture@example.org", "noreply@example.net"]


class Gen:
    """Deterministic generators of realistic values (check digits computed, not faked)."""

    def __init__(self, seed: int = 4) -> None:
        self.r = random.Random(seed)
        self.used_emails: set[str] = set()

    def pick(self, words: str | list[str]) -> str:
        return self.r.choice(words.split() if isinstance(words, str) else words)

    def first(self, lang: str) -> str:
        return self.pick(FIRST[lang])

    def last(self, lang: str) -> str:
        # multi-word surnames ("de Jong", "De Luca") are joined back
        items = LAST[lang].replace("de Jong", "de_Jong").replace("van den Berg", "van_den_Berg") \
            .replace("van Dijk", "van_Dijk").replace("de Vries", "de_Vries") \
            .replace("de Boer", "de_Boer").replace("De Luca", "De_Luca").split()
        return self.r.choice(items).replace("_", " ")

    def email(self, first: str, last: str) -> str:
        import unicodedata

        def ascii_(s: str) -> str:
            return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode().lower() \
                .replace(" ", "")

        domain = self.pick(["gmail.com", "outlook.com", "web.de", "orange.fr", "libero.it",
                            "sapo.pt", "ziggo.nl", "yahoo.es", "proton.me", "example.co.uk"])
        while True:
            a, b = ascii_(first), ascii_(last)
            local = self.r.choice([f"{a}.{b}", f"{a[0]}{b}", f"{a}{self.r.randint(1, 999)}"])
            address = f"{local}@{domain}"
            if address not in self.used_emails:
                self.used_emails.add(address)
                return address
            domain = self.pick(["mail.com", "gmx.net", "free.fr", "icloud.com"])

    def digits(self, n: int) -> str:
        return "".join(self.r.choice(string.digits) for _ in range(n))

    def phone(self, country: str) -> str:
        d = self.digits
        fmt = {
            "us": [lambda: f"+1 ({self.r.randint(201, 989)}) {self.r.randint(200, 999)}-{d(4)}",
                   lambda: f"{self.r.randint(201, 989)}-{self.r.randint(200, 999)}-{d(4)}",
                   lambda: f"+1{self.r.randint(201, 989)}{self.r.randint(200, 999)}{d(4)}"],
            "de": [lambda: f"030 {d(7)}", lambda: f"+49 151 {d(8)}",
                   lambda: f"0{self.r.randint(2, 9)}{d(2)} {d(6)}"],
            "es": [lambda: f"6{d(2)} {d(3)} {d(3)}", lambda: f"+34 6{d(2)} {d(2)} {d(2)} {d(2)}"],
            "fr": [lambda: f"06 {d(2)} {d(2)} {d(2)} {d(2)}",
                   lambda: f"+33 7 {d(2)} {d(2)} {d(2)} {d(2)}"],
            "it": [lambda: f"3{d(2)} {d(7)}", lambda: f"+39 3{d(2)} {d(3)} {d(4)}"],
            "pt": [lambda: f"+351 9{d(2)} {d(3)} {d(3)}"],
            "nl": [lambda: f"06-{d(8)}", lambda: f"+31 6 {d(8)}"],
            "intl": [lambda: f"+{self.r.choice(['44', '61', '81', '55'])}"
                             f"{self.r.randint(1, 9)}{d(9)}"],
        }[country]
        return self.r.choice(fmt)()

    def dob(self) -> dt.date:
        return dt.date(1940, 1, 1) + dt.timedelta(days=self.r.randint(0, 365 * 66))

    def ssn(self) -> str:
        while True:
            area = self.r.randint(1, 899)
            if area != 666:
                value = f"{area:03d}-{self.r.randint(1, 99):02d}-{self.r.randint(1, 9999):04d}"
                if value not in ("123-45-6789", "078-05-1120"):
                    return value

    def nir(self) -> str:
        body = (f"{self.r.randint(1, 2)}{self.r.randint(40, 99):02d}{self.r.randint(1, 12):02d}"
                f"{self.r.choice(['75', '69', '13', '33', '59', '31'])}{self.r.randint(1, 999):03d}"
                f"{self.r.randint(1, 999):03d}")
        key = 97 - int(body) % 97
        return f"{body[0]} {body[1:3]} {body[3:5]} {body[5:7]} {body[7:10]} {body[10:13]} {key:02d}"

    def dni(self) -> str:
        n = self.r.randint(10_000_000, 99_999_999)
        return f"{n}{'TRWAGMYFPDXBNJZSQVHLCKE'[n % 23]}"

    def bsn(self) -> str:
        while True:
            first8 = self.digits(8)
            if first8[0] == "0":
                continue
            total = sum(int(c) * w for c, w in zip(first8, range(9, 1, -1)))
            last = total % 11
            if last < 10:
                return first8 + str(last)

    def cpf(self) -> str:
        digits = [self.r.randint(0, 9) for _ in range(9)]
        for n in (9, 10):
            digits.append(sum(d * w for d, w in zip(digits, range(n + 1, 1, -1))) * 10 % 11 % 10)
        s = "".join(map(str, digits))
        return f"{s[:3]}.{s[3:6]}.{s[6:9]}-{s[9:]}"

    def codice_fiscale(self) -> str:
        odd = [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22,
               25, 24, 23]
        letters = string.ascii_uppercase
        body = ("".join(self.r.choice(letters) for _ in range(6)) + self.digits(2)
                + self.r.choice("ABCDEHLMPRST") + f"{self.r.randint(1, 71):02d}"
                + self.r.choice("ADFHLMGZ") + self.digits(3))
        total = 0
        for i, ch in enumerate(body):
            val = int(ch) if ch.isdigit() else ord(ch) - 65
            total += odd[val] if i % 2 == 0 else val
        return body + chr(65 + total % 26)

    def steuer_id(self) -> str:
        while True:
            ten = str(self.r.randint(1, 9)) + self.digits(9)
            product = 10
            for ch in ten:
                total = (int(ch) + product) % 10 or 10
                product = total * 2 % 11
            return ten + str((11 - product) % 10)

    def iban(self, country: str) -> str:
        bban = {"DE": lambda: self.digits(18), "NL": lambda: self.r.choice(
            ["ABNA", "RABO", "INGB", "TRIO"]) + self.digits(10),
                "FR": lambda: self.digits(23), "ES": lambda: self.digits(20)}[country]()
        numeric = "".join(str(int(ch, 36)) for ch in bban + country + "00")
        compact = f"{country}{98 - int(numeric) % 97:02d}{bban}"
        return " ".join(compact[i:i + 4] for i in range(0, len(compact), 4))

    def card(self) -> str:
        prefix, length = self.r.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16),
                                        ("37", 15), ("6011", 16)])
        body = prefix + self.digits(length - len(prefix) - 1)
        for d in string.digits:
            if _luhn(body + d):
                number = body + d
                break
        if length == 15:
            return f"{number[:4]} {number[4:10]} {number[10:]}"
        return " ".join(number[i:i + 4] for i in range(0, 16, 4))

    def card_failing_luhn(self) -> str:
        while True:
            number = "4" + self.digits(15)
            if not _luhn(number):
                return " ".join(number[i:i + 4] for i in range(0, 16, 4))

    def ip(self) -> str:
        if self.r.random() < 0.25:
            return f"2001:db8:{self.r.randint(0, 0xffff):x}::{self.r.randint(1, 0xffff):x}"
        return ".".join(str(self.r.randint(1, 254)) for _ in range(4))

    def b64url(self, data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def jwt(self) -> str:
        head = self.b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = self.b64url(json.dumps({"sub": str(self.r.randint(1, 10**6)),
                                       "iat": 1_760_000_000 + self.r.randint(0, 10**6),
                                       "scope": "read write"}).encode())
        sig = self.b64url(hmac.new(b"seed-key", f"{head}.{body}".encode(),
                                   hashlib.sha256).digest())
        return f"{head}.{body}.{sig}"

    def alnum(self, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
        return "".join(self.r.choice(alphabet) for _ in range(n))

    def api_key(self) -> str:
        return self.r.choice([
            lambda: "sk_live_" + self.alnum(24),
            lambda: "AKIA" + self.alnum(16, string.ascii_uppercase + "234567"),
            lambda: "ghp_" + self.alnum(36),
            lambda: "xoxb-" + self.digits(12) + "-" + self.digits(13) + "-" + self.alnum(24),
            lambda: "sk-proj-" + self.alnum(40),
        ])()

    def bcrypt(self) -> str:
        return "$2b$12$" + self.alnum(53, "./" + string.ascii_letters + string.digits)

    def password_hash(self) -> str:
        kind = self.r.random()
        if kind < 0.5:
            return self.bcrypt()
        salt = self.alnum(16)
        if kind < 0.8:
            raw = hashlib.pbkdf2_hmac("sha256", b"pw", salt.encode(), 1000)
            return f"pbkdf2_sha256$1000${salt}${base64.b64encode(raw).decode()}"
        b64 = base64.b64encode(self.r.randbytes(32)).decode().rstrip("=")
        salt64 = base64.b64encode(salt.encode()).decode().rstrip("=")
        return f"$argon2id$v=19$m=65536,t=3,p=4${salt64}${b64}"

    def token(self) -> str:
        return self.b64url(self.r.randbytes(32))


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _private_keys(n: int) -> list[str]:
    keys = []
    for i in range(n):
        cmd = (["openssl", "genpkey", "-algorithm", "ed25519"] if i % 3 else
               ["openssl", "ecparam", "-genkey", "-name", "prime256v1", "-noout"])
        keys.append(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return keys


# -- the schema and its ground truth ---------------------------------------------------------------

# (schema, table, column) -> acceptable classes; every other examined column is not PII.
NAMES = {"person_name", "first_name", "last_name"}
TRUTH: dict[tuple[str, str, str], set[str]] = {}


def _truth(schema: str, table: str, classes: dict[str, set[str] | str]) -> None:
    for column, cls in classes.items():
        TRUTH[(schema, table, column)] = {cls} if isinstance(cls, str) else cls


_truth("public", "customers", {"first_name": NAMES, "last_name": NAMES, "email": "email",
                               "phone": "phone", "date_of_birth": "date_of_birth",
                               "ssn": "national_id", "gender": "gender"})
_truth("public", "kunden", {"vorname": NAMES, "nachname": NAMES, "geburtsdatum": "date_of_birth",
                            "telefonnummer": "phone", "anschrift": "address",
                            "plz": "postal_code", "wohnort": "city", "iban": "iban",
                            "steuer_id": "tax_id"})
_truth("public", "clientes", {"nombre_completo": NAMES, "correo": "email", "telefono": "phone",
                              "direccion": "address", "codigo_postal": "postal_code",
                              "dni": {"national_id", "tax_id"}})
_truth("public", "clients", {"nom": NAMES, "prenom": NAMES, "courriel": "email",
                             "date_de_naissance": "date_of_birth", "nir": "national_id",
                             "adresse": "address", "code_postal": "postal_code", "ville": "city",
                             "portable": "phone"})
_truth("public", "utenti", {"nome": NAMES, "cognome": NAMES, "codice_fiscale": "tax_id",
                            "cellulare": "phone", "indirizzo_ip": "ip_address",
                            "data_di_nascita": "date_of_birth"})
_truth("public", "usuarios", {"nome_completo": NAMES, "email": "email",
                              "senha": {"password", "password_hash"},
                              "cpf": {"tax_id", "national_id"}, "telemovel": "phone",
                              "morada": "address"})
_truth("public", "klanten", {"voornaam": NAMES, "achternaam": NAMES,
                             "bsn": "national_id", "rekeningnummer": {"bank_account", "iban"},
                             "geboortedatum": "date_of_birth", "woonplaats": "city",
                             "postcode": "postal_code", "emailadres": "email"})
_truth("public", "api_credentials", {"api_key": "secret", "access_token": "secret",
                                     "private_key": "private_key", "webhook_secret": "secret"})
_truth("public", "accounts", {"username": "username", "password_hash": "password_hash",
                              "last_login_ip": "ip_address", "session_token": "secret"})
_truth("public", "orders", {"contact": "email", "payment_ref": "payment_card",
                            "ship_to": "address", "payout_to": "iban"})
_truth("public", "events", {"source": "ip_address", "callback": "phone"})
_truth("public", "employees", {"name": NAMES, "workEmail": "email"})
_truth("crm", "leads", {"full_name": NAMES, "e_mail": "email", "mobile": "phone",
                        "geo_lat": "geolocation", "geo_lng": "geolocation"})
_truth("public", "legacy_import", {"col_a": "national_id", "col_b": "secret",
                                   "col_c": "password_hash", "col_d": "private_key",
                                   "col_e": "phone"})
# Known limits, included on purpose so that the measure is not flattering: PII embedded in
# free text or JSON is not scanned, surnames alone behind a non-obvious name are not recognised,
# and nine bare digits are never enough for an SSN without a name saying so.
_truth("public", "support_tickets", {"body": {"email", "phone"}})
_truth("public", "payouts", {"holder": NAMES, "ref_no": "national_id"})
_truth("public", "profiles", {"profile": {"email", "phone", "person_name"}})
# Not personal data, though a name says otherwise: the shop's own support address (one row)
# and warehouse coordinates. Flagging them counts as false positives.
DECOYS = {("public", "customers", "status"), ("public", "orders", "description")}


def _seed(conn: psycopg.Connection[Any]) -> list[str]:
    """Create and fill the tables; return every generated text value (to check none leaks)."""
    g = Gen()
    values: list[str] = []
    keys = _private_keys(24)

    def table(ddl: str, name: str, rows: Iterator[tuple[Any, ...]], columns: str) -> None:
        conn.execute(ddl)
        with conn.cursor().copy(f"COPY {name} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
                values.extend(str(v) for v in row if isinstance(v, (str, dt.date)))

    def created() -> dt.datetime:
        return dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
            seconds=g.r.randint(0, 60_000_000))

    def customers() -> Iterator[tuple[Any, ...]]:
        for _ in range(ROWS):
            f, l_ = g.first("en"), g.last("en")
            yield (f, l_, g.email(f, l_), g.phone("us"), g.dob(), g.ssn(), g.pick("F M X"),
                   g.r.randint(0, 5000), created(), g.pick(FIXTURE_EMAILS), g.pick(NOTES))

    table("""CREATE TABLE customers (id serial PRIMARY KEY, first_name text, last_name text,
             email varchar(255), phone text, date_of_birth date, ssn char(11), gender text,
             loyalty_points int, created_at timestamptz, status text, notes text)""",
          "customers", customers(), "first_name, last_name, email, phone, date_of_birth, ssn, "
          "gender, loyalty_points, created_at, status, notes")

    def kunden() -> Iterator[tuple[Any, ...]]:
        for i in range(ROWS):
            f, l_ = g.first("de"), g.last("de")
            yield (10_000 + i, f, l_, g.dob(), g.phone("de"),
                   g.pick(STREETS["de"]).format(n=g.r.randint(1, 180)), g.digits(5),
                   g.pick(CITIES["de"]), g.iban("DE"), g.steuer_id(),
                   g.pick(["Rückruf erbeten", "Lieferung an Nachbarn", "Stammkunde", ""]))

    table("""CREATE TABLE kunden (kundennummer int PRIMARY KEY, vorname text, nachname text,
             geburtsdatum date, telefonnummer text, anschrift text, plz text, wohnort text,
             iban text, steuer_id text, bemerkung text)""",
          "kunden", kunden(), "kundennummer, vorname, nachname, geburtsdatum, telefonnummer, "
          "anschrift, plz, wohnort, iban, steuer_id, bemerkung")

    def clientes() -> Iterator[tuple[Any, ...]]:
        for _ in range(ROWS):
            f, l1, l2 = g.first("es"), g.last("es"), g.last("es")
            yield (f"{f} {l1} {l2}", g.email(f, l1), g.phone("es"),
                   g.pick(STREETS["es"]).format(n=g.r.randint(1, 120)),
                   f"{g.r.randint(1, 52):02d}{g.digits(3)}", g.dni(),
                   dt.date(2019, 1, 1) + dt.timedelta(days=g.r.randint(0, 2000)))

    table("""CREATE TABLE clientes (id bigserial PRIMARY KEY, nombre_completo text, correo text,
             telefono text, direccion text, codigo_postal text, dni text, fecha_alta date)""",
          "clientes", clientes(), "nombre_completo, correo, telefono, direccion, codigo_postal, "
          "dni, fecha_alta")

    def clients() -> Iterator[tuple[Any, ...]]:
        for _ in range(ROWS):
            f, l_ = g.first("fr"), g.last("fr")
            yield (l_.upper(), f, g.email(f, l_), g.dob(), g.nir(),
                   g.pick(STREETS["fr"]).format(n=g.r.randint(1, 90)),
                   f"{g.r.choice(['75', '69', '13', '33', '31'])}{g.digits(3)}",
                   g.pick(CITIES["fr"]), g.phone("fr"))

    table("""CREATE TABLE clients (id serial PRIMARY KEY, nom text, prenom text, courriel text,
             date_de_naissance date, nir text, adresse text, code_postal varchar(5), ville text,
             portable text)""",
          "clients", clients(), "nom, prenom, courriel, date_de_naissance, nir, adresse, "
          "code_postal, ville, portable")

    def utenti() -> Iterator[tuple[Any, ...]]:
        for _ in range(ROWS):
            yield (g.first("it"), g.last("it"), g.codice_fiscale(), g.phone("it"), g.ip(),
                   g.dob())

    table("""CREATE TABLE utenti (id serial PRIMARY KEY, nome text, cognome text,
             codice_fiscale char(16), cellulare text, indirizzo_ip inet, data_di_nascita date)""",
          "utenti", utenti(), "nome, cognome, codice_fiscale, cellulare, indirizzo_ip, "
          "data_di_nascita")

    def usuarios() -> Iterator[tuple[Any, ...]]:
        for _ in range(ROWS):
            f, l_ = g.first("pt"), g.last("pt")
            yield (f"{f} {l_}", g.email(f, l_), g.bcrypt(), g.cpf(), g.phone("pt"),
                   g.pick(STREETS["pt"]).format(n=g.r.randint(1, 300)))

    table("""CREATE TABLE usuarios (id serial PRIMARY KEY, nome_completo text, email text,
             senha text, cpf text, telemovel text, morada text)""",
          "usuarios", usuarios(), "nome_completo, email, senha, cpf, telemovel, morada")

    def klanten() -> Iterator[tuple[Any, ...]]:
        for _ in range(ROWS):
            f, l_ = g.first("nl"), g.last("nl")
            yield (f, l_, g.bsn(), g.iban("NL"), g.dob(), g.pick(CITIES["nl"]),
                   f"{g.r.randint(1000, 9999)} {g.alnum(2, 'ABCDEFGHJKLMNPRSTVWXZ')}",
                   g.email(f, l_))

    table("""CREATE TABLE klanten (id serial PRIMARY KEY, voornaam text, achternaam text,
             bsn text, rekeningnummer text, geboortedatum date, woonplaats text, postcode text,
             emailadres text)""",
          "klanten", klanten(), "voornaam, achternaam, bsn, rekeningnummer, geboortedatum, "
          "woonplaats, postcode, emailadres")

    def credentials() -> Iterator[tuple[Any, ...]]:
        for i in range(48):
            yield (g.pick("stripe github aws slack openai"), g.api_key(), g.jwt(),
                   keys[i % len(keys)], "whsec_" + g.alnum(32), created(),
                   g.pick(["read", "read,write", "admin"]))

    table("""CREATE TABLE api_credentials (id serial PRIMARY KEY, service text, api_key text,
             access_token text, private_key text, webhook_secret text, created_at timestamptz,
             scopes text)""",
          "api_credentials", credentials(), "service, api_key, access_token, private_key, "
          "webhook_secret, created_at, scopes")

    def accounts() -> Iterator[tuple[Any, ...]]:
        for i in range(ROWS):
            f, l_ = g.first("en"), g.last("en")
            yield (f"{f[0].lower()}{l_.lower().replace(' ', '')}{i}", g.password_hash(), g.ip(),
                   created(), g.token(), g.r.random() < 0.05, g.r.random() < 0.8)

    table("""CREATE TABLE accounts (id serial PRIMARY KEY, username text UNIQUE,
             password_hash text, last_login_ip inet, last_login_at timestamptz,
             session_token text, is_admin boolean, email_verified boolean)""",
          "accounts", accounts(), "username, password_hash, last_login_ip, last_login_at, "
          "session_token, is_admin, email_verified")

    def orders() -> Iterator[tuple[Any, ...]]:
        langs = list(STREETS)
        for _ in range(ROWS):
            f, l_ = g.first("en"), g.last("en")
            description = g.card_failing_luhn()
            if g.r.random() < 0.2:
                description = f"Gift card {description}"
            yield (round(g.r.uniform(5, 900), 2), g.r.randint(1, 9), g.pick(PRODUCTS), created(),
                   g.email(f, l_), g.card(), g.pick(STREETS[g.pick(langs)]).format(
                       n=g.r.randint(1, 99)), description,
                   "1Z" + g.alnum(16, string.ascii_uppercase + string.digits),
                   g.pick(["SAVE10", "WELCOME", "BLACKFRIDAY", "SPRING24"]),
                   g.iban(g.pick(["DE", "FR", "ES", "NL"])))

    table("""CREATE TABLE orders (id serial PRIMARY KEY, amount numeric(10,2), quantity int,
             product_name text, shipped_at timestamptz, contact text, payment_ref text,
             ship_to text, description text, tracking_code text, coupon text, payout_to text)""",
          "orders", orders(), "amount, quantity, product_name, shipped_at, contact, payment_ref, "
          "ship_to, description, tracking_code, coupon, payout_to")

    def events() -> Iterator[tuple[Any, ...]]:
        agents = ["Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
                  "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605",
                  "curl/8.5.0", "python-requests/2.32.3"]
        for _ in range(ROWS):
            yield (created(), g.pick("login logout password_reset export"), g.ip(),
                   g.pick(agents), json.dumps({"ok": True, "ms": g.r.randint(1, 900)}),
                   g.phone("intl"))

    table("""CREATE TABLE events (id bigserial PRIMARY KEY, occurred_at timestamptz, kind text,
             source text, user_agent text, payload jsonb, callback text)""",
          "events", events(), "occurred_at, kind, source, user_agent, payload, callback")

    def products() -> Iterator[tuple[Any, ...]]:
        for i in range(120):
            name = PRODUCTS[i % len(PRODUCTS)] + f" v{i // len(PRODUCTS) + 1}"
            yield (name, f"SKU-{10_000 + i}", round(g.r.uniform(3, 400), 2),
                   f"{name}: durable, tested and shipped in recycled packaging.",
                   g.pick("home office outdoor kitchen"),
                   hashlib.sha256(name.encode()).hexdigest(), str(g.r.getrandbits(128)))

    table("""CREATE TABLE products (id serial PRIMARY KEY, name text, sku text, price numeric,
             description text, category text, checksum text, image_ref text)""",
          "products", products(), "name, sku, price, description, category, checksum, image_ref")

    def employees() -> Iterator[tuple[Any, ...]]:
        for i in range(150):
            lang = g.pick(list(FIRST))
            f, l_ = g.first(lang), g.last(lang)
            yield (f"{f} {l_}", g.email(f, l_), dt.date(2010, 1, 1) + dt.timedelta(
                days=g.r.randint(0, 5000)), g.r.randint(1, 20), round(g.r.uniform(30e3, 150e3)),
                f"B-{1000 + i}")

    table("""CREATE TABLE employees (id serial PRIMARY KEY, name text, "workEmail" text,
             hired_on date, manager_id int, salary numeric, badge_code text)""",
          "employees", employees(), 'name, "workEmail", hired_on, manager_id, salary, badge_code')

    conn.execute("CREATE SCHEMA crm")

    def leads() -> Iterator[tuple[Any, ...]]:
        for _ in range(ROWS):
            lang = g.pick(list(FIRST))
            f, l_ = g.first(lang), g.last(lang)
            yield (f"{f} {l_}", g.email(f, l_), g.phone(g.pick("us de fr es it nl".split())),
                   g.pick(["Acme GmbH", "Globex SA", "Initech BV", "Umbrella SpA", "Hooli Ltd"]),
                   g.pick("web referral ads event"), g.r.randint(0, 100),
                   round(g.r.uniform(36, 60), 6), round(g.r.uniform(-9, 20), 6))

    table("""CREATE TABLE crm.leads (id serial PRIMARY KEY, full_name text, e_mail text,
             mobile text, company text, lead_source text, score int, geo_lat double precision,
             geo_lng double precision)""",
          "crm.leads", leads(), "full_name, e_mail, mobile, company, lead_source, score, "
          "geo_lat, geo_lng")

    def legacy() -> Iterator[tuple[Any, ...]]:
        for i in range(ROWS):
            yield (g.ssn(), g.jwt(), g.bcrypt(), keys[i % len(keys)], g.phone("intl"),
                   f"PRD-{g.r.randint(100, 999)}-{g.pick('ABCDEF')}", f"{g.r.uniform(0, 999):.2f}",
                   (dt.date(2015, 1, 1) + dt.timedelta(days=g.r.randint(0, 3000))).isoformat())

    table("""CREATE TABLE legacy_import (col_a text, col_b text, col_c text, col_d text,
             col_e text, col_f text, col_g text, col_h text)""",
          "legacy_import", legacy(), "col_a, col_b, col_c, col_d, col_e, col_f, col_g, col_h")

    def tickets() -> Iterator[tuple[Any, ...]]:
        for _ in range(ROWS):
            f, l_ = g.first("fr"), g.last("fr")
            yield (g.pick(["Delivery", "Refund", "Invoice", "Account"]),
                   g.pick(["Bonjour, merci de me rappeler au {p} ou d'écrire à {e}.",
                           "Please call me back on {p}, or email {e}. Thanks!",
                           "My new address for invoices is {e}"]).format(
                       p=g.phone("fr"), e=g.email(f, l_)),
                   created(), g.pick("low normal high"))

    table("""CREATE TABLE support_tickets (id serial PRIMARY KEY, subject text, body text,
             opened_at timestamptz, priority text)""",
          "support_tickets", tickets(), "subject, body, opened_at, priority")

    def payouts() -> Iterator[tuple[Any, ...]]:
        for _ in range(ROWS):
            yield (g.last(g.pick(list(LAST))), g.ssn().replace("-", ""),
                   round(g.r.uniform(10, 5000), 2))

    table("""CREATE TABLE payouts (id serial PRIMARY KEY, holder text, ref_no text,
             amount numeric)""", "payouts", payouts(), "holder, ref_no, amount")

    def profiles() -> Iterator[tuple[Any, ...]]:
        for _ in range(ROWS):
            f, l_ = g.first("nl"), g.last("nl")
            yield (json.dumps({"name": f"{f} {l_}", "email": g.email(f, l_),
                               "phone": g.phone("nl")}), created())

    table("""CREATE TABLE profiles (id serial PRIMARY KEY, profile jsonb,
             updated_at timestamptz)""", "profiles", profiles(), "profile, updated_at")

    table("""CREATE TABLE app_settings (id serial PRIMARY KEY, support_email text,
             maintenance boolean)""", "app_settings",
          iter([("support@acme-shop.example", False)]), "support_email, maintenance")

    def warehouses() -> Iterator[tuple[Any, ...]]:
        for city in CITIES["nl"].split() + CITIES["de"].split():
            yield (f"Warehouse {city}", round(g.r.uniform(47, 54), 5),
                   round(g.r.uniform(4, 14), 5), g.r.randint(500, 9000))

    table("""CREATE TABLE warehouses (id serial PRIMARY KEY, name text, latitude numeric,
             longitude numeric, capacity int)""", "warehouses", warehouses(),
          "name, latitude, longitude, capacity")

    conn.execute("CREATE SCHEMA pgwarden_state")

    def internal() -> Iterator[tuple[Any, ...]]:
        for _ in range(50):
            f, l_ = g.first("en"), g.last("en")
            yield (g.email(f, l_),)

    table("CREATE TABLE pgwarden_state.notify_targets (email text)",
          "pgwarden_state.notify_targets", internal(), "email")
    conn.execute("ANALYZE")
    return values


# -- the test --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded(pg_cluster: PgCluster) -> Iterator[tuple[str, list[str]]]:
    pg_cluster.psql(f"DROP DATABASE IF EXISTS {DB}")
    pg_cluster.psql(f"CREATE DATABASE {DB}")
    dsn = pg_cluster.dsn(DB)
    with psycopg.connect(dsn, autocommit=True) as conn:
        values = _seed(conn)
    yield dsn, values
    pg_cluster.psql(f"DROP DATABASE IF EXISTS {DB}")


def _examined_columns(dsn: str) -> set[tuple[str, str, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns "
            "WHERE table_schema IN ('public', 'crm')").fetchall()
    return {tuple(r) for r in rows}


@pytest.mark.pg
def test_discover_precision_recall_on_seeded_database(
        seeded: tuple[str, list[str]], tmp_path: Path,
        discovery_report: _DiscoveryReport) -> None:
    dsn, values = seeded
    suggestions = tmp_path / "suggestions.yaml"
    proc = subprocess.run([PGWARDEN, "discover", "--dsn", dsn, "--json",
                           "--write-suggestions", str(suggestions)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    findings: dict[tuple[str, str, str], dict[str, Any]] = {}
    for line in proc.stdout.splitlines():
        obj = json.loads(line)
        findings[(obj["schema"], obj["table"], obj["name"])] = obj
        assert set(obj) >= {"column", "class", "confidence", "method", "evidence", "data_type"}
        assert 0.5 <= obj["confidence"] <= 1.0

    all_columns = _examined_columns(dsn)
    assert set(TRUTH) <= all_columns, set(TRUTH) - all_columns
    assert not [k for k in findings if k[0].startswith("pgwarden")], "pgwarden* schema reported"

    flagged = set(findings)
    truth = set(TRUTH)
    tp = flagged & truth
    false_positives = sorted(flagged - truth)
    misses = sorted(truth - flagged)
    wrong_class = sorted(k for k in tp if findings[k]["class"] not in TRUTH[k])
    precision = len(tp) / len(flagged) if flagged else 0.0
    recall = len(tp) / len(truth)
    class_accuracy = (len(tp) - len(wrong_class)) / len(tp) if tp else 0.0

    def name(k: tuple[str, str, str]) -> str:
        return ".".join(k)

    report = [
        f"columns examined: {len(all_columns)}, PII in ground truth: {len(truth)}, "
        f"flagged: {len(flagged)}, decoys: {', '.join(sorted(name(d) for d in DECOYS))}",
        f"precision {precision:.3f} ({len(tp)}/{len(flagged)})   recall {recall:.3f} "
        f"({len(tp)}/{len(truth)})   class accuracy {class_accuracy:.3f}",
        "misses: " + (", ".join(f"{name(k)} ({'/'.join(sorted(TRUTH[k]))})" for k in misses)
                      or "none"),
        "false positives: " + (", ".join(
            f"{name(k)} as {findings[k]['class']} ({'; '.join(findings[k]['evidence'])})"
            for k in false_positives) or "none"),
        "wrong class: " + (", ".join(
            f"{name(k)} as {findings[k]['class']}, expected {'/'.join(sorted(TRUTH[k]))}"
            for k in wrong_class) or "none"),
    ]
    discovery_report.lines.extend(report)
    print("\n".join(report))

    # The decoys of issue 4 are not flagged.
    for decoy in DECOYS:
        assert decoy not in flagged, (decoy, findings.get(decoy))

    assert recall >= 0.9, report
    assert precision >= 0.9, report
    assert class_accuracy >= 0.9, report

    # The suggestions file says the same, keyed by schema.table.column.
    text = suggestions.read_text()
    assert text.startswith("# pgwarden discover suggestions (generated ")
    doc = YAML(typ="safe").load(text)
    suggested = doc["masking"]["columns"]
    assert set(suggested) == {obj["column"] for obj in findings.values()}
    for obj in findings.values():
        assert suggested[obj["column"]] == {"class": obj["class"], "method": obj["method"],
                                            "confidence": obj["confidence"]}

    # No sampled value anywhere: stdout, stderr, suggestions (values of 6+ characters, so
    # that a city or a gender letter does not collide with ordinary words of the report).
    outputs = {"stdout": proc.stdout, "stderr": proc.stderr, "suggestions": text}
    leaked = sorted({(where, value) for value in values if len(value) >= 6
                     for where, out in outputs.items() if value in out})
    assert not leaked, leaked[:10]


@pytest.mark.pg
def test_discover_reads_the_seeded_database_read_only_and_reports_reasons(
        seeded: tuple[str, list[str]]) -> None:
    """--all lists the decoys with the reason they were not flagged (and still no value)."""
    dsn, values = seeded
    proc = subprocess.run([PGWARDEN, "discover", "--dsn", dsn, "--json", "--all",
                           "--schema", "public"], capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    rows = {(o["table"], o["name"]): o for o in map(json.loads, proc.stdout.splitlines())}
    assert {o["schema"] for o in rows.values()} == {"public"}
    status = rows[("customers", "status")]
    assert status["class"] is None and "fixed vocabulary" in status["reason"]
    description = rows[("orders", "description")]
    assert description["class"] is None
    assert rows[("products", "name")]["class"] is None
    assert rows[("accounts", "is_admin")]["reason"].startswith("type boolean")
    assert not [v for v in values if len(v) >= 6 and v in proc.stdout + proc.stderr]
