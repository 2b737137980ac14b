// Test support for virtio-blk: a temporary backing file, an in-memory backend with
// fault injection, and a harness that brings a BlockDevice up behind a DeviceCore and
// submits requests through the fake driver the way a guest would.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "devices/virtio_blk.h"
#include "tests/virtio/fake_driver.h"
#include "virtio/device_core.h"

namespace vpci::devices::testing {

class TempFile {
 public:
  explicit TempFile(std::uint64_t size, std::uint8_t fill = 0);
  ~TempFile();
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] std::vector<std::uint8_t> contents() const;

 private:
  std::string path_;
};

// Storage in a vector; every operation can be made to fail.
class MemoryBackend final : public BlockBackend {
 public:
  explicit MemoryBackend(std::uint64_t size) : bytes(size, 0) {}
  std::uint64_t size_bytes() const override { return bytes.size(); }
  Status read(std::uint64_t offset, std::span<const std::span<std::uint8_t>> buffers) override;
  Status write(std::uint64_t offset, std::span<const std::span<std::uint8_t>> buffers) override;
  Status flush() override;
  Status discard(std::uint64_t offset, std::uint64_t length) override;
  Status write_zeroes(std::uint64_t offset, std::uint64_t length, bool may_unmap) override;

  std::vector<std::uint8_t> bytes;
  bool fail_reads = false;
  bool fail_writes = false;
  bool fail_flush = false;
  bool discard_unsupported = false;
  int flushes = 0;
};

struct BlkResult {
  std::uint8_t status = 0xFF;
  std::uint32_t used_length = 0;
  std::vector<std::uint8_t> data;  // device-written bytes before the status byte
};

enum class Ring { kSplit, kPacked };

struct BlkRequest {
  std::uint32_t type = blk::kTypeIn;
  std::uint64_t sector = 0;
  std::vector<std::uint8_t> out;  // data after the header
  std::uint32_t in_length = 0;    // device-writable bytes before the status byte
};

class BlkHarness {
 public:
  // Brings the device up with the modern sequence. `extra_features` are accepted if
  // offered (all device features are accepted anyway).
  // `backing` says how the device reaches guest RAM (tests/virtio/fake_driver.h).
  // With `loop`, the device is activated on it (asynchronous I/O) and every wait below
  // runs the loop until the device answers (at most 10 s, then the result says
  // "not completed").
  BlkHarness(std::unique_ptr<BlockDevice> device, Ring ring, std::uint64_t extra_features = 0,
             virtio::testing::RamBacking backing = virtio::testing::RamBacking::kMapped,
             EventLoop* loop = nullptr);

  // Submits one request on `queue` and runs it. `out` is the data after the header;
  // `in_length` the device-writable bytes before the status byte. Data buffers are cut
  // into `pieces` descriptors; `indirect` puts the chain in an indirect table.
  BlkResult submit(std::uint16_t queue, std::uint32_t type, std::uint64_t sector,
                   std::span<const std::uint8_t> out, std::uint32_t in_length, int pieces = 1,
                   bool indirect = false);
  BlkResult read(std::uint64_t sector, std::uint32_t bytes, std::uint16_t queue = 0) {
    return submit(queue, blk::kTypeIn, sector, {}, bytes);
  }
  BlkResult write(std::uint64_t sector, std::span<const std::uint8_t> data,
                  std::uint16_t queue = 0) {
    return submit(queue, blk::kTypeOut, sector, data, 0);
  }
  BlkResult flush(std::uint16_t queue = 0) { return submit(queue, blk::kTypeFlush, 0, {}, 0); }
  BlkResult segments(std::uint32_t type, const std::vector<blk::DiscardWriteZeroesSegment>& list);
  // Adds every request to `queue` (all in flight together), notifies once and waits
  // for all of them; results in request order. A split ring only.
  std::vector<BlkResult> submit_all(std::uint16_t queue, const std::vector<BlkRequest>& requests);

  [[nodiscard]] virtio::DeviceCore& core() { return *core_; }
  [[nodiscard]] BlockDevice& device() { return *device_; }
  [[nodiscard]] virtio::testing::FakeGuestRam& ram() { return *ram_; }
  [[nodiscard]] virtio::testing::RecordingInterrupts& interrupts() { return interrupts_; }
  [[nodiscard]] std::size_t queue_count() const { return split_.size() + packed_.size(); }
  // Adds an arbitrary chain to `queue` without running it.
  void add_raw(std::uint16_t queue, const virtio::testing::ChainBuilder& chain);
  // The next used buffer of `queue`, running the loop (if any) until there is one.
  std::optional<virtio::testing::UsedBuffer> wait_used(std::uint16_t queue);

 private:
  virtio::testing::ChainBuilder build(std::uint32_t type, std::uint64_t sector,
                                      std::span<const std::uint8_t> out, std::uint32_t in_length,
                                      int pieces);
  static BlkResult result_of(const virtio::testing::ChainBuilder& chain,
                             const virtio::testing::UsedBuffer& used);

  EventLoop* loop_ = nullptr;
  std::shared_ptr<virtio::GuestMemory> memory_ = std::make_shared<virtio::GuestMemory>();
  std::unique_ptr<virtio::testing::FakeGuestRam> ram_;
  virtio::testing::RecordingInterrupts interrupts_;
  BlockDevice* device_;
  std::unique_ptr<virtio::DeviceCore> core_;
  std::vector<std::unique_ptr<virtio::testing::SplitRing>> split_;
  std::vector<std::unique_ptr<virtio::testing::PackedRing>> packed_;
  std::size_t ring_bytes_ = 0;  // RAM kept when recycling request buffers
};

}  // namespace vpci::devices::testing
