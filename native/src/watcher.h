// Watcher: watchListener (accept4 loop) and watchReadable (level-triggered
// readable notifications). A listener that hits EMFILE/ENFILE/ENOBUFS/ENOMEM
// reports it through onError and pauses for 100 ms instead of spinning. Both poll a private dup of the fd, so JS
// closing the original fd early cannot confuse libuv; close() stops polling and closes the dup.
#pragma once
#include <napi.h>

#include <memory>

#include "poll_handle.h"

namespace vfio_native {

class Watcher : public Napi::ObjectWrap<Watcher> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit Watcher(const Napi::CallbackInfo& info);
  ~Watcher() override;

  /** watchListener(fd, onAccept, onError) */
  static Napi::Value WatchListener(const Napi::CallbackInfo& info);
  /** watchReadable(fd, onReadable) */
  static Napi::Value WatchReadable(const Napi::CallbackInfo& info);

 private:
  enum class Kind { kListener, kReadable };
  static Napi::Value Create(const Napi::CallbackInfo& info, Kind kind);
  static void OnPoll(void* self, int status, int events);
  static void OnEnvCleanup(void* self);
  void HandleListener(int status);
  void HandleReadable(int status);
  /** Calls fn through MakeCallback; returns false if the watcher got closed meanwhile. */
  bool Call(Napi::FunctionReference& fn, const std::initializer_list<napi_value>& args);
  void Stop();
  /** Pauses polling for kBackoffMs (accept4 ran out of fds or memory). */
  void Backoff();
  void CloseTimer();
  Napi::Value Close(const Napi::CallbackInfo& info);

  Kind kind_ = Kind::kReadable;
  int fd_ = -1;  // our dup
  PollHandle poll_;
  uv_timer_t* backoff_ = nullptr;
  Napi::FunctionReference on_event_;
  Napi::FunctionReference on_error_;
  std::unique_ptr<Napi::AsyncContext> context_;
  bool cleanup_hook_ = false;
  bool referenced_ = false;  // Ref() held while open
  Napi::Object recv_;        // valid during OnPoll only
};

}  // namespace vfio_native
