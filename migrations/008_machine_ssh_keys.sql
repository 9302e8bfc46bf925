-- ironboot schema, version 8: first-boot data of installed machines (mode 'install').
--   ssh_keys  JSON array of OpenSSH authorized_keys lines (validated by the API), written into the installed disk's
--             /root/.ssh/authorized_keys and its cloud-init seed, and served as EC2-style metadata (public-keys)
ALTER TABLE machines ADD COLUMN ssh_keys TEXT NOT NULL DEFAULT '[]';
