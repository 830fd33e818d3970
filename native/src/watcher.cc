#include "watcher.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "addon_data.h"
#include "args.h"
#include "errors.h"

namespace vfio_native {

Napi::Function Watcher::Define(Napi::Env env) {
  return DefineClass(env, "Watcher", {InstanceMethod<&Watcher::Close>("close")});
}

Watcher::Watcher(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Watcher>(info) {}

namespace {
constexpr uint64_t kBackoffMs = 100;
}  // namespace

Watcher::~Watcher() {
  CloseTimer();
  poll_.Close();
  if (fd_ >= 0) close(fd_);
  if (cleanup_hook_) napi_remove_env_cleanup_hook(Env(), OnEnvCleanup, this);
}

Napi::Value Watcher::WatchListener(const Napi::CallbackInfo& info) { return Create(info, Kind::kListener); }
Napi::Value Watcher::WatchReadable(const Napi::CallbackInfo& info) { return Create(info, Kind::kReadable); }

Napi::Value Watcher::Create(const Napi::CallbackInfo& info, Kind kind) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  Napi::Function on_event = ArgFunction(info, 1, kind == Kind::kListener ? "onAccept" : "onReadable");
  Napi::Function on_error;
  if (kind == Kind::kListener) on_error = ArgFunction(info, 2, "onError");

  int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) ThrowErrno(env, errno, "dup", "fd " + std::to_string(fd));
  Napi::Object obj = AddonData::Get(env)->watcher_ctor.New({});
  Watcher* self = Unwrap(obj);
  self->kind_ = kind;
  self->fd_ = dup_fd;  // the destructor closes it from now on
  if (kind == Kind::kListener) {
    int fl = fcntl(dup_fd, F_GETFL);  // shared with the original (same open file)
    if (fl >= 0 && !(fl & O_NONBLOCK)) fcntl(dup_fd, F_SETFL, fl | O_NONBLOCK);
  }
  int r = self->poll_.Init(env, dup_fd, OnPoll, self);
  if (r == 0) r = self->poll_.Set(UV_READABLE);
  if (r != 0) {
    self->Stop();
    ThrowErrno(env, -r, "uv_poll_start", "fd " + std::to_string(fd) + " cannot be polled");
  }
  self->on_event_ = Napi::Persistent(on_event);
  if (kind == Kind::kListener) self->on_error_ = Napi::Persistent(on_error);
  self->context_ =
      std::make_unique<Napi::AsyncContext>(env, kind == Kind::kListener ? "VfioUserListener" : "VfioUserWatcher", obj);
  napi_add_env_cleanup_hook(env, OnEnvCleanup, self);
  self->cleanup_hook_ = true;
  self->Ref();
  self->referenced_ = true;  // alive while polling
  return obj;
}

void Watcher::CloseTimer() {
  if (backoff_ == nullptr) return;
  backoff_->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(backoff_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  backoff_ = nullptr;
}

void Watcher::Backoff() {
  if (backoff_ == nullptr) {
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(Env(), &loop) != napi_ok || loop == nullptr) return;
    backoff_ = new uv_timer_t;
    uv_timer_init(loop, backoff_);
    backoff_->data = this;
  }
  poll_.Set(0);
  uv_timer_start(
      backoff_,
      [](uv_timer_t* t) {
        auto* w = static_cast<Watcher*>(t->data);
        if (w != nullptr && w->fd_ >= 0) w->poll_.Set(UV_READABLE);
      },
      kBackoffMs, 0);
}

void Watcher::OnEnvCleanup(void* self) {
  auto* w = static_cast<Watcher*>(self);
  w->cleanup_hook_ = false;
  w->CloseTimer();
  w->poll_.Close();
  if (w->fd_ >= 0) close(w->fd_);
  w->fd_ = -1;
}

void Watcher::Stop() {
  CloseTimer();
  poll_.Close();
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
    if (cleanup_hook_) {
      napi_remove_env_cleanup_hook(Env(), OnEnvCleanup, this);
      cleanup_hook_ = false;
    }
    on_event_.Reset();
    on_error_.Reset();
    if (referenced_) {
      referenced_ = false;
      Unref();
    }
  }
}

Napi::Value Watcher::Close(const Napi::CallbackInfo& info) {
  Stop();
  return info.Env().Undefined();
}

bool Watcher::Call(Napi::FunctionReference& fn, const std::initializer_list<napi_value>& args) {
  try {
    fn.MakeCallback(recv_, args, *context_);
  } catch (const Napi::Error& e) {
    ReportCallbackError(Env(), e);
  }
  return fd_ >= 0;
}

void Watcher::OnPoll(void* self, int status, int /*events*/) {
  auto* w = static_cast<Watcher*>(self);
  Napi::HandleScope scope(w->Env());
  // A local handle keeps the wrapper alive even if a callback closes the watcher.
  w->recv_ = w->Value();
  if (w->kind_ == Kind::kListener) {
    w->HandleListener(status);
  } else {
    w->HandleReadable(status);
  }
  w->recv_ = Napi::Object();
}

void Watcher::HandleReadable(int status) {
  if (status < 0) {
    Stop();  // poll error on an eventfd-like fd: nothing sensible to retry
    return;
  }
  Call(on_event_, {});
}

void Watcher::HandleListener(int status) {
  Napi::Env env = Env();
  if (status < 0) {
    Napi::FunctionReference on_error = std::move(on_error_);
    Stop();
    Call(on_error, {Napi::String::New(env, Reason(-status, "poll on listening socket failed"))});
    return;
  }
  for (int i = 0; i < 64 && fd_ >= 0; i++) {
    int client = accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (client < 0) {
      int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK) return;
      if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        // The level-triggered poll would spin: pause, report, retry later.
        Backoff();
        Call(on_error_, {Napi::String::New(env, Reason(err, "accept4 failed; retrying in 100 ms"))});
        return;
      }
      // EBADF, EINVAL, ENOTSOCK...: the socket is unusable; stop watching.
      Napi::FunctionReference on_error = std::move(on_error_);
      Stop();
      Call(on_error, {Napi::String::New(env, Reason(err, "accept4 failed; listener no longer watched"))});
      return;
    }
    if (!Call(on_event_, {Napi::Number::New(env, client)})) return;
  }
}

}  // namespace vfio_native
