{
  "targets": [
    {
      "target_name": "vfio_user_native",
      "sources": [
        "native/src/addon.cc",
        "native/src/args.cc",
        "native/src/channel.cc",
        "native/src/errors.cc",
        "native/src/fallocate.cc",
        "native/src/errno_work.cc",
        "native/src/fd_ops.cc",
        "native/src/mapping.cc",
        "native/src/poll_handle.cc",
        "native/src/send_queue.cc",
        "native/src/sockets.cc",
        "native/src/sync_io.cc",
        "native/src/watcher.cc"
      ],
      "include_dirs": [ "<!(node -p \"require('node-addon-api').include_dir\")" ],
      "defines": [ "NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "_GNU_SOURCE" ],
      "cflags!": [ "-fno-exceptions" ],
      "cflags_cc!": [ "-fno-exceptions", "-fno-rtti" ],
      "cflags_cc": [ "-std=c++17", "-fvisibility=hidden", "-Wall", "-Wextra", "-O2" ],
      "conditions": [ [ "OS!='linux'", { "sources=": [ ] } ] ]
    }
  ]
}
