-- ironboot schema, version 4: power control through each machine's BMC (IPMI v2.0 lanplus or Redfish).
--
--   bmc_url            ipmi://host[:port] | redfish://host[:port]; NULL = no BMC
--   bmc_password       kept for the daemon only: no API read returns it
--   bmc_tls_insecure   Redfish: accept a BMC certificate that does not verify (self-signed), per BMC; default no
--   bmc_ca             Redfish: PEM CA bundle that signs this BMC's certificate
--   power_*            the last polled or acted power state
ALTER TABLE machines ADD COLUMN bmc_url TEXT;
ALTER TABLE machines ADD COLUMN bmc_username TEXT;
ALTER TABLE machines ADD COLUMN bmc_password TEXT;
ALTER TABLE machines ADD COLUMN bmc_tls_insecure INTEGER NOT NULL DEFAULT 0;
ALTER TABLE machines ADD COLUMN bmc_ca TEXT;
ALTER TABLE machines ADD COLUMN power_state TEXT CHECK (power_state IS NULL OR power_state IN ('on','off','unknown'));
ALTER TABLE machines ADD COLUMN power_checked_at TEXT;
ALTER TABLE machines ADD COLUMN power_error TEXT;

-- A workflow created with powerCycle: the daemon sets next boot to PXE and power-cycles the machine itself.
ALTER TABLE workflows ADD COLUMN power_cycle INTEGER NOT NULL DEFAULT 0;

-- What was done to a machine outside of (or on behalf of) a workflow: one row per power action and its outcome.
CREATE TABLE machine_events (
  id          INTEGER PRIMARY KEY,
  machine_id  INTEGER NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
  at          TEXT NOT NULL,
  kind        TEXT NOT NULL,                       -- power
  action      TEXT NOT NULL,                       -- on | off | cycle | status | pxe
  outcome     TEXT NOT NULL CHECK (outcome IN ('ok','failed')),
  message     TEXT,
  workflow_id TEXT,                                -- the workflow this action was for, if any
  payload     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX machine_events_machine ON machine_events(machine_id, id);
