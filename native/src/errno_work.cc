#include "errno_work.h"

#include <cerrno>
#include <utility>

#include "errors.h"

namespace vfio_native {

namespace {

class ErrnoWorker : public Napi::AsyncWorker {
 public:
  ErrnoWorker(Napi::Env env, const char* syscall, std::string detail, std::function<int()> call)
      : Napi::AsyncWorker(env, "VfioUserFileOp"),
        deferred_(Napi::Promise::Deferred::New(env)),
        syscall_(syscall),
        detail_(std::move(detail)),
        call_(std::move(call)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    int rc;
    do {
      rc = call_();
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) error_ = errno;
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (error_ != 0) {
      deferred_.Reject(ErrnoError(env, error_, syscall_, detail_).Value());
    } else {
      deferred_.Resolve(env.Undefined());
    }
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  const char* syscall_;
  std::string detail_;
  std::function<int()> call_;
  int error_ = 0;
};

}  // namespace

Napi::Promise QueueErrnoWork(Napi::Env env, const char* syscall, std::string detail, std::function<int()> call) {
  auto* worker = new ErrnoWorker(env, syscall, std::move(detail), std::move(call));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace vfio_native
