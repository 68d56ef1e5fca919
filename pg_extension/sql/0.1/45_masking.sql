-- == masking: generated views, keyed on role and attested identity (docs/masking.md) =========
--
-- Policy apply (pgwarden_ext/mask.py) resolves the policy's masking section to the catalog
-- below and generates, for every table with masked columns, views owned by
-- pgwarden_mask_owner (not a superuser):
--
--   pgwarden_mask_<schema>.<table>  for roles masked in every session: each masked column is
--                                   its masking expression, nothing to decide at run time;
--   pgwarden_gate_<schema>.<table>  for shared roles: CASE WHEN <decision> THEN <masked>
--                                   ELSE <column> END, where the decision (this session's role
--                                   and attested identity) is computed once per statement by
--                                   a security-barrier view in pgwarden_maskd (one InitPlan).
--
-- Governed roles get the views' schemas in front of their search_path (same SQL, masked
-- values) and lose what would bypass the views (lock-down: base-table SELECT on masked
-- columns, TEMP, pg_read_all_data, memberships that can read in clear, ...).
-- Masking expressions are plain SQL, expanded into the views (so no function is inlined, or
-- called per row, at run time); the functions below are the same expressions, inlinable, for
-- ad-hoc use and for the tests that check both agree.

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pgwarden_agent')
     OR NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pgwarden_mask_owner') THEN
    RAISE EXCEPTION 'pgwarden: roles pgwarden_agent and pgwarden_mask_owner must exist'
      USING HINT = 'Install with `pgwarden db install`, which creates them.';
  END IF;
END $$;

CREATE TABLE pgwarden.mask_column (
  relid  oid NOT NULL,
  attnum int2 NOT NULL,
  class  text,
  method text NOT NULL CHECK (method IN ('partial', 'redact', 'pseudonym', 'null', 'placeholder')),
  value  text,
  PRIMARY KEY (relid, attnum)
);
COMMENT ON TABLE pgwarden.mask_column IS
  'Masked columns (keyed by OID and attnum: a renamed column stays masked), with PII class, method and placeholder value';

CREATE TABLE pgwarden.mask_role (
  roleid      oid PRIMARY KEY,
  mode        text NOT NULL CHECK (mode IN ('role', 'identity')),
  search_path text
);
COMMENT ON TABLE pgwarden.mask_role IS
  'Governed roles: mode role = masked in every session, identity = shared role whose attested identity decides; search_path = the role''s own setting in this database before masking (NULL: none), restored when released';

CREATE TABLE pgwarden.mask_view (
  relid      oid NOT NULL,
  family     text NOT NULL CHECK (family IN ('mask', 'gate')),
  view_oid   oid NOT NULL,
  inner_oid  oid,
  signature  text NOT NULL,
  definition text NOT NULL,
  PRIMARY KEY (relid, family)
);
COMMENT ON TABLE pgwarden.mask_view IS
  'Generated masking views: signature of what they were generated from, md5 of their definition (drift)';

CREATE TABLE pgwarden.mask_key (
  only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  ipad     bytea NOT NULL,
  opad     bytea NOT NULL
);
COMMENT ON TABLE pgwarden.mask_key IS
  'HMAC-SHA-256 key of keyed pseudonyms, as the inner and outer padded keys (64 bytes each); readable by the view owner only, never by masked sessions';
-- 64 key bytes from the operating system's CSPRNG; HMAC's padded keys stored, not the key.
DO LANGUAGE plpython3u $$
import os
key = os.urandom(64)
plan = plpy.prepare("INSERT INTO pgwarden.mask_key (ipad, opad) VALUES ($1, $2)",
                    ["bytea", "bytea"])
plpy.execute(plan, [bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)])
$$;

-- == masking functions (plain SQL, inlinable: no SET, no SECURITY DEFINER, qualified) =========

CREATE FUNCTION pgwarden.mask_email(v text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT pg_catalog.left(v, 1) OPERATOR(pg_catalog.||) '***@'
         OPERATOR(pg_catalog.||) pg_catalog.split_part(v, '@', 2)
$$;
COMMENT ON FUNCTION pgwarden.mask_email(text) IS 'john.doe@example.com -> j***@example.com';

CREATE FUNCTION pgwarden.mask_name(v text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN pg_catalog.strpos(v, ' ') OPERATOR(pg_catalog.>) 0
              THEN pg_catalog.left(v, 1) OPERATOR(pg_catalog.||) '*** '
                   OPERATOR(pg_catalog.||) pg_catalog.left(pg_catalog.split_part(v, ' ', -1), 1)
                   OPERATOR(pg_catalog.||) '**'
              ELSE pg_catalog.left(v, 1) OPERATOR(pg_catalog.||) '***' END
$$;
COMMENT ON FUNCTION pgwarden.mask_name(text) IS 'John Doe -> J*** D**, Jane -> J***';

CREATE FUNCTION pgwarden.mask_tail(v text, keep integer, stars text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT stars OPERATOR(pg_catalog.||) pg_catalog.right(v, keep)
$$;
COMMENT ON FUNCTION pgwarden.mask_tail(text, integer, text) IS
  'The last keep characters after stars: (+15551234567, 2, ''******'') -> ******67';

CREATE FUNCTION pgwarden.mask_initial(v text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT pg_catalog.left(v, 1) OPERATOR(pg_catalog.||) '***'
$$;
COMMENT ON FUNCTION pgwarden.mask_initial(text) IS 'jdoe42 -> j***';

CREATE FUNCTION pgwarden.mask_pseudonym(v text, ipad bytea, opad bytea) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT 'p_' OPERATOR(pg_catalog.||) pg_catalog.left(pg_catalog.encode(pg_catalog.sha256(
           opad OPERATOR(pg_catalog.||) pg_catalog.sha256(
             ipad OPERATOR(pg_catalog.||) pg_catalog.convert_to(v, 'UTF8'))), 'hex'), 16)
$$;
COMMENT ON FUNCTION pgwarden.mask_pseudonym(text, bytea, bytea) IS
  'Keyed pseudonym: p_ + 16 hex digits of HMAC-SHA-256(key, v); views pass the key from pgwarden.mask_key, which masked sessions cannot read';

-- == runtime shims (PL/Python, pgwarden_ext.mask) =============================================

CREATE FUNCTION pgwarden._mask_ddl_start(tag text, query text) RETURNS void
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
# Drop the masking views of tables this ALTER/DROP may change (recreated at ddl_command_end).
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import mask
mask.on_ddl_start(plpy, GD, tag, query)
$$;

CREATE FUNCTION pgwarden._mask_ddl_end(commands jsonb, tag text) RETURNS jsonb
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import mask
return mask.on_ddl_end(plpy, GD, commands, tag)
$$;

CREATE FUNCTION pgwarden._mask_sql_drop(objects jsonb) RETURNS jsonb
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import mask
return mask.on_sql_drop(plpy, GD, objects)
$$;

CREATE FUNCTION pgwarden.unmask_all() RETURNS integer
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import admin, mask
admin._require_admin(plpy)
return mask.unmask_all(plpy, GD)
$$;
COMMENT ON FUNCTION pgwarden.unmask_all() IS
  'Drop every masking view and schema and restore governed roles'' search_path (uninstall); revoked privileges are not re-granted';

-- == event-trigger functions (PL/pgSQL: PL/Python cannot be one on PostgreSQL 15) ===========

CREATE FUNCTION pgwarden._mask_active() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  -- Whether masking has anything to keep in step (event triggers return at once otherwise).
  SELECT EXISTS (SELECT FROM pgwarden.mask_column) OR EXISTS (SELECT FROM pgwarden.mask_view)
         OR EXISTS (SELECT FROM pgwarden.identity_rules
                     WHERE cardinality(mask_roles) + cardinality(shared_roles) > 0)
$$;

CREATE FUNCTION pgwarden.et_mask_ddl_start() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
-- Views over a table block ALTER TABLE ... DROP COLUMN / ALTER COLUMN TYPE and DROP TABLE:
-- drop the masking views the command may touch first; ddl_command_end recreates them, in the
-- same transaction (a failed command restores them with everything else).
BEGIN
  IF tg_tag IN ('ALTER TABLE', 'DROP TABLE', 'ALTER FOREIGN TABLE', 'DROP FOREIGN TABLE',
                'DROP SCHEMA', 'ALTER MATERIALIZED VIEW', 'DROP MATERIALIZED VIEW', 'DROP OWNED')
     AND pgwarden._mask_active() THEN
    PERFORM pgwarden._mask_ddl_start(tg_tag, current_query());
  END IF;
END $$;

CREATE FUNCTION pgwarden.et_mask_ddl_end() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  cmds jsonb;
  d jsonb;
BEGIN
  IF NOT pgwarden._mask_active() THEN
    RETURN;
  END IF;
  SELECT jsonb_agg(jsonb_build_object(
           'classid', classid::regclass::text, 'objid', objid::bigint, 'objsubid', objsubid,
           'tag', command_tag, 'type', object_type, 'schema', schema_name,
           'identity', object_identity))
    INTO cmds FROM pg_event_trigger_ddl_commands()
   WHERE schema_name IS NULL OR schema_name !~ '^pg_temp';
  d := pgwarden._mask_ddl_end(coalesce(cmds, '[]'), tg_tag);
  IF d IS NOT NULL THEN
    PERFORM pgwarden._raise(d);
  END IF;
END $$;

CREATE FUNCTION pgwarden.et_mask_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  objs jsonb;
  d jsonb;
BEGIN
  IF NOT pgwarden._mask_active() THEN
    RETURN;
  END IF;
  SELECT jsonb_agg(jsonb_build_object(
           'classid', classid::regclass::text, 'objid', objid::bigint, 'objsubid', objsubid,
           'type', object_type, 'schema', schema_name, 'name', object_name,
           'identity', object_identity, 'original', original))
    INTO objs FROM pg_event_trigger_dropped_objects()
   WHERE NOT coalesce(is_temporary, false);
  IF objs IS NOT NULL THEN
    d := pgwarden._mask_sql_drop(objs);
    IF d IS NOT NULL THEN
      PERFORM pgwarden._raise(d);
    END IF;
  END IF;
END $$;
