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

