{
  "targets": [
    {
      "target_name": "vfio_user_native",
      "sources": [ "native/src/addon.cc" ],
      "include_dirs": [ "<!(node -p \"require('node-addon-api').include_dir\")" ],
      "defines": [ "NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS" ],
      "cflags_cc!": [ "-fno-exceptions", "-fno-rtti" ],
      "cflags_cc": [ "-std=c++17", "-fvisibility=hidden", "-Wall", "-Wextra", "-O2" ],
      "conditions": [ [ "OS!='linux'", { "sources!": [ "native/src/addon.cc" ] } ] ]
    }
  ]
}
