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

