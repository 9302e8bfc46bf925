-- ironboot schema, version 9: several daemons on one store (README "Several daemons").
--   state 'offered'  an OFFER is a claim on the address too (held offerHoldMs), so two daemons do not offer one
--                    address to two clients; an offered row whose expires_at passed is free
--   writer           the daemon (DhcpLeases instance) that wrote the row last: a daemon re-reads the rows others
--                    changed (updated_at index) before it picks an address, and skips its own
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt (it holds one row per pool address).
CREATE TABLE dhcp_leases_new (
  address     TEXT PRIMARY KEY,
  mac         TEXT,
  state       TEXT NOT NULL CHECK (state IN ('offered','bound','released','declined')),
  expires_at  INTEGER NOT NULL,
  hostname    TEXT,
  updated_at  INTEGER NOT NULL,
  writer      TEXT
);
INSERT INTO dhcp_leases_new (address, mac, state, expires_at, hostname, updated_at)
  SELECT address, mac, state, expires_at, hostname, updated_at FROM dhcp_leases;
DROP TABLE dhcp_leases;
ALTER TABLE dhcp_leases_new RENAME TO dhcp_leases;
CREATE INDEX dhcp_leases_mac ON dhcp_leases(mac);
CREATE INDEX dhcp_leases_updated ON dhcp_leases(updated_at);
