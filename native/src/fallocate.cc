#include "fallocate.h"

#include <fcntl.h>
#include <linux/falloc.h>

#include <cerrno>
#include <cstdint>
#include <string>

#include "args.h"
#include "errors.h"

namespace vfio_native {

namespace {

/** Largest offset / length: a JS safe integer (2^53 - 1). Their sum stays below INT64_MAX. */
constexpr uint64_t kMaxSafe = 9007199254740991ULL;

/** Mode bits callers may combine; anything else (collapse, insert, unshare...) is refused before the syscall. */
constexpr uint64_t kAllowedModes = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE;

/** One fallocate call on a worker thread, settling a promise. */
class FallocateWorker : public Napi::AsyncWorker {
 public:
  FallocateWorker(Napi::Env env, Napi::Promise::Deferred deferred, int fd, int mode, uint64_t offset,
                  uint64_t length)
      : Napi::AsyncWorker(env, "VfioUserFallocate"),
        deferred_(deferred),
        fd_(fd),
        mode_(mode),
        offset_(offset),
        length_(length) {}

 protected:
  void Execute() override {
    int rc;
    do {
      rc = fallocate(fd_, mode_, static_cast<off_t>(offset_), static_cast<off_t>(length_));
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) error_ = errno;
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (error_ != 0) {
      deferred_.Reject(ErrnoError(env, error_, "fallocate", "fd " + std::to_string(fd_)).Value());
    } else {
      deferred_.Resolve(env.Undefined());
    }
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  int fd_;
  int mode_;
  uint64_t offset_;
  uint64_t length_;
  int error_ = 0;
};

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
  Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(env);
  try {
    FallocateArgs a = ParseArgs(info);
    auto* worker = new FallocateWorker(env, deferred, a.fd, a.mode, a.offset, a.length);
    worker->Queue();
  } catch (const Napi::Error& e) {
    deferred.Reject(e.Value());
  }
  return deferred.Promise();
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

}  // namespace

void InitFallocate(Napi::Env env, Napi::Object exports) {
  exports.Set("FALLOC_PUNCH_HOLE", Napi::Number::New(env, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE));
  exports.Set("FALLOC_ZERO_RANGE", Napi::Number::New(env, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE));
  exports.Set("fallocate", Napi::Function::New(env, Fallocate, "fallocate"));
  exports.Set("fallocateSync", Napi::Function::New(env, FallocateSync, "fallocateSync"));
}

}  // namespace vfio_native
