{
  "targets": [
    {
      "target_name": "ironboot_http_native",
      "sources": ["sendfile_loop.cc"],
      "cflags_cc": ["-O2", "-Wall", "-std=c++17"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++14", "-std=gnu++17"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
