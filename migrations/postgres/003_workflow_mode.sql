-- ironboot schema, version 3, PostgreSQL dialect of ../003_workflow_mode.sql.
ALTER TABLE workflows ADD COLUMN mode TEXT NOT NULL DEFAULT 'ephemeral' CHECK (mode IN ('ephemeral','persistent','install'));
