-- == event triggers (last: they watch everything after them) ====================================

CREATE EVENT TRIGGER pgwarden_sql_drop ON sql_drop
  EXECUTE FUNCTION pgwarden.et_sql_drop();
CREATE EVENT TRIGGER pgwarden_ddl_end ON ddl_command_end
  EXECUTE FUNCTION pgwarden.et_ddl_end();
CREATE EVENT TRIGGER pgwarden_table_rewrite ON table_rewrite
  EXECUTE FUNCTION pgwarden.et_table_rewrite();
ALTER EVENT TRIGGER pgwarden_sql_drop ENABLE ALWAYS;
ALTER EVENT TRIGGER pgwarden_ddl_end ENABLE ALWAYS;
ALTER EVENT TRIGGER pgwarden_table_rewrite ENABLE ALWAYS;
