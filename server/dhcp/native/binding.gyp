{
  "targets": [
    {
      "target_name": "ironboot_dhcp_native",
      "sources": ["bind_to_device.cc"],
      "cflags_cc": ["-O2", "-Wall"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
