// Mapping: an mmap(MAP_SHARED) of an fd exposed to JS as external
// ArrayBuffers (windows of at most kWindowSize bytes). unmap() detaches every
// window at once and replaces the range with a PROT_NONE placeholder
// ("tombstone") so no stale pointer can reach guest memory or a later mapping.
// The address range is munmapped only when the Mapping object and every window
// have been garbage-collected.
#pragma once
#include <napi.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace vfio_native {

/** Largest ArrayBuffer window: Node 20's buffer.constants.MAX_LENGTH (4 GiB). */
constexpr uint64_t kWindowSize = 1ULL << 32;

/** The mmap'd range, shared by the Mapping and its windows' finalizers. */
struct MappedRange {
  uint8_t* addr = nullptr;
  size_t length = 0;
  std::atomic<int> refs{1};
  void Retain() { refs.fetch_add(1); }
  /** munmap + delete when the last holder lets go. */
  void Release();
};

class Mapping : public Napi::ObjectWrap<Mapping> {
 public:
  static Napi::Function Define(Napi::Env env);
  /** mmapFd(fd, offset, length, prot) */
  static Napi::Value MmapFd(const Napi::CallbackInfo& info);
  explicit Mapping(const Napi::CallbackInfo& info);
  ~Mapping() override;

 private:
  Napi::Value Length(const Napi::CallbackInfo& info);
  Napi::Value Buffers(const Napi::CallbackInfo& info);
  Napi::Value Mapped(const Napi::CallbackInfo& info);
  Napi::Value Unmap(const Napi::CallbackInfo& info);
  void Tombstone();

  MappedRange* range_ = nullptr;
  bool mapped_ = false;
  std::vector<Napi::Reference<Napi::ArrayBuffer>> windows_;
  Napi::Reference<Napi::Array> buffers_;
};

}  // namespace vfio_native
