// UNIX sockets: listenUnix, connectUnix, socketpair (stream); sdNotify (a datagram to systemd).
#pragma once
#include <napi.h>

namespace vfio_native {
void InitSockets(Napi::Env env, Napi::Object exports);
/** Sets O_NONBLOCK (and FD_CLOEXEC); returns 0 or errno. */
int MakeNonBlockingCloexec(int fd);
}  // namespace vfio_native
