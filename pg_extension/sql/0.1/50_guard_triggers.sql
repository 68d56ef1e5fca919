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

