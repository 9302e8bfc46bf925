-- ironboot schema, version 5, PostgreSQL dialect of ../005_agent_tokens.sql.
CREATE TABLE agent_tokens (
  hash         TEXT PRIMARY KEY,
  workflow_id  TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
  kind         TEXT NOT NULL CHECK (kind IN ('boot','session')),
  ip           TEXT,
  state        TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active','used','superseded')),
  created_at   TEXT NOT NULL,
  used_at      TEXT
);
CREATE INDEX agent_tokens_by_workflow ON agent_tokens (workflow_id, kind, state);
UPDATE workflows SET token = '';
