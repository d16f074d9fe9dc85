{
  "targets": [
    {
      "target_name": "sluice_bpf",
      "sources": [
        "src/addon.cc",
        "src/common.cc",
        "src/object.cc",
        "src/map.cc",
        "src/prog.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node:path').dirname(require.resolve('nan'))\")"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-cast-function-type"],
      "cflags_cc!": ["-fno-exceptions"],
      "libraries": ["-lbpf", "-lelf", "-lz"]
    }
  ]
}
