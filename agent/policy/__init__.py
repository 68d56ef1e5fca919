"""Policy-as-code: pgwarden.yaml (schema), and plan/apply/drift against a database (client)."""
