-- ironboot schema, version 3: what a workflow leaves on its machine.
--   ephemeral   the disk is streamed and its entrypoint runs from the netbooted initramfs (the seed's flow; default)
--   persistent  as ephemeral, and every later boot of the machine runs the same disk again without re-streaming it
--   install     the image carries its own kernel: the disk becomes bootable and the machine boots from it
ALTER TABLE workflows ADD COLUMN mode TEXT NOT NULL DEFAULT 'ephemeral' CHECK (mode IN ('ephemeral','persistent','install'));
