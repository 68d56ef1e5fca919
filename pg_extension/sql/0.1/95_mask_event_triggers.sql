-- == masking event triggers (after every other object; ENABLE ALWAYS) ========================

CREATE EVENT TRIGGER pgwarden_mask_ddl_start ON ddl_command_start
  EXECUTE FUNCTION pgwarden.et_mask_ddl_start();
CREATE EVENT TRIGGER pgwarden_mask_ddl_end ON ddl_command_end
  EXECUTE FUNCTION pgwarden.et_mask_ddl_end();
CREATE EVENT TRIGGER pgwarden_mask_sql_drop ON sql_drop
  EXECUTE FUNCTION pgwarden.et_mask_sql_drop();
ALTER EVENT TRIGGER pgwarden_mask_ddl_start ENABLE ALWAYS;
ALTER EVENT TRIGGER pgwarden_mask_ddl_end ENABLE ALWAYS;
ALTER EVENT TRIGGER pgwarden_mask_sql_drop ENABLE ALWAYS;
