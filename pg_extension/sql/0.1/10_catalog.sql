-- == catalog ====================================================================================

CREATE TABLE pgwarden.settings (
  name  text PRIMARY KEY,
  value text NOT NULL
);
COMMENT ON TABLE pgwarden.settings IS
  'python_dir: where pgwarden_ext and sqlglot live; autonomous_conninfo: libpq conninfo (without dbname) dblink uses for records that must survive a rollback';
INSERT INTO pgwarden.settings VALUES ('python_dir', '@PYTHON_DIR@'), ('autonomous_conninfo', '');

CREATE TABLE pgwarden.policy (
  version    integer PRIMARY KEY,
  sha256     text NOT NULL,
  git_commit text,
  source     text NOT NULL,
  doc        jsonb NOT NULL,
  applied_by name NOT NULL DEFAULT session_user,
  applied_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
COMMENT ON TABLE pgwarden.policy IS
  'Every applied policy: YAML source, SHA-256 of the source, git commit, canonical document';

CREATE TABLE pgwarden.policy_head (
  only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  version  integer NOT NULL DEFAULT 0,
  epoch    bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE pgwarden.policy_head IS
  'The policy in force (0: none) and an epoch bumped whenever guarded objects change; backends re-read it once per transaction';
INSERT INTO pgwarden.policy_head DEFAULT VALUES;

CREATE TABLE pgwarden.protected (
  classid  regclass NOT NULL,
  objid    oid NOT NULL,
  protect  text NOT NULL,
  via      text NOT NULL CHECK (via IN ('policy', 'pattern', 'partition', 'inheritance')),
  identity text NOT NULL,
  PRIMARY KEY (classid, objid)
);
COMMENT ON TABLE pgwarden.protected IS
  'Objects guarded by the policy (keyed by OID, so renames do not unguard them): relations, schemas, functions';

CREATE TABLE pgwarden.protected_column (
  relid   oid NOT NULL,
  attnum  int2 NOT NULL,
  protect text NOT NULL,
  PRIMARY KEY (relid, attnum)
);

CREATE TABLE pgwarden.guard_trigger (
  tgoid oid PRIMARY KEY,
  relid oid NOT NULL,
  kind  text NOT NULL CHECK (kind IN ('update', 'delete', 'truncate', 'columns'))
);
CREATE INDEX ON pgwarden.guard_trigger (relid);

