// virtio-blk (virtio 1.3 §5.2) over a BlockBackend (a file or a block device).
//
// Requests (§5.2.6): a 16-byte device-readable header {le32 type, le32 reserved,
// le64 sector}, data, and a one-byte status as the last device-writable byte.
//   IN            read data_len bytes at sector * 512 into the writable part
//   OUT           write the readable data after the header
//   FLUSH         backend flush (fdatasync): every write completed before it is stable
//   GET_ID        up to 20 bytes of the serial, NUL-padded
//   DISCARD       segments {le64 sector, le32 num_sectors, le32 flags}: punch holes
//   WRITE_ZEROES  same segments; flags.unmap allows deallocating
//   anything else VIRTIO_BLK_S_UNSUPP
// Status: VIRTIO_BLK_S_OK, VIRTIO_BLK_S_IOERR for backend errors and for requests the
// device refuses (data length not a multiple of 512, range beyond capacity, writes on
// a read-only device — §5.2.6.2 "MUST set the status byte to VIRTIO_BLK_S_IOERR for a
// write request if VIRTIO_BLK_F_RO is offered"), VIRTIO_BLK_S_UNSUPP for unknown types,
// unknown segment flags, unmap on DISCARD (§5.2.6.2), too many segments, and backends
// that cannot discard. A chain too short to hold the header or the status byte breaks
// the request framing itself: the queue fails and the device needs a reset.
//
// Queues: `num_queues` request queues (VIRTIO_BLK_F_MQ when > 1), each independently.
//
// Asynchronous I/O: once activated on an event loop, IN, OUT and FLUSH requests over
// host-mapped guest memory go to a BlockIo engine (devices/block_io.h: io_uring, or a
// thread pool where io_uring is unavailable) and complete later, in any order
// (§5.2.6.4), many at a time; the device sends one used buffer notification per batch of
// completions. Everything else — GET_ID, DISCARD, WRITE_ZEROES, requests refused up
// front, and all requests over message-backed guest memory (copied through a bounce
// buffer, server/message_dma.h) — completes inside the notification. Reset, queue reset
// and drain() wait for the engine, so no I/O touches guest memory after they return.
// Without a loop (in-process tests) every request is synchronous.
//
// Durability: writes go to the backend's page cache (pwritev or io_uring writev); FLUSH
// is fdatasync, started only after every write that completed before it. VIRTIO_BLK_F_FLUSH is
// offered without VIRTIO_BLK_F_CONFIG_WCE, so the driver assumes a writeback cache (§5.2.5.1) and
// issues FLUSH when it needs stability.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "devices/block_backend.h"
#include "devices/block_io.h"
#include "virtio/device.h"

namespace vpci::devices {

namespace blk {
// Feature bits (§5.2.3).
inline constexpr unsigned kFeatureSizeMax = 1;
inline constexpr unsigned kFeatureSegMax = 2;
inline constexpr unsigned kFeatureGeometry = 4;
inline constexpr unsigned kFeatureReadOnly = 5;
inline constexpr unsigned kFeatureBlkSize = 6;
inline constexpr unsigned kFeatureFlush = 9;
inline constexpr unsigned kFeatureTopology = 10;
inline constexpr unsigned kFeatureConfigWce = 11;
inline constexpr unsigned kFeatureMultiQueue = 12;
inline constexpr unsigned kFeatureDiscard = 13;
inline constexpr unsigned kFeatureWriteZeroes = 14;

// Request types (§5.2.6).
inline constexpr std::uint32_t kTypeIn = 0;
inline constexpr std::uint32_t kTypeOut = 1;
inline constexpr std::uint32_t kTypeFlush = 4;
inline constexpr std::uint32_t kTypeGetId = 8;
inline constexpr std::uint32_t kTypeGetLifetime = 10;
inline constexpr std::uint32_t kTypeDiscard = 11;
inline constexpr std::uint32_t kTypeWriteZeroes = 13;
inline constexpr std::uint32_t kTypeSecureErase = 14;

// Status values (§5.2.6).
inline constexpr std::uint8_t kStatusOk = 0;
inline constexpr std::uint8_t kStatusIoErr = 1;
inline constexpr std::uint8_t kStatusUnsupported = 2;

inline constexpr std::uint32_t kSectorSize = 512;  // protocol unit, whatever blk_size says
inline constexpr std::size_t kIdBytes = 20;        // VIRTIO_BLK_ID_BYTES
inline constexpr std::uint32_t kSegmentFlagUnmap = 1;

struct RequestHeader {
  std::uint32_t type;
  std::uint32_t reserved;
  std::uint64_t sector;
};
static_assert(sizeof(RequestHeader) == 16);

struct DiscardWriteZeroesSegment {
  std::uint64_t sector;
  std::uint32_t num_sectors;
  std::uint32_t flags;
};
static_assert(sizeof(DiscardWriteZeroesSegment) == 16);

// Byte offsets of struct virtio_blk_config (§5.2.4) up to and including unused1.
namespace config {
inline constexpr std::uint32_t kCapacity = 0;
inline constexpr std::uint32_t kSizeMax = 8;
inline constexpr std::uint32_t kSegMax = 12;
inline constexpr std::uint32_t kGeometry = 16;
inline constexpr std::uint32_t kBlkSize = 20;
inline constexpr std::uint32_t kPhysicalBlockExp = 24;
inline constexpr std::uint32_t kAlignmentOffset = 25;
inline constexpr std::uint32_t kMinIoSize = 26;
inline constexpr std::uint32_t kOptIoSize = 28;
inline constexpr std::uint32_t kWriteback = 32;
inline constexpr std::uint32_t kNumQueues = 34;
inline constexpr std::uint32_t kMaxDiscardSectors = 36;
inline constexpr std::uint32_t kMaxDiscardSeg = 40;
inline constexpr std::uint32_t kDiscardSectorAlignment = 44;
inline constexpr std::uint32_t kMaxWriteZeroesSectors = 48;
inline constexpr std::uint32_t kMaxWriteZeroesSeg = 52;
inline constexpr std::uint32_t kWriteZeroesMayUnmap = 56;
inline constexpr std::uint32_t kSize = 60;
}  // namespace config
}  // namespace blk

struct BlockDeviceOptions {
  bool read_only = false;
  std::uint16_t num_queues = 1;
  std::uint16_t queue_size = 256;          // maximum per queue; a power of two
  std::uint32_t logical_block_size = 512;  // blk_size: power of two, 512..65536
  // Topology (§5.2.4): log2(physical/logical), first aligned logical block, and the
  // minimum / optimal I/O sizes in logical blocks.
  std::uint8_t physical_block_exp = 0;
  std::uint8_t alignment_offset = 0;
  std::uint16_t min_io_size = 1;
  std::uint32_t opt_io_size = 0;
  std::uint32_t seg_max = 0;   // 0: queue_size - 2 (one descriptor each for header and status)
  std::uint32_t size_max = 0;  // 0: no VIRTIO_BLK_F_SIZE_MAX
  bool discard = true;
  std::uint32_t max_discard_sectors = 1u << 22;
  std::uint32_t max_discard_seg = 16;
  std::uint32_t discard_sector_alignment = 0;  // 0: logical_block_size / 512
  bool write_zeroes = true;
  std::uint32_t max_write_zeroes_sectors = 1u << 22;
  std::uint32_t max_write_zeroes_seg = 16;
  bool write_zeroes_may_unmap = true;
  std::string serial{};                 // GET_ID, at most 20 bytes
  BlockIoMode io = BlockIoMode::kAuto;  // the engine used once activated on a loop
};

struct BlockDeviceStats {
  std::uint64_t requests = 0;
  std::uint64_t reads = 0;
  std::uint64_t writes = 0;
  std::uint64_t flushes = 0;
  std::uint64_t discards = 0;
  std::uint64_t write_zeroes = 0;
  std::uint64_t io_errors = 0;
  std::uint64_t unsupported = 0;
  std::uint64_t asynchronous = 0;  // requests handed to the I/O engine
};

class BlockDevice final : public virtio::Device, private BlockIoCompletions {
 public:
  [[nodiscard]] static Result<std::unique_ptr<BlockDevice>> create(
      std::unique_ptr<BlockBackend> backend, BlockDeviceOptions options);
  ~BlockDevice() override;
  BlockDevice(const BlockDevice&) = delete;
  BlockDevice& operator=(const BlockDevice&) = delete;

  [[nodiscard]] std::uint32_t device_id() const override;
  [[nodiscard]] std::uint64_t device_features() const override;
  [[nodiscard]] std::uint16_t num_queues() const override { return options_.num_queues; }
  [[nodiscard]] std::uint16_t max_queue_size(std::uint16_t) const override {
    return options_.queue_size;
  }
  [[nodiscard]] std::uint32_t config_size() const override { return blk::config::kSize; }
  void read_config(std::uint32_t offset, std::span<std::uint8_t> out) const override;
  void process_queue(virtio::Virtqueue& queue) override;
  [[nodiscard]] Status activate(EventLoop* loop) override;
  void reset() override;
  void reset_queue(std::uint16_t queue) override;
  void drain() override;

  // Re-reads the backend size; if the capacity changed, updates the config space and
  // sends a configuration change notification (§5.2.6.2 SHOULD).
  void refresh_capacity();
  [[nodiscard]] std::uint64_t capacity_sectors() const { return capacity_; }
  [[nodiscard]] const BlockDeviceStats& stats() const { return stats_; }
  [[nodiscard]] BlockBackend& backend() { return *backend_; }
  // The engine in use ("io_uring", "thread pool"), or empty while synchronous.
  [[nodiscard]] std::string_view io_engine() const { return io_ ? io_->name() : ""; }

 private:
  BlockDevice(std::unique_ptr<BlockBackend> backend, BlockDeviceOptions options);
  void build_config();
  void serve(virtio::Virtqueue& queue, virtio::DescriptorChain& chain);
  // Writes the status byte last and returns the chain to the driver.
  static void finish(virtio::DescriptorChain& chain, std::uint8_t status);
  // Hands an IN, OUT or FLUSH request to the engine; nullopt once it is in flight (its
  // chain then lives in in_flight_), or the status of a request refused up front.
  [[nodiscard]] std::optional<std::uint8_t> start_io(virtio::Virtqueue& queue,
                                                     virtio::DescriptorChain& chain,
                                                     std::uint32_t type, std::uint64_t sector,
                                                     std::uint64_t length);
  void io_completed(std::uint64_t tag, Status result) override;
  void io_batch_done() override;
  // Largest piece a request moves through a bounce buffer when guest memory is not
  // host-mapped (message-based DMA).
  static constexpr std::uint64_t kBouncePiece = 128 * 1024;
  // Moves `length` bytes between the disk at `sector` and the chain: into the chain's
  // writable buffers when `to_guest`, else from its readable ones.
  [[nodiscard]] std::uint8_t bounce(virtio::DescriptorChain& chain, std::uint64_t sector,
                                    std::uint64_t length, bool to_guest);
  [[nodiscard]] std::uint8_t do_read(virtio::DescriptorChain& chain, std::uint64_t sector,
                                     std::uint64_t length);
  [[nodiscard]] std::uint8_t do_write(virtio::DescriptorChain& chain, std::uint64_t sector,
                                      std::uint64_t length);
  [[nodiscard]] std::uint8_t do_get_id(virtio::DescriptorChain& chain, std::uint64_t length);
  [[nodiscard]] std::uint8_t do_segments(virtio::DescriptorChain& chain, std::uint32_t type,
                                         std::uint64_t length);
  [[nodiscard]] bool in_range(std::uint64_t sector, std::uint64_t sectors) const {
    return sector <= capacity_ && sectors <= capacity_ - sector;
  }

  // A request the engine is working on.
  struct InFlight {
    virtio::DescriptorChain chain;
    virtio::HostBufferList buffers;  // pins the guest memory the engine reads or writes
    virtio::Virtqueue* queue;
  };

  std::unique_ptr<BlockBackend> backend_;
  BlockDeviceOptions options_;
  std::unique_ptr<BlockIo> io_;                     // from activate() to reset()
  std::vector<std::optional<InFlight>> in_flight_;  // indexed by the engine's tag
  std::vector<std::size_t> free_slots_;
  std::vector<virtio::Virtqueue*> completed_queues_;  // used entries since the last batch
  std::uint64_t capacity_ = 0;                        // in 512-byte sectors
  std::array<std::uint8_t, blk::config::kSize> config_{};
  BlockDeviceStats stats_;
};

}  // namespace vpci::devices
