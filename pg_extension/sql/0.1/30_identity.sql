-- == runtime: identity hook =====================================================================

CREATE FUNCTION pgwarden.session_identity() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  -- The identity the host agent attested for this backend (issue 4 replaces this body with a
  -- lookup of (pg_backend_pid(), backend start) in the agent-written identity table).
  -- NULL means "unattested"; policies match it as identity "unattested".
  SELECT NULL::text
$$;

