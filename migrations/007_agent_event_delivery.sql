-- ironboot schema: agent event delivery (issue 16). Slot 005 in the team's numbering; 004 on this branch so the
-- versions stay contiguous here (the lead renumbers at merge time).
--   agent_event_ids     the id the agent gave each event it reported: a retried batch is recognised and not
--                       written twice (one row per accepted id; the workflow's events cascade with it)
--   agent_event_usage   how many non-state events and bytes of them a workflow has stored, for the per-workflow
--                       caps; truncated = 1 once the marker event was written and further output is dropped
--   workflows.wipe      the agent may overwrite a target that already holds a partition table or a filesystem
--   workflows.target_serial / target_size   optional checks of the target disk before anything is written
CREATE TABLE agent_event_ids (
  workflow_id TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
  event_id    TEXT NOT NULL,
  PRIMARY KEY (workflow_id, event_id)
) WITHOUT ROWID;

CREATE TABLE agent_event_usage (
  workflow_id TEXT PRIMARY KEY REFERENCES workflows(id) ON DELETE CASCADE,
  events      INTEGER NOT NULL DEFAULT 0,
  bytes       INTEGER NOT NULL DEFAULT 0,
  truncated   INTEGER NOT NULL DEFAULT 0,
  dropped     INTEGER NOT NULL DEFAULT 0
);

ALTER TABLE workflows ADD COLUMN wipe INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workflows ADD COLUMN target_serial TEXT;
ALTER TABLE workflows ADD COLUMN target_size INTEGER;
