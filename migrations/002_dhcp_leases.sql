-- ironboot schema, version 2: DHCP pool leases (full mode). Reservations live in machines.ipv4_*.

CREATE TABLE dhcp_leases (
  address     TEXT PRIMARY KEY,                    -- dotted IPv4, inside the configured pool
  mac         TEXT,                                -- canonical lower-case colon form; NULL when declined
  state       TEXT NOT NULL CHECK (state IN ('bound','released','declined')),
  expires_at  INTEGER NOT NULL,                    -- unix ms: end of the lease, or of the decline quarantine
  hostname    TEXT,
  updated_at  INTEGER NOT NULL                     -- unix ms
);
CREATE INDEX dhcp_leases_mac ON dhcp_leases(mac);
