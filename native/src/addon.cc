// Entry point of the vfio_user_native addon: registers every export listed in
// native/types.ts (NativeBinding). Per-env state lives in AddonData, so the
// addon also loads in worker threads.
#include <dlfcn.h>
#include <napi.h>
#include <sys/mman.h>

#include "addon_data.h"
#include "channel.h"
#include "fallocate.h"
#include "fd_ops.h"
#include "mapping.h"
#include "sockets.h"
#include "sync_io.h"
#include "watcher.h"

namespace vfio_native {

namespace {
/**
 * Pins this shared object in memory for the life of the process. libuv close
 * callbacks and ArrayBuffer finalizers live in this library and can run after
 * the env that loaded it is gone (a Worker exiting); without this the dlclose
 * at Worker teardown leaves them pointing at unmapped code.
 */
void PinLibrary() {
  static bool pinned = false;
  if (pinned) return;
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&PinLibrary), &info) != 0 && info.dli_fname != nullptr) {
    // NOLOAD: only bumps the existing handle; NODELETE: never unmapped.
    if (dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE) != nullptr) pinned = true;
  }
}
}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  PinLibrary();
  auto* data = new AddonData;
  data->channel_ctor = Napi::Persistent(Channel::Define(env));
  data->mapping_ctor = Napi::Persistent(Mapping::Define(env));
  data->watcher_ctor = Napi::Persistent(Watcher::Define(env));
  env.SetInstanceData<AddonData>(data);

  exports.Set("WINDOW_SIZE", Napi::Number::New(env, static_cast<double>(kWindowSize)));
  exports.Set("PROT_READ", Napi::Number::New(env, PROT_READ));
  exports.Set("PROT_WRITE", Napi::Number::New(env, PROT_WRITE));
  InitSockets(env, exports);
  InitFdOps(env, exports);
  InitSyncIo(env, exports);
  InitFallocate(env, exports);
  exports.Set("watchListener", Napi::Function::New(env, Watcher::WatchListener, "watchListener"));
  exports.Set("watchReadable", Napi::Function::New(env, Watcher::WatchReadable, "watchReadable"));
  exports.Set("openChannel", Napi::Function::New(env, Channel::Open, "openChannel"));
  exports.Set("mmapFd", Napi::Function::New(env, Mapping::MmapFd, "mmapFd"));
  return exports;
}

}  // namespace vfio_native

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return vfio_native::Init(env, exports); }
NODE_API_MODULE(vfio_user_native, InitModule)
