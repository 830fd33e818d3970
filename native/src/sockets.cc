#include "sockets.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "args.h"
#include "errors.h"

namespace vfio_native {

int MakeNonBlockingCloexec(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return errno;
  if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return errno;
  int fdfl = fcntl(fd, F_GETFD);
  if (fdfl < 0) return errno;
  if (!(fdfl & FD_CLOEXEC) && fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0) return errno;
  return 0;
}

namespace {

/** Fills a sockaddr_un; a leading NUL selects the abstract namespace. */
socklen_t MakeAddress(Napi::Env env, const std::string& path, sockaddr_un* addr, const char* syscall) {
  memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  if (path.empty()) ThrowErrno(env, EINVAL, syscall, "empty socket path");
  bool abstract = path[0] == '\0';
  if (!abstract && path.find('\0') != std::string::npos) ThrowErrno(env, EINVAL, syscall, "socket path contains NUL");
  if (path.size() + (abstract ? 0 : 1) > sizeof(addr->sun_path)) {
    ThrowErrno(env, ENAMETOOLONG, syscall,
               "socket path longer than " + std::to_string(sizeof(addr->sun_path) - 1) + " bytes");
  }
  memcpy(addr->sun_path, path.data(), path.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + (abstract ? 0 : 1));
}

Napi::Value ListenUnix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  int backlog = static_cast<int>(ArgUintOr(info, 1, "backlog", 0, 65535, 16));
  sockaddr_un addr;
  socklen_t len = MakeAddress(env, path, &addr, "bind");
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowErrno(env, errno, "socket");
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) < 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "bind", path);
  }
  if (listen(fd, backlog) < 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "listen", path);
  }
  return Napi::Number::New(env, fd);
}

Napi::Value ConnectUnix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  sockaddr_un addr;
  socklen_t len = MakeAddress(env, path, &addr, "connect");
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowErrno(env, errno, "socket");
  int r;
  do {
    r = connect(fd, reinterpret_cast<sockaddr*>(&addr), len);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "connect", path);
  }
  int err = MakeNonBlockingCloexec(fd);
  if (err != 0) {
    close(fd);
    ThrowErrno(env, err, "fcntl");
  }
  return Napi::Number::New(env, fd);
}

Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) ThrowErrno(env, errno, "socketpair");
  Napi::Array result = Napi::Array::New(env, 2);
  result.Set(0u, Napi::Number::New(env, sv[0]));
  result.Set(1u, Napi::Number::New(env, sv[1]));
  return result;
}

/**
 * sd_notify(3) without libsystemd: one datagram with `state` to the
 * AF_UNIX socket at `path` (NOTIFY_SOCKET; a leading '@' is the abstract
 * namespace). Never blocks: a full receive queue is EAGAIN, for the caller to log.
 */
Napi::Value SdNotify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  std::string state = ArgString(info, 1, "state");
  if (!path.empty() && path[0] == '@') path[0] = '\0';
  sockaddr_un addr;
  socklen_t len = MakeAddress(env, path, &addr, "sendto");
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowErrno(env, errno, "socket");
  ssize_t sent;
  do {
    sent = sendto(fd, state.data(), state.size(), MSG_NOSIGNAL | MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&addr), len);
  } while (sent < 0 && errno == EINTR);
  int err = sent < 0 ? errno : 0;
  close(fd);
  if (err != 0) ThrowErrno(env, err, "sendto", "NOTIFY_SOCKET");
  return env.Undefined();
}

}  // namespace

void InitSockets(Napi::Env env, Napi::Object exports) {
  exports.Set("sdNotify", Napi::Function::New(env, SdNotify, "sdNotify"));
  exports.Set("listenUnix", Napi::Function::New(env, ListenUnix, "listenUnix"));
  exports.Set("connectUnix", Napi::Function::New(env, ConnectUnix, "connectUnix"));
  exports.Set("socketpair", Napi::Function::New(env, SocketPair, "socketpair"));
}

}  // namespace vfio_native
