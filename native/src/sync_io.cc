#include "sync_io.h"

#include <limits.h>
#include <sys/uio.h>

#include <cerrno>
#include <string>
#include <vector>

#include "args.h"
#include "errors.h"

namespace vfio_native {

namespace {

/** Returned when the data is not in the page cache (EAGAIN): use the async path. */
constexpr double kWouldBlock = -1;
/** Returned when the file (system) does not support RWF_NOWAIT: stop trying on this fd. */
constexpr double kUnsupported = -2;

/** The bytes of one ArrayBufferView (TypedArray or DataView); a detached one is empty. */
iovec ViewIovec(Napi::Env env, napi_value v, uint32_t index) {
  Bytes bytes{nullptr, 0};
  if (!ViewBytes(env, v, &bytes)) {
    Napi::TypeError e = Napi::TypeError::New(
        env, "views[" + std::to_string(index) + "] must be a Uint8Array (or another ArrayBufferView)");
    e.Set("code", Napi::String::New(env, "ERR_INVALID_ARG_TYPE"));
    throw e;
  }
  return iovec{const_cast<uint8_t*>(bytes.data), bytes.length};
}

/** preadvNowait(fd, views[], position) -> one preadv2(RWF_NOWAIT); bytes, or kWouldBlock / kUnsupported. */
Napi::Value PreadvNowait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* syscall = "preadv2";
  int fd = ArgFd(info, 0, "fd");
  if (!info[1].IsArray()) {
    Napi::TypeError e = Napi::TypeError::New(env, "views must be an array of ArrayBufferViews");
    e.Set("code", Napi::String::New(env, "ERR_INVALID_ARG_TYPE"));
    throw e;
  }
  Napi::Array views = info[1].As<Napi::Array>();
  uint64_t position = ArgUint(info, 2, "position", 0, INT64_MAX);
  uint32_t count = views.Length();
  if (count > IOV_MAX) {
    Napi::RangeError e =
        Napi::RangeError::New(env, std::string(syscall) + ": at most " + std::to_string(IOV_MAX) + " views");
    e.Set("code", Napi::String::New(env, "ERR_OUT_OF_RANGE"));
    throw e;
  }
  // Small transfers (the common case) need no heap allocation.
  iovec small[16];
  std::vector<iovec> large;
  iovec* iov = small;
  if (count > 16) {
    large.resize(count);
    iov = large.data();
  }
  uint64_t total = 0;
  for (uint32_t i = 0; i < count; i++) {
    iov[i] = ViewIovec(env, views.Get(i), i);
    total += iov[i].iov_len;
  }
  if (total > static_cast<uint64_t>(INT64_MAX) - position)
    ThrowErrno(env, EOVERFLOW, syscall, "position + length overflows");
  if (count == 0 || total == 0) return Napi::Number::New(env, 0);
  ssize_t n;
  do {
    n = preadv2(fd, iov, static_cast<int>(count), static_cast<off_t>(position), RWF_NOWAIT);
  } while (n < 0 && errno == EINTR);
  if (n >= 0) return Napi::Number::New(env, static_cast<double>(n));
  if (errno == EAGAIN) return Napi::Number::New(env, kWouldBlock);
  // Kernels or file systems without RWF_NOWAIT reads for this fd (pipes, tmpfs...).
  if (errno == EOPNOTSUPP || errno == EINVAL) return Napi::Number::New(env, kUnsupported);
  ThrowErrno(env, errno, syscall, "fd " + std::to_string(fd));
}

}  // namespace

void InitSyncIo(Napi::Env env, Napi::Object exports) {
  exports.Set("preadvNowait", Napi::Function::New(env, PreadvNowait, "preadvNowait"));
}

}  // namespace vfio_native
