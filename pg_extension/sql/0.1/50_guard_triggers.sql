-- == trigger functions (fired without EXECUTE privilege; run as the invoker) ===================

CREATE FUNCTION pgwarden.tg_write() RETURNS trigger
LANGUAGE plpgsql AS $$
-- AFTER UPDATE / AFTER DELETE ... FOR EACH STATEMENT, REFERENCING OLD TABLE AS pgwarden_old: the
-- hot path of every guarded write, so no SET search_path (a function-level SET costs a GUC
-- save/restore on every call). Safe without it: every function, operator and type below is
-- schema-qualified, so the session's search_path (even with pg_catalog moved behind its own
-- schemas) cannot change what runs, and the transition table is an ephemeral relation, which
-- no table, temporary or not, can shadow.
-- Counts the rows really changed; PG_CONTEXT has more than this frame when the statement ran
-- inside a function, procedure or DO block (then the client's text does not show it). Python
-- is entered once when this backend already knows the answer (pgwarden._guard_write, reading
-- nothing but its cache), twice otherwise. The row count and the policy head come from one
-- query (each SPI query costs an executor start and end), into scalar variables (a record
-- variable builds an expanded record, with its own memory context, on every firing).
DECLARE
  n pg_catalog.int8;
  v pg_catalog.int4;
  ep pg_catalog.int8;
  ctx pg_catalog.text;
  nested pg_catalog.bool;
  q pg_catalog.text;
  d pg_catalog.jsonb;
  e pg_catalog.jsonb;
BEGIN
  SELECT (SELECT pg_catalog.count(*) FROM pgwarden_old), p.version, p.epoch
    INTO n, v, ep FROM pgwarden.policy_head p;
  IF NOT FOUND THEN  -- no head row (never, short of tampering): count anyway, Python decides
    SELECT pg_catalog.count(*) INTO n FROM pgwarden_old;
  END IF;
  IF n OPERATOR(pg_catalog.>) 0 THEN
    GET DIAGNOSTICS ctx = PG_CONTEXT;
    nested := pg_catalog.strpos(ctx, E'\n') OPERATOR(pg_catalog.>) 0;
    q := pg_catalog.current_query();
    IF pgwarden._guard_write(TG_RELID, TG_OP, n, nested, q,
                             pg_catalog.pg_current_xact_id_if_assigned(), SESSION_USER,
                             v, ep) THEN
      d := pgwarden._guard_write_check(TG_RELID, TG_OP, n, nested, q, CURRENT_USER);
      IF d OPERATOR(pg_catalog.?) 'effect_sql' THEN
        -- a rule with action approve: measure the write from the transition table (row count,
        -- hash and keys of the primary keys), with SQL pgwarden generated, and decide again
        EXECUTE d OPERATOR(pg_catalog.->>) 'effect_sql' INTO e;
        d := pgwarden._guard_write_check(TG_RELID, TG_OP, n, nested, q, CURRENT_USER, e);
      END IF;
      IF d IS NOT NULL THEN
        PERFORM pgwarden._raise(d);
      END IF;
    END IF;
  END IF;
  RETURN NULL;
END $$;

CREATE FUNCTION pgwarden.tg_truncate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  d jsonb;
BEGIN
  d := pgwarden._guard_truncate(TG_RELID, current_user, current_query());
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
    d := pgwarden._guard_columns(TG_RELID, changed, current_user, current_query());
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
    d := pgwarden._guard_sql_drop(objs, current_user, tg_tag, current_query());
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
    d := pgwarden._guard_ddl_end(cmds, current_user, tg_tag, current_query());
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
                               current_query());
  IF d IS NOT NULL THEN
    PERFORM pgwarden._raise(d);
  END IF;
END $$;

