-- ironboot schema, version 6: persistent boot (mode 'persistent').
--   boot_token_sha256  sha256 (hex) of the persistent-boot token handed to the agent at hello and written into the disk's
--                      marker; the token itself is kept only on the machine's disk
--   boots              persistent boots the machine checked in for since the workflow succeeded
ALTER TABLE workflows ADD COLUMN boot_token_sha256 TEXT;
ALTER TABLE workflows ADD COLUMN boots INTEGER NOT NULL DEFAULT 0;
