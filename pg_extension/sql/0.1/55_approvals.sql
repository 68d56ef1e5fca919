-- == approvals: just-in-time requests, reviews, one-time grants, notification outbox ==========
--
-- A rule whose action is `approve` refuses the statement with SQLSTATE PW002 and an approval
-- request, written through dblink so that it survives the rollback (pgwarden_ext/approvals.py,
-- docs/approvals.md). A reviewer approves it (pgwarden.approve); the requester's next run of the
-- same statement, by the same principal, touching the same rows, consumes the grant in its own
-- transaction (so a rolled-back run does not use it up) and goes through, once.
-- Every step is a ledger record; requests, approvals and denials also go to an outbox that the
-- notification relay (`pgwarden notify run`) delivers to webhooks: the database never waits on
-- HTTP.

CREATE TABLE pgwarden.approval_request (
  id                 bigserial PRIMARY KEY,
  status             text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'used')),
  created_at         timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
  expires_at         timestamptz NOT NULL,
  -- who: the principal the grant is bound to (session_user and attested identity)
  requester          name NOT NULL,
  identity           text,
  requester_role     name,
  pid                integer,
  backend_start      timestamptz,
  application_name   text,
  client_addr        text,
  -- what and where
  rule               text NOT NULL,
  op                 text NOT NULL,
  object_type        text,
  object             text NOT NULL,
  reason             text,
  statement          text NOT NULL,
  fingerprint        text NOT NULL,
  policy_version     integer,
  -- impact: rows, their keys (never other values), the hash the grant is bound to
  rows               bigint,
  key_columns        text[],
  keys               text,
  key_sample         jsonb,
  effect             text NOT NULL,
  -- review
  reviewer           name,
  reviewer_os_user   text,
  reviewed_at        timestamptz,
  comment            text,
  -- the one-time grant
  grant_expires_at   timestamptz,
  uses_left          integer NOT NULL DEFAULT 0 CHECK (uses_left >= 0),
  used_at            timestamptz,
  used_pid           integer,
  used_backend_start timestamptz,
  used_xid           text
);
COMMENT ON TABLE pgwarden.approval_request IS
  'Approval requests and their one-time grants (docs/approvals.md); keys is the JSON array of the primary keys of the rows the statement would change (NULL above 100,000 rows or without a primary key), effect the SHA-256 a grant is bound to';
-- identical re-submissions while pending reuse the request
CREATE UNIQUE INDEX approval_request_pending ON pgwarden.approval_request
  (requester, (coalesce(identity, '')), rule, op, object, fingerprint, effect)
  WHERE status = 'pending';
CREATE INDEX approval_request_grants ON pgwarden.approval_request
  (requester, fingerprint, effect) WHERE status = 'approved';

CREATE TABLE pgwarden.approval_event (
  id         bigserial PRIMARY KEY,
  request_id bigint NOT NULL REFERENCES pgwarden.approval_request,
  event      text NOT NULL CHECK (event IN ('requested', 'approved', 'denied', 'used', 'expired')),
  at         timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
  payload    jsonb NOT NULL
);
COMMENT ON TABLE pgwarden.approval_event IS
  'The notification outbox: one row per request event, its payload as it was then; the relay delivers requested, approved and denied events to webhooks (and every event to a collector)';

CREATE TABLE pgwarden.approval_delivery (
  event_id        bigint NOT NULL REFERENCES pgwarden.approval_event,
  webhook         text NOT NULL,
  attempts        integer NOT NULL DEFAULT 0,
  delivered_at    timestamptz,
  last_attempt_at timestamptz,
  next_attempt_at timestamptz,
  last_status     integer,
  last_error      text,
  PRIMARY KEY (event_id, webhook)
);
COMMENT ON TABLE pgwarden.approval_delivery IS
  'Delivery of each outbox event to each webhook the relay serves: attempts, the last failure, when to retry, when delivered';

SELECT pg_catalog.pg_extension_config_dump('pgwarden.approval_request', '');
SELECT pg_catalog.pg_extension_config_dump('pgwarden.approval_event', '');
SELECT pg_catalog.pg_extension_config_dump('pgwarden.approval_delivery', '');

CREATE FUNCTION pgwarden._approval_request(fields jsonb, records jsonb) RETURNS jsonb
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
# Runs in the autonomous (dblink) session and commits at once: create the request, or reuse
# the pending identical one; stage its ledger records; queue the 'requested' event.
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import approvals
return approvals.create(plpy, GD, fields, records)
$$;

CREATE FUNCTION pgwarden._review(id bigint, approve boolean, text text, os_user text)
RETURNS jsonb
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import approvals
return approvals.review(plpy, GD, id, approve, text, os_user)
$$;

CREATE FUNCTION pgwarden.approve(id bigint, comment text DEFAULT NULL,
                                 os_user text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- (PL/pgSQL around PL/Python so that refusals are plain errors: SQLSTATE, message)
DECLARE
  r jsonb := pgwarden._review(id, true, comment, os_user);
BEGIN
  IF r ? 'sqlstate' THEN
    PERFORM pgwarden._raise(r);
  END IF;
  RETURN r;
END $$;
COMMENT ON FUNCTION pgwarden.approve(bigint, text, text) IS
  'Approve a pending request (reviewers of the policy, else pgwarden admins; never the requester): a one-time grant';

CREATE FUNCTION pgwarden.deny(id bigint, reason text, os_user text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  r jsonb := pgwarden._review(id, false, reason, os_user);
BEGIN
  IF r ? 'sqlstate' THEN
    PERFORM pgwarden._raise(r);
  END IF;
  RETURN r;
END $$;
COMMENT ON FUNCTION pgwarden.deny(bigint, text, text) IS
  'Deny a pending request, with a reason (reviewers of the policy, else pgwarden admins)';

CREATE FUNCTION pgwarden.approval_requests(status text DEFAULT NULL, id bigint DEFAULT NULL)
RETURNS SETOF jsonb
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import approvals
return approvals.requests(plpy, GD, status, id)
$$;
COMMENT ON FUNCTION pgwarden.approval_requests(text, bigint) IS
  'Requests (newest first), with events and deliveries when one id is asked for: all of them for reviewers and pgwarden admins, their own for everyone else';

CREATE FUNCTION pgwarden.expire_approvals() RETURNS integer
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import approvals
return approvals.expire(plpy, GD)
$$;
COMMENT ON FUNCTION pgwarden.expire_approvals() IS
  'Mark pending requests and unused grants past their time as expired (ledger records, events); returns how many';

CREATE FUNCTION pgwarden.approval_outbox(webhooks text[], max_events integer DEFAULT 100)
RETURNS TABLE (event_id bigint, webhook text, event text, attempts integer, payload jsonb)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  -- For the relay: (event, webhook) pairs not delivered yet and due, oldest first. `webhooks`
  -- are "name:kind" (kind json, slack or collector): webhooks get requested, approved and
  -- denied events, a collector every event.
  SELECT e.id, split_part(w, ':', 1), e.event, coalesce(d.attempts, 0), e.payload
    FROM unnest(webhooks) AS w
    JOIN pgwarden.approval_event e
      ON split_part(w, ':', 2) = 'collector' OR e.event IN ('requested', 'approved', 'denied')
    LEFT JOIN pgwarden.approval_delivery d
      ON d.event_id = e.id AND d.webhook = split_part(w, ':', 1)
   WHERE d.delivered_at IS NULL
     AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= clock_timestamp())
   ORDER BY e.id, 2
   LIMIT max_events
$$;

CREATE FUNCTION pgwarden.approval_delivered(event_id bigint, webhook text, ok boolean,
                                            status integer, error text,
                                            retry_in_seconds double precision)
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  -- For the relay: the outcome of one attempt (delivered, or when to try again and why not).
  INSERT INTO pgwarden.approval_delivery AS d (event_id, webhook, attempts, delivered_at,
                                               last_attempt_at, next_attempt_at, last_status,
                                               last_error)
  VALUES (event_id, webhook, 1, CASE WHEN ok THEN clock_timestamp() END, clock_timestamp(),
          CASE WHEN NOT ok THEN clock_timestamp() + make_interval(secs => retry_in_seconds) END,
          status, CASE WHEN NOT ok THEN error END)
  ON CONFLICT ON CONSTRAINT approval_delivery_pkey DO UPDATE
     SET attempts = d.attempts + 1, delivered_at = EXCLUDED.delivered_at,
         last_attempt_at = EXCLUDED.last_attempt_at, next_attempt_at = EXCLUDED.next_attempt_at,
         last_status = EXCLUDED.last_status,
         last_error = coalesce(EXCLUDED.last_error, d.last_error)
   WHERE d.delivered_at IS NULL
$$;

CREATE FUNCTION pgwarden.notify_status(webhooks text[])
RETURNS TABLE (webhook text, delivered bigint, pending bigint, failing bigint,
               oldest_pending timestamptz, last_error text, last_attempt_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  -- For `pgwarden notify status`: per webhook, what was delivered, what waits (failing: at
  -- least one failed attempt) and the last error.
  SELECT split_part(w, ':', 1),
         count(*) FILTER (WHERE d.delivered_at IS NOT NULL),
         count(*) FILTER (WHERE d.delivered_at IS NULL),
         count(*) FILTER (WHERE d.delivered_at IS NULL AND d.attempts > 0),
         min(e.at) FILTER (WHERE d.delivered_at IS NULL),
         (array_agg(d.last_error ORDER BY d.last_attempt_at DESC NULLS LAST)
            FILTER (WHERE d.last_error IS NOT NULL AND d.delivered_at IS NULL))[1],
         max(d.last_attempt_at)
    FROM unnest(webhooks) AS w
    JOIN pgwarden.approval_event e
      ON split_part(w, ':', 2) = 'collector' OR e.event IN ('requested', 'approved', 'denied')
    LEFT JOIN pgwarden.approval_delivery d
      ON d.event_id = e.id AND d.webhook = split_part(w, ':', 1)
   GROUP BY 1
   ORDER BY 1
$$;
