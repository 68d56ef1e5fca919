-- == privileges =================================================================================

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgwarden FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA pgwarden FROM PUBLIC;
GRANT USAGE ON SCHEMA pgwarden TO PUBLIC;
GRANT EXECUTE ON FUNCTION pgwarden.session_identity(), pgwarden._raise(jsonb),
  pgwarden._guard_write(oid, text, bigint, boolean, text, xid8, name, integer, bigint),
  pgwarden._guard_write_check(oid, text, bigint, boolean, text, name, jsonb),
  pgwarden._guard_truncate(oid, name, text),
  pgwarden._guard_columns(oid, text[], name, text),
  pgwarden._guard_rewrite(oid, name, text),
  pgwarden._guard_sql_drop(jsonb, name, text, text),
  pgwarden._guard_ddl_end(jsonb, name, text, text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION pgwarden.plan_policy(jsonb),
  pgwarden.apply_policy(jsonb, text, text, text), pgwarden.drift(), pgwarden.unguard_all(),
  pgwarden.record_event(text, jsonb, boolean), pgwarden.python_info(),
  pgwarden.chain_pending(integer), pgwarden.head() TO pgwarden_admin;
GRANT SELECT ON ALL TABLES IN SCHEMA pgwarden TO pgwarden_admin;
GRANT SELECT ON pgwarden.policy_head TO PUBLIC;  -- two numbers the guard triggers read

