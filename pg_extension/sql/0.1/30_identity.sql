-- == identity: what the host agent attests for each backend (docs/identity.md) ==================
--
-- The agent (role pgwarden_agent, created by `pgwarden db install`, LOGIN and nothing else)
-- calls pgwarden.attest(pid, backend_start, identity) when it sees a backend start. The row is
-- keyed by the backend pid and carries PostgreSQL's own backend_start, so a row left behind by
-- an exited backend never applies to a later backend that reuses its pid: every lookup compares
-- it with the looking backend's start. Nothing a session can set (application_name, custom GUCs)
-- is read. No row (or a stale one) means "unattested".

CREATE TABLE pgwarden.attested (
  pid           integer PRIMARY KEY,
  backend_start timestamptz NOT NULL,
  identity      text,
  client        jsonb NOT NULL DEFAULT '{}',
  masked        boolean NOT NULL,
  attested_at   timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
COMMENT ON TABLE pgwarden.attested IS
  'Attested identity of live backends (written only by pgwarden.attest): identity is the service name, else unit:/container:/exe: of the client, NULL when the agent could not attribute it; masked is the identity part of the masking decision';

CREATE TABLE pgwarden.identity_rules (
  only_row          boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  mask_identities   text[] NOT NULL DEFAULT '{}',
  unmask_identities text[] NOT NULL DEFAULT '{}',
  mask_roles        oid[] NOT NULL DEFAULT '{}',
  shared_roles      oid[] NOT NULL DEFAULT '{}',
  masked_columns    text[] NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE pgwarden.identity_rules IS
  'Masking decisions by identity, kept by policy apply: identity patterns as anchored POSIX regexes (unmask wins; "unattested" is masked unless unmasked), the roles masked in every session and the shared roles, and the masked columns (schema.table.column) for the capture link';
INSERT INTO pgwarden.identity_rules DEFAULT VALUES;

CREATE FUNCTION pgwarden._identity_string(client jsonb) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
  -- The identity a policy matches: the service name the agent mapped, else the systemd unit,
  -- the container or the executable of the client; NULL when nothing is known (unattested).
  SELECT coalesce(nullif(client->>'service', ''),
                  'unit:' || nullif(client->>'systemd_unit', ''),
                  'container:' || nullif(client->>'container_id', ''),
                  'exe:' || nullif(client->>'exe', ''))
$$;

CREATE FUNCTION pgwarden._identity_masks(ident text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  -- Whether a session of a shared role with this identity gets masked values: unmask patterns
  -- win, then mask patterns; "unattested" (NULL) is masked unless an unmask pattern names it.
  SELECT CASE WHEN coalesce(ident, 'unattested') ~ ANY (r.unmask_identities) THEN false
              WHEN ident IS NULL THEN true
              ELSE ident ~ ANY (r.mask_identities) END
    FROM pgwarden.identity_rules r
$$;

CREATE FUNCTION pgwarden.attest(pid integer, backend_start timestamptz, identity jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- Called by the host agent (EXECUTE: pgwarden_agent only). `backend_start` is the agent's view
-- of the backend's start (its fork); PostgreSQL's may differ by a little, so up to 2 seconds
-- apart is the same backend. Refused (attested: false, with a reason) when no live client
-- backend of this database has that pid and start: the agent's knowledge is stale (the backend
-- exited, maybe its pid was reused). Rows of exited backends are removed on every call.
-- Returns {attested, reason, identity, session_user, masked, masked_columns}: the masking
-- decision for that backend, for the capture link (docs/events.md, session.attested).
DECLARE
  live record;
  ident text := pgwarden._identity_string(coalesce(identity, '{}'));
  rules record;
  id_masked boolean;
  masked boolean;
BEGIN
  DELETE FROM pgwarden.attested a
   WHERE NOT EXISTS (SELECT FROM pg_stat_get_activity(a.pid) s
                      WHERE s.backend_start = a.backend_start);
  SELECT s.backend_start, s.usesysid, u.rolname, s.datid INTO live
    FROM pg_stat_get_activity(attest.pid) s LEFT JOIN pg_roles u ON u.oid = s.usesysid
   WHERE s.backend_type = 'client backend';
  IF NOT FOUND OR live.backend_start IS NULL THEN
    RETURN jsonb_build_object('attested', false, 'reason', 'no live client backend has this pid');
  END IF;
  IF live.datid IS DISTINCT FROM (SELECT oid FROM pg_database WHERE datname = current_database())
  THEN
    RETURN jsonb_build_object('attested', false,
                              'reason', 'the backend is connected to another database');
  END IF;
  IF abs(extract(epoch FROM live.backend_start - attest.backend_start)) > 2 THEN
    RETURN jsonb_build_object('attested', false,
                              'reason', 'the backend with this pid started at another time');
  END IF;
  id_masked := pgwarden._identity_masks(ident);
  INSERT INTO pgwarden.attested AS a (pid, backend_start, identity, client, masked)
    VALUES (attest.pid, live.backend_start, ident, coalesce(identity, '{}'), id_masked)
    ON CONFLICT ON CONSTRAINT attested_pkey DO UPDATE
      SET backend_start = EXCLUDED.backend_start, identity = EXCLUDED.identity,
          client = EXCLUDED.client, masked = EXCLUDED.masked,
          attested_at = pg_catalog.clock_timestamp();
  SELECT * INTO rules FROM pgwarden.identity_rules;
  masked := live.usesysid = ANY (rules.mask_roles)
            OR (live.usesysid = ANY (rules.shared_roles) AND id_masked);
  RETURN jsonb_build_object(
    'attested', true, 'identity', ident, 'session_user', live.rolname, 'masked', masked,
    'masked_columns', to_jsonb(CASE WHEN masked THEN rules.masked_columns ELSE '{}' END));
END $$;
COMMENT ON FUNCTION pgwarden.attest(integer, timestamptz, jsonb) IS
  'Host agent only: attest the client of backend pid (identity: service, pid, uid, user, exe, cmdline, systemd_unit, container_id); returns the masking decision';

CREATE FUNCTION pgwarden._attested_row() RETURNS pgwarden.attested
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- This backend's row, when it is really this backend's (same start), else NULL.
DECLARE
  r pgwarden.attested;
BEGIN
  SELECT * INTO r FROM pgwarden.attested a WHERE a.pid = pg_backend_pid();
  IF NOT FOUND OR r.backend_start IS DISTINCT FROM
     (SELECT s.backend_start FROM pg_stat_get_activity(pg_backend_pid()) s) THEN
    RETURN NULL;
  END IF;
  RETURN r;
END $$;

CREATE FUNCTION pgwarden.session_identity() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  -- The identity the host agent attested for this backend (see pgwarden._identity_string);
  -- NULL means "unattested", which policies match as identity "unattested".
  SELECT (pgwarden._attested_row()).identity
$$;

CREATE FUNCTION pgwarden.identities(all_databases boolean DEFAULT false)
RETURNS TABLE (pid integer, usename text, datname text, application_name text,
               backend_start timestamptz, client_addr text, attested boolean, identity text,
               client jsonb, attested_at timestamptz, masked boolean, mask_mode text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  -- For `pgwarden identity` (pgwarden_admin): client backends with their attested identity.
  -- masked is the decision masking views make for that backend's session_user (NULL: another
  -- database, whose attestations live there); mask_mode is role (masked in every session),
  -- identity (a shared role: the attested identity decides) or NULL (not governed).
  SELECT s.pid, u.rolname::text, s.datname::text, s.application_name, s.backend_start,
         s.client_addr::text, a.pid IS NOT NULL, a.identity, a.client, a.attested_at,
         CASE WHEN s.datname <> current_database() THEN NULL
              WHEN s.usesysid = ANY (r.mask_roles) THEN true
              WHEN s.usesysid = ANY (r.shared_roles)
                THEN coalesce(a.masked, pgwarden._identity_masks(NULL))
              ELSE false END,
         CASE WHEN s.usesysid = ANY (r.mask_roles) THEN 'role'
              WHEN s.usesysid = ANY (r.shared_roles) THEN 'identity' END
    FROM pg_stat_activity s
    LEFT JOIN pg_roles u ON u.oid = s.usesysid
    LEFT JOIN pgwarden.attested a
      ON a.pid = s.pid AND a.backend_start = s.backend_start
         AND s.datname = current_database()
    CROSS JOIN pgwarden.identity_rules r
   WHERE s.backend_type = 'client backend'
     AND (all_databases OR s.datname = current_database())
   ORDER BY s.backend_start, s.pid
$$;
