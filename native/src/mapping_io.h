// pread/pwrite between an fd and mapped memory on the libuv threadpool.
#pragma once
#include <napi.h>

#include <cstdint>

namespace vfio_native {

class Mapping;

class MappingIoWorker : public Napi::AsyncWorker {
 public:
  MappingIoWorker(Napi::Env env, Napi::Promise::Deferred deferred, Mapping* mapping, Napi::Object mapping_obj,
                  bool write, int fd, uint64_t position, uint8_t* memory, size_t length);

 protected:
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& e) override;

 private:
  Napi::Promise::Deferred deferred_;
  Mapping* mapping_;
  Napi::ObjectReference mapping_ref_;  // keeps the Mapping alive while running
  bool write_;
  int fd_;
  uint64_t position_;
  uint8_t* memory_;
  size_t length_;
  size_t done_ = 0;
  int error_ = 0;
};

}  // namespace vfio_native
