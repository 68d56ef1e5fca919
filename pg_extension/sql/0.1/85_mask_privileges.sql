-- == privileges of identity and masking (after 80_privileges, which revokes PUBLIC's) ==========

GRANT EXECUTE ON FUNCTION pgwarden.attest(integer, timestamptz, jsonb) TO pgwarden_agent;
-- Masking views run these as the querying session (functions in a view run as the invoker):
-- the masking functions are pure; event triggers run as whoever issued the DDL and call the
-- _mask_* helpers (as the guard's do).
GRANT EXECUTE ON FUNCTION pgwarden._mask_active(),
  pgwarden._mask_ddl_start(text, text), pgwarden._mask_ddl_end(jsonb, text),
  pgwarden._mask_sql_drop(jsonb), pgwarden.mask_email(text),
  pgwarden.mask_name(text), pgwarden.mask_tail(text, integer, text),
  pgwarden.mask_initial(text), pgwarden.mask_pseudonym(text, bytea, bytea) TO PUBLIC;
GRANT EXECUTE ON FUNCTION pgwarden.identities(boolean), pgwarden.unmask_all() TO pgwarden_admin;
-- The views' owner reads the decision's and the key's tables inside the views (as the owner).
GRANT SELECT ON pgwarden.attested, pgwarden.identity_rules, pgwarden.mask_key
  TO pgwarden_mask_owner;
REVOKE SELECT ON pgwarden.mask_key FROM pgwarden_admin;
