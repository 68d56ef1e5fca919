"""The PII classes discovery reports, and the masking method suggested by default for each.

A class names what a column holds, not how to hide it; the method is only a suggestion that the
policy file (``masking.columns``) accepts or overrides. Methods, as the masking layer names them:

* ``partial``: keep a small, low-risk part (``j***@example.com``, ``J*** D**``, ``******78``);
* ``redact``: a fixed placeholder of the column's type (for text ``'[redacted]'``-like);
* ``null``: NULL: for values whose shape alone is sensitive or useless once masked (keys, hashes).

The default leans towards showing less (as hoop's default strategy does): ``partial`` only where
the kept part identifies nobody on its own and the rest of the value keeps a result readable.
"""

from __future__ import annotations

# class -> (default masking method, one-line description). Order is the display order.
CLASSES: dict[str, tuple[str, str]] = {
    "person_name": ("partial", "full name of a person"),
    "first_name": ("partial", "given name"),
    "last_name": ("partial", "family name"),
    "email": ("partial", "email address"),
    "phone": ("partial", "telephone or mobile number"),
    "username": ("partial", "login, user name or handle"),
    "address": ("redact", "street address"),
    "postal_code": ("redact", "postal / ZIP code"),
    "city": ("redact", "city or town of a person"),
    "date_of_birth": ("redact", "date of birth"),
    "gender": ("redact", "gender or sex"),
    "geolocation": ("redact", "latitude, longitude or coordinates"),
    "ip_address": ("redact", "IPv4 or IPv6 address"),
    "national_id": ("redact", "national identifier (US SSN, FR NIR, ES DNI, NL BSN, ...)"),
    "tax_id": ("redact", "tax identifier (codice fiscale, CPF, NIF, Steuer-ID, TIN, ...)"),
    "passport": ("redact", "passport number"),
    "driver_license": ("redact", "driving licence number"),
    "iban": ("redact", "IBAN"),
    "bank_account": ("redact", "bank account number (not IBAN-shaped)"),
    "payment_card": ("redact", "payment card number (PAN) or its security code"),
    "secret": ("redact", "API key, access token, JWT or other credential"),
    "password": ("null", "password in clear"),
    "password_hash": ("null", "password hash"),
    "private_key": ("null", "private key (PEM, OpenSSH, PGP)"),
}

DEFAULT_METHOD: dict[str, str] = {name: method for name, (method, _) in CLASSES.items()}
DESCRIPTION: dict[str, str] = {name: text for name, (_, text) in CLASSES.items()}
