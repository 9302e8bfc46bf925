-- ironboot schema, version 7, PostgreSQL dialect of ../007_agent_event_delivery.sql.
CREATE TABLE agent_event_ids (
  workflow_id TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
  event_id    TEXT NOT NULL,
  PRIMARY KEY (workflow_id, event_id)
);

CREATE TABLE agent_event_usage (
  workflow_id TEXT PRIMARY KEY REFERENCES workflows(id) ON DELETE CASCADE,
  events      BIGINT NOT NULL DEFAULT 0,
  bytes       BIGINT NOT NULL DEFAULT 0,
  truncated   INTEGER NOT NULL DEFAULT 0,
  dropped     BIGINT NOT NULL DEFAULT 0
);

ALTER TABLE workflows ADD COLUMN wipe INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workflows ADD COLUMN target_serial TEXT;
ALTER TABLE workflows ADD COLUMN target_size BIGINT;
