#include "fd_ops.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "addon_data.h"
#include "args.h"
#include "errors.h"

namespace vfio_native {

namespace {

constexpr uint64_t kAllSeals = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;

Napi::Value EventFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  unsigned initval = static_cast<unsigned>(ArgUintOr(info, 0, "initval", 0, UINT32_MAX, 0));
  int fd = eventfd(initval, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) ThrowErrno(env, errno, "eventfd");
  return Napi::Number::New(env, fd);
}

Napi::Value EventFdWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  uint64_t value = ArgUintOr(info, 1, "value", 1, 9007199254740991ULL, 1);
  ssize_t n;
  do {
    n = write(fd, &value, sizeof value);
  } while (n < 0 && errno == EINTR);
  if (n < 0) ThrowErrno(env, errno, "write", "eventfd " + std::to_string(fd));
  if (n != sizeof value) ThrowErrno(env, EIO, "write", "short eventfd write");
  return env.Undefined();
}

Napi::Value EventFdRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  uint64_t value = 0;
  ssize_t n;
  do {
    n = read(fd, &value, sizeof value);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return Napi::Number::New(env, 0);
    ThrowErrno(env, errno, "read", "eventfd " + std::to_string(fd));
  }
  if (n != sizeof value) ThrowErrno(env, EINVAL, "read", "not an eventfd (short read)");
  return Napi::Number::New(env, static_cast<double>(value));
}

Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(info, 0, "name");
  uint64_t size = ArgUint(info, 1, "size", 0, INT64_MAX);
  uint64_t seals = info.Length() > 2 && !info[2].IsUndefined() ? ArgUint(info, 2, "seals", 0, kAllSeals) : 0;
  if (name.size() > 249 || name.find('\0') != std::string::npos) {
    ThrowErrno(env, EINVAL, "memfd_create", "name must be at most 249 bytes without NUL");
  }
  int fd = memfd_create(name.c_str(), MFD_CLOEXEC | (seals != 0 ? MFD_ALLOW_SEALING : 0));
  if (fd < 0) ThrowErrno(env, errno, "memfd_create");
  if (ftruncate(fd, static_cast<off_t>(size)) < 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "ftruncate");
  }
  if (seals != 0 && fcntl(fd, F_ADD_SEALS, static_cast<int>(seals)) < 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "fcntl(F_ADD_SEALS)");
  }
  return Napi::Number::New(env, fd);
}

/** fdSeals(fd): the F_SEAL_* bits set on a memfd, or -1 for a file that cannot be sealed. */
Napi::Value FdSeals(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0) {
    if (errno == EINVAL) return Napi::Number::New(env, -1);
    ThrowErrno(env, errno, "fcntl(F_GET_SEALS)", "fd " + std::to_string(fd));
  }
  return Napi::Number::New(env, seals);
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  AddonData* data = AddonData::Get(env);
  if (data != nullptr && data->busy_fds.count(fd) != 0) {
    ThrowErrno(env, EBUSY, "close", "fd " + std::to_string(fd) + " is owned by an open channel; close the channel");
  }
  if (close(fd) < 0 && errno != EINTR) ThrowErrno(env, errno, "close", "fd " + std::to_string(fd));
  return env.Undefined();
}

Napi::Value DupFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) ThrowErrno(env, errno, "dup", "fd " + std::to_string(fd));
  return Napi::Number::New(env, copy);
}

}  // namespace

void InitFdOps(Napi::Env env, Napi::Object exports) {
  exports.Set("eventfd", Napi::Function::New(env, EventFd, "eventfd"));
  exports.Set("eventfdWrite", Napi::Function::New(env, EventFdWrite, "eventfdWrite"));
  exports.Set("eventfdRead", Napi::Function::New(env, EventFdRead, "eventfdRead"));
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate, "memfdCreate"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  exports.Set("dupFd", Napi::Function::New(env, DupFd, "dupFd"));
  exports.Set("fdSeals", Napi::Function::New(env, FdSeals, "fdSeals"));
  exports.Set("F_SEAL_SHRINK", Napi::Number::New(env, F_SEAL_SHRINK));
  exports.Set("F_SEAL_GROW", Napi::Number::New(env, F_SEAL_GROW));
}

}  // namespace vfio_native
