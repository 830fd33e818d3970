#include "mapping.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "addon_data.h"
#include "args.h"
#include "errors.h"

namespace vfio_native {

void MappedRange::Release() {
  if (refs.fetch_sub(1) == 1) {
    munmap(addr, length);
    delete this;
  }
}

namespace {
void FinalizeWindow(napi_env /*env*/, void* /*data*/, void* hint) { static_cast<MappedRange*>(hint)->Release(); }
}  // namespace

Napi::Function Mapping::Define(Napi::Env env) {
  return DefineClass(env, "Mapping",
                     {
                         InstanceAccessor<&Mapping::Length>("length"),
                         InstanceAccessor<&Mapping::Buffers>("buffers"),
                         InstanceAccessor<&Mapping::Mapped>("mapped"),
                         InstanceMethod<&Mapping::Unmap>("unmap"),
                     });
}

Mapping::Mapping(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Mapping>(info) {}

Mapping::~Mapping() {
  windows_.clear();
  buffers_.Reset();
  if (range_ != nullptr) range_->Release();
}

Napi::Value Mapping::MmapFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  uint64_t offset = ArgUint(info, 1, "offset", 0, INT64_MAX);
  uint64_t length = ArgUint(info, 2, "length", 1, SIZE_MAX);
  int prot = static_cast<int>(ArgUint(info, 3, "prot", 1, PROT_READ | PROT_WRITE));
  uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  if (offset % page != 0) ThrowErrno(env, EINVAL, "mmap", "offset " + std::to_string(offset) + " is not page-aligned");
  if (offset + length < offset) ThrowErrno(env, EOVERFLOW, "mmap", "offset + length overflows");
  struct stat st;
  if (fstat(fd, &st) < 0) ThrowErrno(env, errno, "fstat", "fd " + std::to_string(fd));
  // Touching file pages past EOF raises SIGBUS: refuse such mappings up front.
  if (S_ISREG(st.st_mode) && offset + length > static_cast<uint64_t>(st.st_size)) {
    ThrowErrno(env, EINVAL, "mmap",
               "range [" + std::to_string(offset) + ", " + std::to_string(offset + length) +
                   ") extends past the end of the file (" + std::to_string(st.st_size) + " bytes)");
  }
  void* addr = mmap(nullptr, length, prot, MAP_SHARED, fd, static_cast<off_t>(offset));
  if (addr == MAP_FAILED) ThrowErrno(env, errno, "mmap", "fd " + std::to_string(fd));

  auto* range = new MappedRange;
  range->addr = static_cast<uint8_t*>(addr);
  range->length = length;
  Napi::Object obj = AddonData::Get(env)->mapping_ctor.New({});
  Mapping* self = Unwrap(obj);
  self->range_ = range;  // the Mapping's reference; windows add theirs
  self->mapped_ = true;

  size_t count = static_cast<size_t>((length + kWindowSize - 1) / kWindowSize);
  Napi::Array buffers = Napi::Array::New(env, count);
  for (size_t i = 0; i < count; i++) {
    uint64_t start = i * kWindowSize;
    size_t len = static_cast<size_t>(std::min<uint64_t>(kWindowSize, length - start));
    // len <= kWindowSize is what Node 20 accepts; checked before creating.
    napi_value ab;
    range->Retain();
    napi_status status = napi_create_external_arraybuffer(env, range->addr + start, len, FinalizeWindow, range, &ab);
    if (status != napi_ok) {
      range->Release();
      self->mapped_ = false;
      self->Tombstone();
      ThrowErrno(env, ENOMEM, "napi_create_external_arraybuffer", "window " + std::to_string(i));
    }
    Napi::ArrayBuffer buffer(env, ab);
    self->windows_.push_back(Napi::Persistent(buffer));
    buffers.Set(static_cast<uint32_t>(i), buffer);
  }
  self->buffers_ = Napi::Persistent(buffers);
  return obj;
}

void Mapping::Tombstone() {
  // Keeps the address range reserved (no later mmap can land there) while
  // dropping the guest pages; munmap happens once nothing can point here.
  void* r =
      mmap(range_->addr, range_->length, PROT_NONE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (r == MAP_FAILED) {
    // Could not replace it: at least make the shared pages inaccessible.
    mprotect(range_->addr, range_->length, PROT_NONE);
  }
}

Napi::Value Mapping::Unmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!mapped_) return env.Undefined();
  mapped_ = false;
  for (auto& w : windows_) {
    Napi::ArrayBuffer ab = w.Value();
    if (!ab.IsEmpty() && !ab.IsDetached()) ab.Detach();
  }
  Tombstone();
  return env.Undefined();
}

Napi::Value Mapping::Length(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(range_ != nullptr ? range_->length : 0));
}
Napi::Value Mapping::Buffers(const Napi::CallbackInfo& info) {
  return buffers_.IsEmpty() ? Napi::Array::New(info.Env()) : buffers_.Value();
}
Napi::Value Mapping::Mapped(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), mapped_); }

}  // namespace vfio_native
