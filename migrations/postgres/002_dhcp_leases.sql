-- ironboot schema, version 2, PostgreSQL dialect of ../002_dhcp_leases.sql.

CREATE TABLE dhcp_leases (
  address     TEXT COLLATE "C" PRIMARY KEY,          -- ORDER BY address: byte order, as in SQLite
  mac         TEXT,
  state       TEXT NOT NULL CHECK (state IN ('bound','released','declined')),
  expires_at  BIGINT NOT NULL,
  hostname    TEXT,
  updated_at  BIGINT NOT NULL
);
CREATE INDEX dhcp_leases_mac ON dhcp_leases(mac);
