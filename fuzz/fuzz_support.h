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

}  // namespace vpci::fuzz
