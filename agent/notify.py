"""The notification relay: delivers approval events from the database's outbox to webhooks.

The extension never calls out: each request, approval, denial, grant use and expiry adds a row
to ``pgwarden.approval_event`` (in the transaction that made it, so an event exists if and only
if what it reports happened) and NOTIFYs channel ``pgwarden_approvals`` with the row's id.
This relay LISTENs (and polls, for retries and for anything sent while it was down), posts each
due (event, webhook) pair, and records the outcome per webhook in ``pgwarden.approval_delivery``:
delivered-at, or attempts, the last error and when to retry (exponential backoff up to
`MAX_BACKOFF`). So nothing is lost while a receiver or the relay is down, a database that waits
on nobody, and `pgwarden notify status` / `pgwarden approvals show` show what failed.

Why a relay of its own and not the collector: approvals must work with the database alone
(the collector may be far away, or not run at all), the relay needs nothing but a DSN and
outbound HTTP, and it stays small enough to run next to the database. It can also forward every
event to a collector (`--collector`), which links the refused statement with its approved run
in ``pgwarden session ID``.

Delivery is at least once, made exactly once where it can be: an event is marked delivered only
after a 2xx answer, one relay per database holds an advisory lock (a second one waits), and
every payload carries an idempotency key (``pgwarden:<database>:<event id>``), also in the
``X-Pgwarden-Idempotency-Key`` header, for the rare resend after a crash between the answer and
the mark. Payloads (docs/approvals.md):

* ``json``: the event as JSON, signed: ``X-Pgwarden-Signature: sha256=<hex HMAC-SHA256 of the
  body with the webhook's secret>``;
* ``slack``: a Slack incoming-webhook message (``text`` + ``blocks``);
* ``collector``: a one-event ingest batch (docs/events.md, event ``approval``), batch_seq =
  event id, so the collector drops a resent one itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import socket
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import msgpack
import psycopg

from agent.db.conn import DbError, server_error

KINDS = ("json", "slack", "collector")
CHANNEL = "pgwarden_approvals"
LOCK_KEY = 7078712120  # pg_advisory_lock: one relay per database
MAX_BACKOFF = 30.0
log = logging.getLogger("pgwarden.notify")


@dataclass(frozen=True)
class Webhook:
    """Where to deliver: `kind` json (signed with `secret`), slack, or collector (`secret` is
    its bearer token)."""

    name: str
    kind: str
    url: str
    secret: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "collector" and not self.url.rstrip("/").endswith("/v1/ingest"):
            # like the agent's --collector: the collector's base URL
            object.__setattr__(self, "url", self.url.rstrip("/") + "/v1/ingest")
        if self.kind not in KINDS:
            raise ValueError(f"webhook {self.name}: kind must be one of {', '.join(KINDS)}")
        if not self.name or ":" in self.name:
            raise ValueError(f"webhook name {self.name!r}: non-empty, without ':'")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"webhook {self.name}: {self.url!r} is not an http(s) URL")
        if self.kind in ("json", "collector") and not self.secret:
            raise ValueError(f"webhook {self.name}: a {self.kind} webhook needs a secret "
                             "(HMAC key, or the collector's token)")

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.kind}"


def sign(secret: str, body: bytes) -> str:
    """The X-Pgwarden-Signature header value for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff(attempts: int) -> float:
    """Seconds before attempt `attempts + 1`: 1, 2, 4, ... up to MAX_BACKOFF, with jitter so
    that many failing events do not retry in lockstep."""
    return min(MAX_BACKOFF, 2.0 ** max(0, attempts - 1)) * random.uniform(0.8, 1.0)


def render(hook: Webhook, event_id: int, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of one delivery."""
    key = f"pgwarden:{payload['database']}:{event_id}"
    headers = {"X-Pgwarden-Event": payload["event"], "X-Pgwarden-Idempotency-Key": key}
    if hook.kind == "collector":
        return _collector_batch(payload, event_id), {
            **headers, "Content-Type": "application/msgpack",
            "Authorization": f"Bearer {hook.secret}"}
    doc = {"idempotency_key": key, "event_id": event_id, **payload}
    if hook.kind == "slack":
        doc = _slack(payload, key)
    body = json.dumps(doc, separators=(",", ":"), default=str).encode()
    headers["Content-Type"] = "application/json"
    if hook.secret:
        headers["X-Pgwarden-Signature"] = sign(hook.secret, body)
    return body, headers


def _slack(payload: dict[str, Any], key: str) -> dict[str, Any]:
    r = payload["request"]
    verb = {"approval.requested": "needs approval", "approval.approved": "approved",
            "approval.denied": "denied"}.get(payload["event"], payload["event"])
    rows = "?" if r["rows"] is None else r["rows"]
    sample = r.get("key_sample") or []
    keys = ", ".join(json.dumps(k[0] if isinstance(k, list) and len(k) == 1 else k)
                     for k in sample[:10])
    text = (f"pgwarden approval request {r['id']} {verb}: {r['op']} on {r['object']} by "
            f"{r['requester']} ({r.get('identity') or 'unattested'}), {rows} row(s)")
    lines = [f"*{text}*", f"Rule `{r['rule']}`: {r['reason']}", f"```{r['statement']}```",
             f"Keys ({', '.join(r.get('key_columns') or []) or 'none'}): {keys or '-'}"]
    if r.get("reviewer"):
        lines.append(f"Reviewed by {r['reviewer']} ({r.get('reviewer_os_user') or '?'})"
                     + (f": {r['comment']}" if r.get("comment") else ""))
    if payload["event"] == "approval.requested":
        lines.append(f"Review: `pgwarden approvals show {r['id']}` then "
                     f"`pgwarden approvals approve {r['id']}` or `deny {r['id']} --reason ...`")
    return {"text": text, "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"idempotency key {key}"}]},
    ]}


def _us(ts: str | None) -> int | None:
    return None if not ts else int(datetime.fromisoformat(ts).timestamp() * 1_000_000)


def _collector_batch(payload: dict[str, Any], event_id: int) -> bytes:
    r = payload["request"]
    event = {
        "type": "approval", "ts_us": _us(payload.get("at")) or _us(r["created_at"]),
        "request_id": r["id"], "event": payload["event"].removeprefix("approval."),
        "database": payload["database"], "status": r["status"], "rule": r["rule"],
        "op": r["op"], "object": r["object"], "statement": r["statement"],
        "fingerprint": r["fingerprint"], "requester": r["requester"],
        "identity": r.get("identity"), "reviewer": r.get("reviewer"), "rows": r["rows"],
        "requester_pid": r["pid"], "requester_backend_start_us": _us(r["backend_start"]),
        "used_pid": r.get("used_pid"), "used_backend_start_us": _us(r.get("used_backend_start")),
        "used_at_us": _us(r.get("used_at"))}
    batch = {"schema_version": 1, "batch_seq": event_id,
             "agent": {"agent_id": f"pgwarden-approvals/{payload['database']}",
                       "host": socket.gethostname()},
             "events": [{k: v for k, v in event.items() if v is not None}]}
    return msgpack.packb(batch)


class Relay:
    """Deliver due events to `webhooks` until `stop` is set (see module docstring)."""

    def __init__(self, dsn: str, webhooks: list[Webhook], poll: float = 5.0,
                 timeout: float = 10.0) -> None:
        if not webhooks:
            raise ValueError("no webhook configured")
        if len({w.name for w in webhooks}) != len(webhooks):
            raise ValueError("webhook names must be unique")
        self.dsn, self.webhooks, self.poll = dsn, webhooks, poll
        self.by_name = {w.name: w for w in webhooks}
        # connect errors are retried at once by httpx; everything else waits for the backoff
        self.http = httpx.Client(timeout=timeout, transport=httpx.HTTPTransport(retries=1))

    def run(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                self._serve(stop)
            except (psycopg.OperationalError, DbError) as e:
                log.warning("database unavailable (%s); retrying in %.0f s", e, self.poll)
                stop.wait(self.poll)

    def _serve(self, stop: threading.Event) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not conn.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone()[0]:
                log.info("another relay serves this database; waiting")
                if stop.wait(self.poll):
                    return
            conn.execute(f"LISTEN {CHANNEL}")
            while not stop.is_set():
                conn.execute("SELECT pgwarden.expire_approvals()")
                while self.deliver_due(conn) and not stop.is_set():
                    pass
                # wake up on a NOTIFY (its payload is ignored: the outbox is the truth), or
                # after `poll` seconds for retries
                for _ in conn.notifies(timeout=self.poll, stop_after=1):
                    pass

    def deliver_due(self, conn: psycopg.Connection) -> int:
        """One pass over due (event, webhook) pairs; returns how many were attempted."""
        try:
            due = conn.execute(
                "SELECT event_id, webhook, attempts, payload FROM pgwarden.approval_outbox(%s)",
                [[w.spec for w in self.webhooks]]).fetchall()
        except psycopg.Error as e:
            raise DbError(f"reading the outbox: {server_error(e)}") from None
        for event_id, name, attempts, payload in due:
            hook = self.by_name[name]
            ok, status, error = self._post(hook, event_id, payload)
            conn.execute("SELECT pgwarden.approval_delivered(%s, %s, %s, %s, %s, %s)",
                         [event_id, name, ok, status, error,
                          None if ok else backoff(attempts + 1)])
            if ok:
                log.info("delivered event %s (%s) to %s", event_id, payload["event"], name)
            else:
                log.warning("event %s to %s failed (attempt %d): %s", event_id, name,
                            attempts + 1, error)
        return len(due)

    def _post(self, hook: Webhook, event_id: int,
              payload: dict[str, Any]) -> tuple[bool, int | None, str | None]:
        body, headers = render(hook, event_id, payload)
        try:
            resp = self.http.post(hook.url, content=body, headers=headers)
        except httpx.HTTPError as e:
            return False, None, f"{type(e).__name__}: {e}"[:500]
        if 200 <= resp.status_code < 300:
            return True, resp.status_code, None
        return False, resp.status_code, f"HTTP {resp.status_code}: {resp.text[:200]}"

    def close(self) -> None:
        self.http.close()


def status(dsn: str, webhooks: list[str]) -> list[dict[str, Any]]:
    """Per webhook ("name:kind"): delivered, pending, failing, oldest pending, last error."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            cur = conn.execute("SELECT * FROM pgwarden.notify_status(%s)", [webhooks])
            cols = [d.name for d in cur.description or []]
            return [dict(zip(cols, r)) for r in cur.fetchall()]
    except psycopg.Error as e:
        raise DbError(f"reading delivery status: {server_error(e)}") from None
