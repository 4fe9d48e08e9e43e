{
  "targets": [
    {
      "target_name": "gnt_native",
      "sources": ["native/gnt_native.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
