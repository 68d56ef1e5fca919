-- == ledger =====================================================================================

CREATE TABLE pgwarden.ledger_staging (
  id      bigserial PRIMARY KEY,
  payload text NOT NULL
);
COMMENT ON TABLE pgwarden.ledger_staging IS
  'Records waiting for the chainer (pgwarden.chain_pending); never locked by user transactions beyond their own inserts';

CREATE TABLE pgwarden.ledger (
  seq        bigint PRIMARY KEY,
  payload    text NOT NULL,
  prev_hash  bytea NOT NULL,
  hash       bytea NOT NULL,
  chained_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
COMMENT ON TABLE pgwarden.ledger IS
  'Hash chain: hash = sha256(prev_hash || convert_to(seq::text || E''\n'' || payload, ''UTF8'')), prev_hash of seq 1 = 32 zero bytes';

CREATE TABLE pgwarden.ledger_head (
  only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  seq      bigint NOT NULL DEFAULT 0,
  hash     bytea NOT NULL DEFAULT pg_catalog.decode(pg_catalog.repeat('00', 32), 'hex')
);
INSERT INTO pgwarden.ledger_head DEFAULT VALUES;

SELECT pg_catalog.pg_extension_config_dump('pgwarden.settings', '');
SELECT pg_catalog.pg_extension_config_dump('pgwarden.policy', '');
SELECT pg_catalog.pg_extension_config_dump('pgwarden.ledger', '');
SELECT pg_catalog.pg_extension_config_dump('pgwarden.ledger_head', '');
SELECT pg_catalog.pg_extension_config_dump('pgwarden.ledger_staging', '');

CREATE FUNCTION pgwarden.tg_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  RAISE EXCEPTION 'pgwarden: % on %.% refused: the ledger is append-only', TG_OP,
    TG_TABLE_SCHEMA, TG_TABLE_NAME
    USING ERRCODE = 'PW001', CONSTRAINT = 'guard_integrity', SCHEMA = TG_TABLE_SCHEMA,
          TABLE = TG_TABLE_NAME;
END $$;

CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON pgwarden.ledger
  FOR EACH ROW EXECUTE FUNCTION pgwarden.tg_append_only();
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON pgwarden.ledger
  FOR EACH STATEMENT EXECUTE FUNCTION pgwarden.tg_append_only();
ALTER TABLE pgwarden.ledger ENABLE ALWAYS TRIGGER append_only;
ALTER TABLE pgwarden.ledger ENABLE ALWAYS TRIGGER append_only_truncate;

CREATE FUNCTION pgwarden.chain_pending(max_rows integer DEFAULT 10000) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- The chainer: moves up to max_rows staged records into the hash chain, in staging order, and
-- returns how many. A single chainer at a time (transaction-level advisory lock, tried, never
-- waited for: a concurrent call returns 0), so user transactions never wait on the chain head.
DECLARE
  head record;
  r record;
  h bytea;
  n bigint := 0;
BEGIN
  IF NOT pg_try_advisory_xact_lock(7078712119) THEN
    RETURN 0;
  END IF;
  SELECT seq, hash INTO head FROM pgwarden.ledger_head FOR UPDATE;
  FOR r IN SELECT id, payload FROM pgwarden.ledger_staging ORDER BY id LIMIT max_rows
           FOR UPDATE SKIP LOCKED LOOP
    head.seq := head.seq + 1;
    h := sha256(head.hash || convert_to(head.seq::text || E'\n' || r.payload, 'UTF8'));
    INSERT INTO pgwarden.ledger (seq, payload, prev_hash, hash)
      VALUES (head.seq, r.payload, head.hash, h);
    DELETE FROM pgwarden.ledger_staging WHERE id = r.id;
    head.hash := h;
    n := n + 1;
  END LOOP;
  IF n > 0 THEN
    UPDATE pgwarden.ledger_head SET seq = head.seq, hash = head.hash;
  END IF;
  RETURN n;
END $$;

CREATE FUNCTION pgwarden.head(OUT seq bigint, OUT hash text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT seq, encode(hash, 'hex') FROM pgwarden.ledger_head
$$;

CREATE FUNCTION pgwarden._stage_and_chain(payload text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- Runs in the autonomous (dblink) session: stage one record, commit with it, try to chain.
BEGIN
  INSERT INTO pgwarden.ledger_staging (payload) VALUES (payload);
  RETURN pgwarden.chain_pending(1000);
END $$;

CREATE FUNCTION pgwarden._autonomous_conninfo() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT s.value || ' dbname=''' || replace(replace(current_database(), '\', '\\'), '''', '\''')
         || ''' application_name=pgwarden_ledger'
         || ' options=''-c lock_timeout=5s -c statement_timeout=30s'''
    FROM pgwarden.settings s WHERE s.name = 'autonomous_conninfo'
$$;

