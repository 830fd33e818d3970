#include "fallocate.h"

#include <fcntl.h>
#include <linux/falloc.h>

#include <cerrno>
#include <cstdint>
#include <string>

#include "args.h"
#include "errno_work.h"
#include "errors.h"

namespace vfio_native {

namespace {

/** Largest offset / length: a JS safe integer (2^53 - 1). Their sum stays below INT64_MAX. */
constexpr uint64_t kMaxSafe = 9007199254740991ULL;

/** Mode bits callers may combine; anything else (collapse, insert, unshare...) is refused before the syscall. */
constexpr uint64_t kAllowedModes = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE;

/** Validated (fd, mode, offset, length); throws TypeError/RangeError. */
struct FallocateArgs {
  int fd;
  int mode;
  uint64_t offset;
  uint64_t length;
};

FallocateArgs ParseArgs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  FallocateArgs a;
  a.fd = ArgFd(info, 0, "fd");
  uint64_t mode = ArgUint(info, 1, "mode", 0, UINT32_MAX);
  if ((mode & ~kAllowedModes) != 0) {
    Napi::RangeError e = Napi::RangeError::New(
        env, "mode may only combine FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE and FALLOC_FL_ZERO_RANGE");
    e.Set("code", Napi::String::New(env, "ERR_OUT_OF_RANGE"));
    throw e;
  }
  a.mode = static_cast<int>(mode);
  a.offset = ArgUint(info, 2, "offset", 0, kMaxSafe);
  a.length = ArgUint(info, 3, "length", 1, kMaxSafe);
  return a;
}

/** fallocate(fd, mode, offset, length) -> Promise<void>; bad arguments reject with TypeError/RangeError. */
Napi::Value Fallocate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  FallocateArgs a;
  try {
    a = ParseArgs(info);
  } catch (const Napi::Error& e) {
    Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(env);
    deferred.Reject(e.Value());
    return deferred.Promise();
  }
  return QueueErrnoWork(env, "fallocate", "fd " + std::to_string(a.fd), [a]() {
    return fallocate(a.fd, a.mode, static_cast<off_t>(a.offset), static_cast<off_t>(a.length));
  });
}

/** fallocateSync(fd, mode, offset, length): the same on the calling thread; throws. */
Napi::Value FallocateSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  FallocateArgs a = ParseArgs(info);
  int rc;
  do {
    rc = fallocate(a.fd, a.mode, static_cast<off_t>(a.offset), static_cast<off_t>(a.length));
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) ThrowErrno(env, errno, "fallocate", "fd " + std::to_string(a.fd));
  return env.Undefined();
}

/**
 * startWriteback(fd, offset, length) -> Promise<void>: sync_file_range(2)
 * SYNC_FILE_RANGE_WRITE on a worker thread: starts writing the range's dirty
 * pages to disk without waiting for them (durability still needs fdatasync).
 * Length 0 means "to the end of the file".
 */
Napi::Value StartWriteback(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint64_t offset;
  uint64_t length;
  try {
    fd = ArgFd(info, 0, "fd");
    offset = ArgUint(info, 1, "offset", 0, kMaxSafe);
    length = ArgUint(info, 2, "length", 0, kMaxSafe);
  } catch (const Napi::Error& e) {
    Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(env);
    deferred.Reject(e.Value());
    return deferred.Promise();
  }
  return QueueErrnoWork(env, "sync_file_range", "fd " + std::to_string(fd), [fd, offset, length]() {
    return sync_file_range(fd, static_cast<off_t>(offset), static_cast<off_t>(length), SYNC_FILE_RANGE_WRITE);
  });
}

}  // namespace

void InitFallocate(Napi::Env env, Napi::Object exports) {
  exports.Set("FALLOC_PUNCH_HOLE", Napi::Number::New(env, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE));
  exports.Set("FALLOC_ZERO_RANGE", Napi::Number::New(env, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE));
  exports.Set("fallocate", Napi::Function::New(env, Fallocate, "fallocate"));
  exports.Set("fallocateSync", Napi::Function::New(env, FallocateSync, "fallocateSync"));
  exports.Set("startWriteback", Napi::Function::New(env, StartWriteback, "startWriteback"));
}

}  // namespace vfio_native
