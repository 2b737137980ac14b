// Shared by the fuzz targets: an invariant check that survives release builds (the
// seed-replay driver runs every target under CTest) and the deterministic back ends the
// virtio fuzzers build their devices on.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <vector>

#include "base/error.h"
#include "devices/block_backend.h"
#include "devices/virtio_rng.h"
#include "virtio/guest_memory.h"

// An invariant the target checks: abort() so libFuzzer records the input as a crash.
#define FUZZ_CHECK(condition)                                                                \
  do {                                                                                       \
    if (!(condition)) {                                                                      \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                          \
    }                                                                                        \
  } while (false)

namespace vpci::fuzz {

// Deterministic entropy, so a replayed input behaves the same.
class CountingEntropy final : public devices::EntropySource {
 public:
  Result<std::size_t> fill(std::span<std::uint8_t> out) override {
    for (auto& b : out) b = static_cast<std::uint8_t>(++counter_);
    return out.size();
  }

 private:
  std::uint8_t counter_ = 0;
};

class VectorBackend final : public devices::BlockBackend {
 public:
  std::uint64_t size_bytes() const override { return bytes_.size(); }
  Status read(std::uint64_t offset, std::span<const std::span<std::uint8_t>> buffers) override {
    for (auto b : buffers) {
      if (offset + b.size() > bytes_.size()) return make_error(ErrorCode::kOutOfRange, "read");
      std::copy_n(bytes_.begin() + static_cast<std::ptrdiff_t>(offset), b.size(), b.begin());
      offset += b.size();
    }
    return {};
  }
  Status write(std::uint64_t offset, std::span<const std::span<std::uint8_t>> buffers) override {
    for (auto b : buffers) {
      if (offset + b.size() > bytes_.size()) return make_error(ErrorCode::kOutOfRange, "write");
      std::copy(b.begin(), b.end(), bytes_.begin() + static_cast<std::ptrdiff_t>(offset));
      offset += b.size();
    }
    return {};
  }
  Status flush() override { return {}; }
  Status discard(std::uint64_t, std::uint64_t) override { return {}; }
  Status write_zeroes(std::uint64_t, std::uint64_t, bool) override { return {}; }

 private:
  std::vector<std::uint8_t> bytes_ = std::vector<std::uint8_t>(64 * 1024);
};

// The fuzz input read front to back; past its end every field reads as zero.
class Input {
 public:
  Input(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  [[nodiscard]] bool empty() const { return pos_ >= size_; }
  std::uint8_t u8() { return pos_ < size_ ? data_[pos_++] : 0; }
  std::uint16_t u16() { return static_cast<std::uint16_t>(u8() | (u8() << 8)); }
  std::uint64_t u64() {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= std::uint64_t{u8()} << (8 * i);
    return v;
  }
  std::vector<std::uint8_t> bytes(std::size_t n) {
    std::vector<std::uint8_t> out(n, 0);
    for (auto& b : out) b = u8();
    return out;
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

// Registers `ram` as guest RAM at `base` and checks that every host range the guest
// memory reads, writes or hands out lies inside it: a device must reach nothing else.
inline void map_checked_ram(virtio::GuestMemory& memory, std::span<std::uint8_t> ram,
                            virtio::GuestAddress base) {
  virtio::MemoryRegionSpec spec;
  spec.guest_address = base;
  spec.size = ram.size();
  spec.host = ram.data();
  FUZZ_CHECK(memory.add_region(std::move(spec)).has_value());
  memory.set_access_observer([ram](const virtio::AccessRecord& r) {
    const auto begin = reinterpret_cast<std::uintptr_t>(ram.data());
    const auto at = reinterpret_cast<std::uintptr_t>(r.host);
    const bool guest_access_inside_ram =
        at >= begin && r.length <= ram.size() && at - begin <= ram.size() - r.length;
    FUZZ_CHECK(guest_access_inside_ram);
  });
}

}  // namespace vpci::fuzz
