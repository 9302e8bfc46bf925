-- ironboot schema, version 6, PostgreSQL dialect of ../006_persistent_boot.sql.
ALTER TABLE workflows ADD COLUMN boot_token_sha256 TEXT;
ALTER TABLE workflows ADD COLUMN boots INTEGER NOT NULL DEFAULT 0;
