-- ironboot schema, version 9 (PostgreSQL): several daemons on one store; see migrations/009_fleet.sql.
ALTER TABLE dhcp_leases DROP CONSTRAINT IF EXISTS dhcp_leases_state_check;
ALTER TABLE dhcp_leases ADD CONSTRAINT dhcp_leases_state_check CHECK (state IN ('offered','bound','released','declined'));
ALTER TABLE dhcp_leases ADD COLUMN writer TEXT;
CREATE INDEX dhcp_leases_updated ON dhcp_leases(updated_at);
