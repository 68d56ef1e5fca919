-- pgwarden 0.1: guardrails, a hash-chained audit ledger and policy-as-code.
--
-- Installed by `pgwarden db install` (agent/db/install.py), which first creates the role
-- pgwarden_admin and the dblink extension (schema pgwarden_dblink), copies the Python package
-- pgwarden_ext and a pinned sqlglot to @PYTHON_DIR@, and replaces that token in this file.
-- Released scripts are never edited: changes go to pgwarden--0.1--0.2.sql and so on.
--
-- Layout: catalog tables; ledger; runtime functions (what guard triggers call, EXECUTE for
-- PUBLIC because trigger bodies run as the invoker); trigger functions; admin API (EXECUTE for
-- pgwarden_admin only); event triggers last (ENABLE ALWAYS). Every function pins
-- search_path = pg_catalog, pg_temp. Design notes: docs/extension.md.

\echo Use "CREATE EXTENSION pgwarden" to load this file. \quit

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pgwarden_admin') THEN
    RAISE EXCEPTION 'pgwarden: role pgwarden_admin does not exist'
      USING HINT = 'Install with `pgwarden db install`, which creates it.';
  END IF;
END $$;

-- == catalog ====================================================================================

CREATE TABLE pgwarden.settings (
  name  text PRIMARY KEY,
  value text NOT NULL
);
COMMENT ON TABLE pgwarden.settings IS
  'python_dir: where pgwarden_ext and sqlglot live; autonomous_conninfo: libpq conninfo (without dbname) dblink uses for records that must survive a rollback';
INSERT INTO pgwarden.settings VALUES ('python_dir', '@PYTHON_DIR@'), ('autonomous_conninfo', '');

CREATE TABLE pgwarden.policy (
  version    integer PRIMARY KEY,
  sha256     text NOT NULL,
  git_commit text,
  source     text NOT NULL,
  doc        jsonb NOT NULL,
  applied_by name NOT NULL DEFAULT session_user,
  applied_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
COMMENT ON TABLE pgwarden.policy IS
  'Every applied policy: YAML source, SHA-256 of the source, git commit, canonical document';

CREATE TABLE pgwarden.policy_head (
  only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  version  integer NOT NULL DEFAULT 0,
  epoch    bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE pgwarden.policy_head IS
  'The policy in force (0: none) and an epoch bumped whenever guarded objects change; backends re-read it once per transaction';
INSERT INTO pgwarden.policy_head DEFAULT VALUES;

CREATE TABLE pgwarden.protected (
  classid  regclass NOT NULL,
  objid    oid NOT NULL,
  protect  text NOT NULL,
  via      text NOT NULL CHECK (via IN ('policy', 'pattern', 'partition', 'inheritance')),
  identity text NOT NULL,
  PRIMARY KEY (classid, objid)
);
COMMENT ON TABLE pgwarden.protected IS
  'Objects guarded by the policy (keyed by OID, so renames do not unguard them): relations, schemas, functions';

CREATE TABLE pgwarden.protected_column (
  relid   oid NOT NULL,
  attnum  int2 NOT NULL,
  protect text NOT NULL,
  PRIMARY KEY (relid, attnum)
);

CREATE TABLE pgwarden.guard_trigger (
  tgoid oid PRIMARY KEY,
  relid oid NOT NULL,
  kind  text NOT NULL CHECK (kind IN ('update', 'delete', 'truncate', 'columns'))
);
CREATE INDEX ON pgwarden.guard_trigger (relid);

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

-- == runtime: identity hook =====================================================================

CREATE FUNCTION pgwarden.session_identity() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  -- The identity the host agent attested for this backend (issue 4 replaces this body with a
  -- lookup of (pg_backend_pid(), backend start) in the agent-written identity table).
  -- NULL means "unattested"; policies match it as identity "unattested".
  SELECT NULL::text
$$;

-- == runtime: decisions (PL/Python shims into pgwarden_ext) =====================================

CREATE FUNCTION pgwarden._raise(d jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
-- Raise a decision: SQLSTATE class PW, the rule in the constraint-name field (docs/events.md).
BEGIN
  RAISE EXCEPTION USING ERRCODE = d->>'sqlstate', MESSAGE = d->>'message',
    DETAIL = d->>'detail', HINT = d->>'hint', CONSTRAINT = d->>'rule',
    SCHEMA = coalesce(d->>'schema', ''), TABLE = coalesce(d->>'table', '');
END $$;

CREATE FUNCTION pgwarden._guard_write(relid oid, op text, nrows bigint, cur_user name,
                                      sess_user name, version integer, epoch bigint,
                                      xid text, nested boolean, query text) RETURNS jsonb
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
# The hot path: the caller passes what it read cheaply (policy head, session_user) so that
# this function runs no query unless the policy changed or a rule has something to say.
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import guard
return guard.on_write(plpy, GD, relid, op, nrows, cur_user, xid, nested, query,
                      head=(version, epoch), user=sess_user)
$$;

CREATE FUNCTION pgwarden._guard_truncate(relid oid, cur_user name, xid text, query text)
RETURNS jsonb
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import guard
return guard.on_truncate(plpy, GD, relid, cur_user, xid, query)
$$;

CREATE FUNCTION pgwarden._guard_columns(relid oid, cols text[], cur_user name, xid text,
                                        query text) RETURNS jsonb
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import guard
return guard.on_columns(plpy, GD, relid, cols, cur_user, xid, query)
$$;

CREATE FUNCTION pgwarden._guard_rewrite(relid oid, cur_user name, xid text, query text)
RETURNS jsonb
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import guard
return guard.on_rewrite(plpy, GD, relid, cur_user, xid, query)
$$;

CREATE FUNCTION pgwarden._guard_sql_drop(objects jsonb, cur_user name, tag text, xid text,
                                         query text) RETURNS jsonb
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import guard
return guard.on_sql_drop(plpy, GD, objects, cur_user, tag, xid, query)
$$;

CREATE FUNCTION pgwarden._guard_ddl_end(commands jsonb, cur_user name, tag text, xid text,
                                        query text) RETURNS jsonb
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import guard
return guard.on_ddl_end(plpy, GD, commands, cur_user, tag, xid, query)
$$;

-- == trigger functions (fired without EXECUTE privilege; run as the invoker) ===================

CREATE FUNCTION pgwarden.tg_write() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
-- AFTER UPDATE / AFTER DELETE ... FOR EACH STATEMENT, REFERENCING OLD TABLE AS pgwarden_old.
-- Counts the rows really changed; PG_CONTEXT has more than this frame when the statement ran
-- inside a function, procedure or DO block (then the client's text does not show it).
DECLARE
  n bigint;
  ctx text;
  h record;
  d jsonb;
BEGIN
  SELECT count(*) INTO n FROM pgwarden_old;
  IF n > 0 THEN
    GET DIAGNOSTICS ctx = PG_CONTEXT;
    SELECT version, epoch INTO h FROM pgwarden.policy_head;
    d := pgwarden._guard_write(TG_RELID, TG_OP, n, current_user, session_user, h.version,
                               h.epoch, pg_current_xact_id_if_assigned()::text,
                               strpos(ctx, E'\n') > 0, current_query());
    IF d IS NOT NULL THEN
      PERFORM pgwarden._raise(d);
    END IF;
  END IF;
  RETURN NULL;
END $$;

CREATE FUNCTION pgwarden.tg_truncate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  d jsonb;
BEGIN
  d := pgwarden._guard_truncate(TG_RELID, current_user, pg_current_xact_id_if_assigned()::text,
                                current_query());
  IF d IS NOT NULL THEN
    PERFORM pgwarden._raise(d);
  END IF;
  RETURN NULL;
END $$;

CREATE FUNCTION pgwarden.tg_columns() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
-- BEFORE UPDATE OF <protected columns> FOR EACH ROW; TG_ARGV holds the column names. Fires only
-- when the UPDATE names one of them; decides only when a value really changes.
DECLARE
  o jsonb := to_jsonb(OLD);
  nw jsonb := to_jsonb(NEW);
  col text;
  changed text[] := '{}';
  d jsonb;
BEGIN
  FOREACH col IN ARRAY TG_ARGV LOOP
    IF o -> col IS DISTINCT FROM nw -> col THEN
      changed := changed || col;
    END IF;
  END LOOP;
  IF cardinality(changed) > 0 THEN
    d := pgwarden._guard_columns(TG_RELID, changed, current_user,
                                 pg_current_xact_id_if_assigned()::text, current_query());
    IF d IS NOT NULL THEN
      PERFORM pgwarden._raise(d);
    END IF;
  END IF;
  RETURN NEW;
END $$;

CREATE FUNCTION pgwarden.et_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  objs jsonb;
  d jsonb;
BEGIN
  SELECT jsonb_agg(jsonb_build_object(
           'classid', classid::regclass::text, 'objid', objid::bigint, 'objsubid', objsubid,
           'type', object_type, 'schema', schema_name, 'name', object_name,
           'identity', object_identity, 'original', original))
    INTO objs FROM pg_event_trigger_dropped_objects()
   WHERE NOT coalesce(is_temporary, false);
  IF objs IS NOT NULL THEN
    d := pgwarden._guard_sql_drop(objs, current_user, tg_tag,
                                  pg_current_xact_id_if_assigned()::text, current_query());
    IF d IS NOT NULL THEN
      PERFORM pgwarden._raise(d);
    END IF;
  END IF;
END $$;

CREATE FUNCTION pgwarden.et_ddl_end() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  cmds jsonb;
  d jsonb;
BEGIN
  SELECT jsonb_agg(jsonb_build_object(
           'classid', classid::regclass::text, 'objid', objid::bigint, 'objsubid', objsubid,
           'tag', command_tag, 'type', object_type, 'schema', schema_name,
           'identity', object_identity))
    INTO cmds FROM pg_event_trigger_ddl_commands()
   WHERE schema_name IS NULL OR schema_name !~ '^pg_temp';
  IF cmds IS NOT NULL THEN
    d := pgwarden._guard_ddl_end(cmds, current_user, tg_tag,
                                 pg_current_xact_id_if_assigned()::text, current_query());
    IF d IS NOT NULL THEN
      PERFORM pgwarden._raise(d);
    END IF;
  END IF;
END $$;

CREATE FUNCTION pgwarden.et_table_rewrite() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  d jsonb;
BEGIN
  d := pgwarden._guard_rewrite(pg_event_trigger_table_rewrite_oid(), current_user,
                               pg_current_xact_id_if_assigned()::text, current_query());
  IF d IS NOT NULL THEN
    PERFORM pgwarden._raise(d);
  END IF;
END $$;

-- == admin API (pgwarden_admin) =================================================================

CREATE FUNCTION pgwarden.plan_policy(doc jsonb)
RETURNS TABLE (change text, kind text, object text, detail text)
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import admin
return admin.plan(plpy, GD, doc)
$$;
COMMENT ON FUNCTION pgwarden.plan_policy(jsonb) IS
  'The exact changes apply_policy would make for a canonical policy document (see docs/policy.md)';

CREATE FUNCTION pgwarden.apply_policy(doc jsonb, source text, sha256 text,
                                      git_commit text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import admin
return admin.apply(plpy, GD, doc, source, sha256, git_commit)
$$;
COMMENT ON FUNCTION pgwarden.apply_policy(jsonb, text, text, text) IS
  'Enforce a canonical policy document in this transaction; returns {"version", "changes"}';

CREATE FUNCTION pgwarden.drift()
RETURNS TABLE (severity text, kind text, object text, detail text)
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import admin
return admin.drift(plpy, GD)
$$;
COMMENT ON FUNCTION pgwarden.drift() IS 'Everything that weakens enforcement (docs/policy.md)';

CREATE FUNCTION pgwarden.unguard_all() RETURNS integer
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import admin
return admin.unguard_all(plpy, GD)
$$;

CREATE FUNCTION pgwarden.record_event(kind text, fields jsonb, autonomous boolean DEFAULT false)
RETURNS boolean
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import admin
return admin.record_event(plpy, GD, kind, fields, autonomous)
$$;
COMMENT ON FUNCTION pgwarden.record_event(text, jsonb, boolean) IS
  'Stage an administrative ledger record (autonomous: through dblink; returns whether it landed)';

CREATE FUNCTION pgwarden.python_info() RETURNS jsonb
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import admin
return admin.python_info()
$$;

-- == privileges =================================================================================

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgwarden FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA pgwarden FROM PUBLIC;
GRANT USAGE ON SCHEMA pgwarden TO PUBLIC;
GRANT EXECUTE ON FUNCTION pgwarden.session_identity(), pgwarden._raise(jsonb),
  pgwarden._guard_write(oid, text, bigint, name, name, integer, bigint, text, boolean, text),
  pgwarden._guard_truncate(oid, name, text, text),
  pgwarden._guard_columns(oid, text[], name, text, text),
  pgwarden._guard_rewrite(oid, name, text, text),
  pgwarden._guard_sql_drop(jsonb, name, text, text, text),
  pgwarden._guard_ddl_end(jsonb, name, text, text, text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION pgwarden.plan_policy(jsonb),
  pgwarden.apply_policy(jsonb, text, text, text), pgwarden.drift(), pgwarden.unguard_all(),
  pgwarden.record_event(text, jsonb, boolean), pgwarden.python_info(),
  pgwarden.chain_pending(integer), pgwarden.head() TO pgwarden_admin;
GRANT SELECT ON ALL TABLES IN SCHEMA pgwarden TO pgwarden_admin;
GRANT SELECT ON pgwarden.policy_head TO PUBLIC;  -- two numbers the guard triggers read

-- == event triggers (last: they watch everything after them) ====================================

CREATE EVENT TRIGGER pgwarden_sql_drop ON sql_drop
  EXECUTE FUNCTION pgwarden.et_sql_drop();
CREATE EVENT TRIGGER pgwarden_ddl_end ON ddl_command_end
  EXECUTE FUNCTION pgwarden.et_ddl_end();
CREATE EVENT TRIGGER pgwarden_table_rewrite ON table_rewrite
  EXECUTE FUNCTION pgwarden.et_table_rewrite();
ALTER EVENT TRIGGER pgwarden_sql_drop ENABLE ALWAYS;
ALTER EVENT TRIGGER pgwarden_ddl_end ENABLE ALWAYS;
ALTER EVENT TRIGGER pgwarden_table_rewrite ENABLE ALWAYS;
