-- == runtime: decisions (PL/Python shims into pgwarden_ext) =====================================

CREATE TABLE pgwarden.classified (
  key       bytea PRIMARY KEY,
  statement text NOT NULL,
  summary   jsonb NOT NULL,
  at        timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
COMMENT ON TABLE pgwarden.classified IS
  'What each literal-free statement text does (pgwarden_ext.classify), shared by the backends of this database so that a new one needs no sqlglot for shapes seen before; statement is "<extension version>/<classifier version>\n<normalized statement>", key its SHA-256. A cache: written only by pgwarden, safe to empty';

CREATE FUNCTION pgwarden._remember_classified(stmt text, summ jsonb) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  -- Runs in the autonomous (dblink) session. At most 50,000 rows: sessions decide which texts
  -- get classified, so they must not be able to grow this without bound.
  INSERT INTO pgwarden.classified (key, statement, summary)
  SELECT sha256(convert_to(stmt, 'UTF8')), stmt, summ
   WHERE (SELECT count(*) FROM pgwarden.classified) < 50000
  ON CONFLICT (key) DO NOTHING
  RETURNING true
$$;

CREATE FUNCTION pgwarden._raise(d jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
-- Raise a decision: SQLSTATE class PW, the rule in the constraint-name field (docs/events.md).
BEGIN
  RAISE EXCEPTION USING ERRCODE = d->>'sqlstate', MESSAGE = d->>'message',
    DETAIL = d->>'detail', HINT = d->>'hint', CONSTRAINT = d->>'rule',
    SCHEMA = coalesce(d->>'schema', ''), TABLE = coalesce(d->>'table', '');
END $$;

CREATE FUNCTION pgwarden._guard_write(relid oid, op text, nrows bigint, nested boolean,
                                      query text, xid xid8, sess_user name, version integer,
                                      epoch bigint) RETURNS boolean
LANGUAGE plpython3u AS $$
# The hot path of every guarded UPDATE/DELETE (guard.needs_check): it reads nothing but GD, so
# it needs neither SECURITY DEFINER nor a pinned search_path (a function-level SET costs a GUC
# save/restore on every call). True: the caller runs pgwarden._guard_write_check.
f = GD.get('pgwarden.needs_check')
if f is None:
    import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
    from pgwarden_ext import guard
    f = GD['pgwarden.needs_check'] = guard.needs_check
return f(GD, relid, op, nrows, nested, query, xid, sess_user, version, epoch)
$$;

CREATE FUNCTION pgwarden._guard_write_check(relid oid, op text, nrows bigint, nested boolean,
                                            query text, cur_user name,
                                            effect jsonb DEFAULT NULL) RETURNS jsonb
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
# Returns NULL (go on), an error to raise, or {"effect_sql": ...}: a rule with action approve
# needs the write measured (approvals.effect_sql); the trigger runs that and calls again.
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import guard
return guard.on_write(plpy, GD, relid, op, nrows, nested, query, cur_user, effect)
$$;

CREATE FUNCTION pgwarden._guard_truncate(relid oid, cur_user name, query text)
RETURNS jsonb
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import guard
return guard.on_truncate(plpy, GD, relid, cur_user, query)
$$;

CREATE FUNCTION pgwarden._guard_columns(relid oid, cols text[], cur_user name, query text)
RETURNS jsonb
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import guard
return guard.on_columns(plpy, GD, relid, cols, cur_user, query)
$$;

CREATE FUNCTION pgwarden._guard_rewrite(relid oid, cur_user name, query text)
RETURNS jsonb
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import guard
return guard.on_rewrite(plpy, GD, relid, cur_user, query)
$$;

CREATE FUNCTION pgwarden._guard_sql_drop(objects jsonb, cur_user name, tag text, query text)
RETURNS jsonb
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import guard
return guard.on_sql_drop(plpy, GD, objects, cur_user, tag, query)
$$;

CREATE FUNCTION pgwarden._guard_ddl_end(commands jsonb, cur_user name, tag text, query text)
RETURNS jsonb
LANGUAGE plpython3u SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
import sys; '@PYTHON_DIR@' in sys.path or sys.path.insert(0, '@PYTHON_DIR@')
from pgwarden_ext import guard
return guard.on_ddl_end(plpy, GD, commands, cur_user, tag, query)
$$;

