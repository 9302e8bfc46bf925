-- ironboot schema, version 1: machines, images (container disks), workflows, events.

CREATE TABLE machines (
  id            INTEGER PRIMARY KEY,
  mac           TEXT NOT NULL UNIQUE,              -- canonical lower-case colon form
  hostname      TEXT,
  ipv4_address  TEXT,                              -- reservation; NULL = none
  ipv4_prefix   INTEGER CHECK (ipv4_prefix IS NULL OR (ipv4_prefix BETWEEN 0 AND 32)),
  ipv4_gateway  TEXT,
  ipv4_dns      TEXT NOT NULL DEFAULT '[]',        -- JSON array of addresses
  lease_seconds INTEGER,
  domain        TEXT,
  arch          TEXT,                              -- firmware hint: bios | uefi-x64 | uefi-arm64 | auto
  efi_binary    TEXT,                              -- ipxe.efi | snponly.efi (x86-64 UEFI)
  allow_pxe     INTEGER NOT NULL DEFAULT 1,
  labels        TEXT NOT NULL DEFAULT '{}',        -- JSON object
  created_at    TEXT NOT NULL,
  updated_at    TEXT NOT NULL
);
CREATE UNIQUE INDEX machines_ipv4 ON machines(ipv4_address) WHERE ipv4_address IS NOT NULL;

CREATE TABLE images (
  id                TEXT PRIMARY KEY,              -- short id derived from the content
  name              TEXT NOT NULL UNIQUE,
  source            TEXT,                          -- reference it was built from
  digest            TEXT,                          -- manifest digest of the source image
  state             TEXT NOT NULL CHECK (state IN ('pending','building','ready','failed')),
  error             TEXT,
  format            TEXT NOT NULL DEFAULT 'ext4',
  raw_size          INTEGER,
  raw_sha256        TEXT,
  compressed_size   INTEGER,
  compressed_sha256 TEXT,
  entrypoint        TEXT NOT NULL DEFAULT '[]',    -- JSON arrays / objects from the image config
  cmd               TEXT NOT NULL DEFAULT '[]',
  env               TEXT NOT NULL DEFAULT '[]',
  working_dir       TEXT,
  user              TEXT,
  progress          TEXT NOT NULL DEFAULT '{}',
  created_at        TEXT NOT NULL,
  updated_at        TEXT NOT NULL
);

CREATE TABLE workflows (
  id             TEXT PRIMARY KEY,
  machine_id     INTEGER NOT NULL REFERENCES machines(id) ON DELETE RESTRICT,
  image_id       TEXT NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
  entrypoint     TEXT,                             -- JSON array; NULL = image's
  args           TEXT,                             -- JSON array; NULL = image's Cmd
  env            TEXT NOT NULL DEFAULT '{}',       -- JSON object, on top of the image's Env
  kernel_args    TEXT NOT NULL DEFAULT '',
  target         TEXT NOT NULL,
  after          TEXT NOT NULL CHECK (after IN ('shell','reboot','poweroff','wait')),
  token          TEXT NOT NULL,
  state          TEXT NOT NULL CHECK (state IN ('pending','booting','agent-online','streaming','verifying',
                  'mounted','running','succeeded','failed','timed-out','cancelled')),
  active         INTEGER GENERATED ALWAYS AS (state NOT IN ('succeeded','failed','timed-out','cancelled')) VIRTUAL,
  reason         TEXT,
  exit_code      INTEGER,
  timeout_seconds INTEGER NOT NULL DEFAULT 3600,
  created_at     TEXT NOT NULL,
  updated_at     TEXT NOT NULL,
  started_at     TEXT,
  finished_at    TEXT
);
CREATE UNIQUE INDEX workflows_one_active ON workflows(machine_id) WHERE state NOT IN ('succeeded','failed','timed-out','cancelled');
CREATE INDEX workflows_state ON workflows(state);

CREATE TABLE events (
  id           INTEGER PRIMARY KEY,
  workflow_id  TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
  seq          INTEGER NOT NULL,
  at           TEXT NOT NULL,
  kind         TEXT NOT NULL,                      -- state | progress | log | info
  state        TEXT,
  message      TEXT,
  bytes_done   INTEGER,
  bytes_total  INTEGER,
  payload      TEXT NOT NULL DEFAULT '{}',
  UNIQUE (workflow_id, seq)
);
