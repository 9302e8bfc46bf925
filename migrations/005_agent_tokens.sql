-- ironboot schema, version 5: agent tokens, hashed at rest (sha256 of the token; the token itself is never stored).
--   boot     minted each time a provisioning script is served; in the kernel command line; exchanged once, at hello
--   session  minted by that hello; bound to the agent's source address and its workflow; events and the image download
-- A boot token is active until its hello (then used) or until a newer script supersedes it; a session token is
-- active until a newer hello supersedes it. Every token of a finished workflow is refused (checked on use).
CREATE TABLE agent_tokens (
  hash         TEXT PRIMARY KEY,                                  -- sha256 hex of the token
  workflow_id  TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
  kind         TEXT NOT NULL CHECK (kind IN ('boot','session')),
  ip           TEXT,                                              -- boot: the address the script went to (NULL: unbound); session: the agent's
  state        TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active','used','superseded')),
  created_at   TEXT NOT NULL,
  used_at      TEXT
);
CREATE INDEX agent_tokens_by_workflow ON agent_tokens (workflow_id, kind, state);
-- the plaintext per-workflow tokens of earlier versions are not kept: an active workflow gets a boot token the next
-- time its machine fetches its script
UPDATE workflows SET token = '';
