// Synchronous, never-blocking vectored file reads: preadv2 with RWF_NOWAIT.
// A read is served from the page cache or refused at once (EAGAIN), so the
// event loop can finish a cached read in the same turn and fall back to the
// thread pool only when the data is not resident.
#pragma once
#include <napi.h>

namespace vfio_native {
/** Registers preadvNowait (see native/types.ts). */
void InitSyncIo(Napi::Env env, Napi::Object exports);
}  // namespace vfio_native
