-- ironboot schema, version 8, PostgreSQL dialect of ../008_machine_ssh_keys.sql.
ALTER TABLE machines ADD COLUMN ssh_keys TEXT NOT NULL DEFAULT '[]';
