#include "mapping_io.h"

#include <unistd.h>

#include <cerrno>

#include "errors.h"
#include "mapping.h"

namespace vfio_native {

MappingIoWorker::MappingIoWorker(Napi::Env env, Napi::Promise::Deferred deferred, Mapping* mapping,
                                 Napi::Object mapping_obj, bool write, int fd, uint64_t position, uint8_t* memory,
                                 size_t length)
    : Napi::AsyncWorker(env, write ? "VfioUserPwrite" : "VfioUserPread"),
      deferred_(deferred),
      mapping_(mapping),
      mapping_ref_(Napi::Persistent(mapping_obj)),
      write_(write),
      fd_(fd),
      position_(position),
      memory_(memory),
      length_(length) {}

void MappingIoWorker::Execute() {
  // Loops over short transfers; stops at EOF (pread returning 0).
  while (done_ < length_) {
    off_t at = static_cast<off_t>(position_ + done_);
    ssize_t n = write_ ? pwrite(fd_, memory_ + done_, length_ - done_, at)
                       : pread(fd_, memory_ + done_, length_ - done_, at);
    if (n < 0) {
      if (errno == EINTR) continue;
      error_ = errno;
      return;
    }
    if (n == 0) return;
    done_ += static_cast<size_t>(n);
  }
}

void MappingIoWorker::OnOK() {
  Napi::Env env = Env();
  mapping_->IoDone();
  if (error_ != 0) {
    deferred_.Reject(ErrnoError(env, error_, write_ ? "pwrite" : "pread", "fd " + std::to_string(fd_)).Value());
  } else {
    deferred_.Resolve(Napi::Number::New(env, static_cast<double>(done_)));
  }
}

void MappingIoWorker::OnError(const Napi::Error& e) {
  mapping_->IoDone();
  deferred_.Reject(e.Value());
}

}  // namespace vfio_native
