// A system call on libuv's thread pool that settles a promise: resolves with
// undefined, or rejects with an errno error (code, errno, syscall). EINTR is
// retried. For fire-and-forget file operations Node's fs lacks.
#pragma once
#include <napi.h>

#include <functional>
#include <string>

namespace vfio_native {
/**
 * Queue `call` (returns -1 and sets errno on failure) on a worker thread; the
 * returned promise settles on the JS thread. `syscall` and `detail` name the
 * operation in the error.
 */
Napi::Promise QueueErrnoWork(Napi::Env env, const char* syscall, std::string detail, std::function<int()> call);
}  // namespace vfio_native
