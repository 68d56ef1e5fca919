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

