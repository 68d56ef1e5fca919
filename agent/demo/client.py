"""A small, ordinary psycopg 3 program: the kind of service pgwarden watches without changing it.

Uses bind parameters (text and binary), a prepared statement and a transaction, over TCP.
Run as `python -m agent.demo.client DSN`.
"""

from __future__ import annotations

import sys

import psycopg


def main(dsn: str) -> None:
    with psycopg.connect(dsn, application_name="billing-service") as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT id, email FROM customers WHERE id = %s", (2,))
            cur.execute("SELECT count(*) FROM orders WHERE amount > %s AND customer_id = %s",
                        (10, 1), binary=True)
            for amount in (5, 15, 25):
                cur.execute("INSERT INTO orders (customer_id, amount) VALUES (%s, %s)",
                            (3, amount), prepare=True)
        conn.commit()


if __name__ == "__main__":
    main(sys.argv[1])
