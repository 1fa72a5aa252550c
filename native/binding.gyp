{
  "targets": [
    {
      "target_name": "thaw_native",
      "sources": [
        "src/addon.cc",
        "src/core/crc32c.cc",
        "src/core/status.cc",
        "src/core/cuda_api.cc",
        "src/core/pool.cc",
        "src/core/device.cc",
        "src/core/copier.cc",
        "src/core/pipeline.cc",
        "src/napi/checksum_napi.cc",
        "src/napi/status_napi.cc",
        "src/napi/pool_napi.cc",
        "src/napi/cuda_napi.cc",
        "src/napi/job_napi.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-O3", "-Wall", "-Wextra", "-pthread"],
      "libraries": ["-ldl", "-pthread"]
    }
  ]
}
