"""Zero-config PII discovery: which columns hold personal data or secrets, and why.

Library API (standard library only, so PL/Python inside the server can import it too)::

    from agent.pii import classify_column, discover

    classify_column("cust_email_addr", "text", sampled_values)  # -> Finding | None
    discover(psycopg_connection, schemas=["public"], sample=100)  # -> Discovery

`classify_column` judges one column from its name (a multilingual dictionary, `names`), its type
and sampled values (validators with check digits, `validators`), with the rules of `classify`.
`discover` lists the user tables of a database, samples each candidate column without reading
whole tables, and classifies them; it needs psycopg 3, imported only when it is called.
Neither ever returns, logs or stores a sampled value: findings carry counts and reasons.
"""

from __future__ import annotations

from .classes import CLASSES, DEFAULT_METHOD
from .classify import MIN_CONFIDENCE, Assessment, Finding, assess_column, classify_column
from .discover import ColumnResult, Discovery, Progress, discover, suggestions

__all__ = [
    "CLASSES", "DEFAULT_METHOD", "MIN_CONFIDENCE", "Assessment", "ColumnResult", "Discovery",
    "Finding", "Progress", "assess_column", "classify_column", "discover", "suggestions",
]
