{
  "targets": [
    {
      "target_name": "thaw_native",
      "sources": [
        "src/addon.cc",
        "src/core/crc32c.cc",
        "src/napi/checksum_napi.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-O3", "-Wall", "-Wextra"]
    }
  ]
}
