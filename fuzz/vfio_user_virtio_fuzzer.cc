// Fuzzes the vfio-user dispatcher with a real DMA-capable device behind it: a virtio-rng
// or virtio-blk on a modern, transitional, MMR or legacy-over-MMR transport, wrapped in
// the transport (exactly what `vpci serve` runs), with guest RAM in memfds that the
// fuzzer hands over with DMA_MAP and writes rings into, the way QEMU shares guest RAM.
// (vfio_user_dispatch_fuzzer covers raw message bytes against the scratch function;
// this target gets deep: maps, rings, notifies, unmaps under live queues, resets.)
//
// Input: byte 0 selects the device (bit 0 blk, bits 1-2 transport), then operations,
// each an op byte (value % 10) and its arguments:
//   0 DMA_MAP     [file page][pages][iova page][flags: 0 writable, 1 no fd, 2 eventfd
//                 instead of memory, 3 the one-page memfd, 4 argsz too small]
//   1 DMA_UNMAP   [iova page][pages][flags: 0 ALL, 1 dirty bitmap, 2 argsz too small]
//   2 REGION_WRITE [region][u16 offset][width code][u64 value]   width code bit 3: NO_REPLY
//   3 REGION_READ  [region][u16 offset][width code]
//   4 RAM write    [u16 offset in the main memfd][length][bytes]
//   5 common config field write [field][u64 value]  (BAR4, the field's own width)
//   6 notify       [queue]                           (BAR4 doorbells, multiplier 4)
//   7 queue setup  [queue][log2 size][u16 desc][u16 avail][u16 used]  (iovas relative to
//                  kIovaBase), with feature negotiation and DRIVER_OK around it
//   8 DEVICE_RESET
//   9 reconnect    (the session ends as on a disconnect; a new one negotiates)
// Invariants after every operation:
//   * every reply is well formed (msg_id, command, size; errors are header-only);
//   * DMA_MAP is refused exactly when the file range lies beyond the fd, the iova range
//     overlaps a live map or its end (iova + size) is not representable; DMA_UNMAP
//     succeeds exactly for a live exact range;
//   * the device's GuestMemory lists exactly the live fd-backed maps;
//   * the device wrote no byte of the memfds outside the pages currently mapped
//     writable (a write to a read-only map faults; one to an unmapped page is caught
//     by comparing against a shadow copy);
//   * every fd is closed once the session is gone (lowest free fd unchanged).
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include <sys/eventfd.h>
#include <sys/mman.h>

#include "devices/block_backend.h"
#include "devices/virtio_blk.h"
#include "devices/virtio_rng.h"
#include "fuzz/fuzz_support.h"
#include "server/protocol.h"
#include "server/session.h"
#include "virtio/pci/legacy_io_mapper.h"
#include "virtio/pci/registers.h"
#include "virtio/pci/virtio_pci_function.h"
#include "virtio/spec.h"

namespace {

using namespace vpci;
using namespace vpci::server;
namespace vu = vpci::server::vfio_user;
namespace vpp = vpci::virtio::pci;

constexpr std::uint64_t kPage = vu::kPageSize;
constexpr std::size_t kRamPages = 16;
constexpr std::size_t kRamBytes = kRamPages * kPage;
constexpr std::uint64_t kIovaBase = 0x100000;

using vpci::fuzz::CountingEntropy;
using vpci::fuzz::VectorBackend;

// One memfd and the fuzzer's own view of it (the "guest" side).
struct Ram {
  UniqueFd fd;
  std::uint8_t* bytes = nullptr;
  std::size_t size = 0;
  std::vector<std::uint8_t> shadow;  // what the guest last saw or wrote

  explicit Ram(std::size_t bytes_size) : size(bytes_size) {
    fd.reset(::memfd_create("fuzz-guest-ram", MFD_CLOEXEC));
    FUZZ_CHECK(fd.valid() && ::ftruncate(fd.get(), static_cast<off_t>(size)) == 0);
    void* map = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    FUZZ_CHECK(map != MAP_FAILED);
    bytes = static_cast<std::uint8_t*>(map);
    shadow.assign(size, 0);
  }
  ~Ram() { ::munmap(bytes, size); }
  Ram(const Ram&) = delete;
  Ram& operator=(const Ram&) = delete;
};

struct LiveMap {
  std::uint64_t iova;
  std::uint64_t size;
  std::uint64_t file_offset;
  int ram;  // 0 main memfd, 1 one-page memfd, -1 no fd
  bool writable;
};

class Harness {
 public:
  Harness(bool blk, unsigned transport) : main_(kRamBytes), small_(kPage) {
    std::unique_ptr<virtio::Device> device;
    if (blk) {
      devices::BlockDeviceOptions options;
      options.queue_size = 16;
      auto created = devices::BlockDevice::create(std::make_unique<VectorBackend>(), options);
      FUZZ_CHECK(created.has_value());
      device = std::move(*created);
    } else {
      devices::RngDeviceOptions options;
      options.queue_size = 16;
      options.max_bytes_per_request = 4096;
      device = std::make_unique<devices::RngDevice>(options, std::make_unique<CountingEntropy>());
    }
    static constexpr std::array<vpp::TransportKind, 4> kKinds = {
        vpp::TransportKind::kModern, vpp::TransportKind::kTransitional,
        vpp::TransportKind::kTransitionalMmr, vpp::TransportKind::kTransitionalMmr};
    vpp::VirtioPciOptions options;
    options.msix_owner = pci::MsixTableOwner::kBus;  // as `vpci serve` builds it
    if (transport == 1) {
      // notify = "mapped": GET_REGION_INFO with a sparse mmap area and its file.
      options.notify_mappable = true;
      options.core.idle_poll = std::chrono::microseconds(1000);
    }
    auto function =
        vpp::make_virtio_pci_function(kKinds[transport], std::move(device), memory_, options);
    FUZZ_CHECK(function.has_value());
    if (transport == 3) {
      auto mapper = vpp::LegacyIoMapper::create(std::move(*function));
      FUZZ_CHECK(mapper.has_value());
      function_ = std::move(*mapper);
    } else {
      function_ = std::move(*function);
    }
    connect();
  }

  void connect() {
    session_ = std::make_unique<VfioUserSession>(*function_, memory_);
    maps_.clear();
    std::vector<std::uint8_t> payload;
    vu::append(payload, std::uint16_t{0});
    vu::append(payload, std::uint16_t{0});
    const char json[] = R"({"capabilities":{"max_msg_fds":16,"pgsizes":4096}})";
    payload.insert(payload.end(), json, json + sizeof(json));
    auto reply = send(vu::kVersion, payload);
    FUZZ_CHECK(reply && !is_error(*reply));
  }
  void disconnect() {
    session_.reset();
    maps_.clear();
    check_memory();
  }

  static bool is_error(const std::vector<std::uint8_t>& reply) {
    return (vu::decode_header(reply).flags & vu::kFlagError) != 0;
  }

  // Sends one well-framed command and checks the reply's shape.
  std::optional<std::vector<std::uint8_t>> send(std::uint16_t command,
                                                const std::vector<std::uint8_t>& payload,
                                                std::vector<UniqueFd> fds = {},
                                                bool no_reply = false) {
    IncomingMessage message;
    message.bytes.resize(vu::kHeaderSize);
    const std::uint16_t id = ++next_id_;
    vu::encode_header(
        message.bytes,
        vu::Header{id, command, static_cast<std::uint32_t>(vu::kHeaderSize + payload.size()),
                   no_reply ? vu::kFlagNoReply : 0u, 0});
    message.bytes.insert(message.bytes.end(), payload.begin(), payload.end());
    message.fds = std::move(fds);
    DispatchResult result = session_->handle(std::move(message));
    FUZZ_CHECK(!result.close_connection);  // every message here is well framed
    if (no_reply) {
      FUZZ_CHECK(!result.reply.has_value());
      return std::nullopt;
    }
    FUZZ_CHECK(result.reply.has_value());
    const auto header = vu::decode_header(*result.reply);
    FUZZ_CHECK(header.msg_id == id && header.command == command);
    FUZZ_CHECK(header.message_size == result.reply->size());
    FUZZ_CHECK((header.flags & vu::kFlagTypeMask) == vu::kTypeReply);
    if ((header.flags & vu::kFlagError) != 0) {
      FUZZ_CHECK(result.reply->size() == vu::kHeaderSize && header.error != 0);
    }
    return std::move(result.reply);
  }

  void dma_map(std::uint8_t file_page, std::uint8_t pages, std::uint8_t iova_page,
               std::uint8_t flags) {
    const bool writable = (flags & 1) != 0;
    const bool no_fd = (flags & 2) != 0;
    const bool eventfd = (flags & 4) != 0;
    const int which = (flags & 8) ? 1 : 0;
    const bool lie = (flags & 16) != 0;
    LiveMap map{kIovaBase + std::uint64_t{iova_page} * kPage, std::uint64_t{pages} % 18 * kPage,
                std::uint64_t{file_page} % 18 * kPage, no_fd ? -1 : which, writable};
    if (iova_page == 0xFF) map.iova = ~std::uint64_t{0} - kPage + 1;  // wraps with size > 1 page
    std::vector<std::uint8_t> payload;
    vu::append(payload, static_cast<std::uint32_t>(lie ? vu::kDmaMapSize - 8 : vu::kDmaMapSize));
    vu::append(payload, vu::kDmaMapRead | (writable ? vu::kDmaMapWrite : 0u));
    vu::append(payload, map.file_offset);
    vu::append(payload, map.iova);
    vu::append(payload, map.size);
    std::vector<UniqueFd> fds;
    if (eventfd) {
      fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
    } else if (!no_fd) {
      fds.emplace_back(::dup(ram(which).fd.get()));
    }
    const auto reply = send(vu::kDmaMap, payload, std::move(fds));
    const bool ok = !is_error(*reply);
    // The server wants iova + size representable (it refuses a map ending exactly at
    // 2^64 too: conservative, and no guest has RAM there).
    bool expect_ok = !lie && !eventfd && map.size != 0 &&
                     map.iova <= ~std::uint64_t{0} - map.size && !overlaps(map);
    if (!no_fd) expect_ok = expect_ok && map.file_offset + map.size <= ram(which).size;
    if (ok != expect_ok) {
      std::fprintf(
          stderr, "DMA_MAP iova %#llx size %#llx offset %#llx fd %d eventfd %d lie %d: %s\n",
          static_cast<unsigned long long>(map.iova), static_cast<unsigned long long>(map.size),
          static_cast<unsigned long long>(map.file_offset), map.ram, eventfd, lie,
          ok ? "accepted" : session_->last_error().c_str());
    }
    FUZZ_CHECK(ok == expect_ok);
    if (ok) maps_.push_back(map);
  }

  void dma_unmap(std::uint8_t iova_page, std::uint8_t pages, std::uint8_t flags) {
    const bool all = (flags & 1) != 0;
    const bool dirty = (flags & 2) != 0;
    const bool lie = (flags & 4) != 0;
    const std::uint64_t iova = all ? 0 : kIovaBase + std::uint64_t{iova_page} * kPage;
    const std::uint64_t size = all ? 0 : std::uint64_t{pages} % 18 * kPage;
    std::vector<std::uint8_t> payload;
    vu::append(payload,
               static_cast<std::uint32_t>(lie ? vu::kDmaUnmapSize - 4 : vu::kDmaUnmapSize));
    vu::append(payload, (all ? vu::kDmaUnmapAll : 0u) | (dirty ? vu::kDmaUnmapGetDirtyBitmap : 0u));
    vu::append(payload, iova);
    vu::append(payload, size);
    const auto reply = send(vu::kDmaUnmap, payload);
    const bool ok = !is_error(*reply);
    if (ok) {
      FUZZ_CHECK(!lie && !dirty);
      if (all) {
        maps_.clear();
      } else {
        auto it = std::find_if(maps_.begin(), maps_.end(),
                               [&](const LiveMap& m) { return m.iova == iova && m.size == size; });
        FUZZ_CHECK(it != maps_.end());
        maps_.erase(it);
      }
    } else if (!lie && !dirty) {
      FUZZ_CHECK(!all);
      FUZZ_CHECK(std::none_of(maps_.begin(), maps_.end(),
                              [&](const LiveMap& m) { return m.iova == iova && m.size == size; }));
    }
  }

  void region_write(unsigned region, std::uint64_t offset, std::uint64_t value, unsigned width,
                    bool no_reply) {
    std::vector<std::uint8_t> payload;
    vu::append(payload, offset);
    vu::append(payload, region);
    vu::append(payload, static_cast<std::uint32_t>(width));
    for (unsigned i = 0; i < width; ++i)
      payload.push_back(static_cast<std::uint8_t>(value >> (8 * (i % 8))));
    send(vu::kRegionWrite, payload, {}, no_reply);
  }
  void region_read(unsigned region, std::uint64_t offset, unsigned width) {
    std::vector<std::uint8_t> payload;
    vu::append(payload, offset);
    vu::append(payload, region);
    vu::append(payload, static_cast<std::uint32_t>(width));
    const auto reply = send(vu::kRegionRead, payload);
    if (!is_error(*reply))
      FUZZ_CHECK(reply->size() == vu::kHeaderSize + vu::kRegionAccessSize + width);
  }

  void ram_write(std::uint16_t offset, std::span<const std::uint8_t> data) {
    const std::size_t at = offset % kRamBytes;
    const std::size_t n = std::min(data.size(), kRamBytes - at);
    std::memcpy(main_.bytes + at, data.data(), n);
    std::memcpy(main_.shadow.data() + at, data.data(), n);
  }

  void device_reset() {
    const auto reply = send(vu::kDeviceReset, {});
    FUZZ_CHECK(!is_error(*reply));
  }

  // No byte outside a writable map changed since the guest last looked; then the guest
  // looks again.
  void check_memory() {
    for (int which = 0; which < 2; ++which) {
      Ram& r = ram(which);
      std::vector<bool> writable(r.size / kPage, false);
      for (const LiveMap& m : maps_) {
        if (m.ram != which || !m.writable) continue;
        for (std::uint64_t p = m.file_offset / kPage; p < (m.file_offset + m.size) / kPage; ++p) {
          writable[p] = true;
        }
      }
      for (std::size_t p = 0; p < writable.size(); ++p) {
        if (writable[p]) continue;
        FUZZ_CHECK(std::memcmp(r.bytes + p * kPage, r.shadow.data() + p * kPage, kPage) == 0);
      }
      std::memcpy(r.shadow.data(), r.bytes, r.size);
    }
    // The device sees exactly the live maps: fd-backed ones host-mapped, the others
    // message-backed.
    const auto snapshot = memory_->snapshot();
    const auto fd_backed = static_cast<std::size_t>(
        std::count_if(maps_.begin(), maps_.end(), [](const LiveMap& m) { return m.ram >= 0; }));
    FUZZ_CHECK(snapshot->regions().size() == maps_.size());
    const auto host_mapped = static_cast<std::size_t>(
        std::count_if(snapshot->regions().begin(), snapshot->regions().end(),
                      [](const auto& region) { return region->host() != nullptr; }));
    FUZZ_CHECK(host_mapped == fd_backed);
    if (session_) FUZZ_CHECK(session_->dma_maps().size() == maps_.size());
  }

 private:
  Ram& ram(int which) { return which == 0 ? main_ : small_; }
  bool overlaps(const LiveMap& map) const {
    return std::any_of(maps_.begin(), maps_.end(), [&](const LiveMap& m) {
      return map.iova < m.iova + m.size && m.iova < map.iova + map.size;
    });
  }

  Ram main_;
  Ram small_;
  std::shared_ptr<virtio::GuestMemory> memory_ = std::make_shared<virtio::GuestMemory>();
  std::unique_ptr<pci::Function> function_;
  std::unique_ptr<VfioUserSession> session_;
  std::vector<LiveMap> maps_;
  std::uint16_t next_id_ = 0;
};

constexpr std::array<unsigned, 8> kWidths = {1, 2, 4, 8, 3, 0, 16, 2};
// Common config fields (virtio 1.3 §4.1.4.3): offset and width.
constexpr std::array<std::pair<std::uint32_t, unsigned>, 17> kCommonFields = {{
    {vpp::common::kDeviceFeatureSelect, 4},
    {vpp::common::kDeviceFeature, 4},
    {vpp::common::kDriverFeatureSelect, 4},
    {vpp::common::kDriverFeature, 4},
    {vpp::common::kConfigMsixVector, 2},
    {vpp::common::kNumQueues, 2},
    {vpp::common::kDeviceStatus, 1},
    {vpp::common::kConfigGeneration, 1},
    {vpp::common::kQueueSelect, 2},
    {vpp::common::kQueueSize, 2},
    {vpp::common::kQueueMsixVector, 2},
    {vpp::common::kQueueEnable, 2},
    {vpp::common::kQueueNotifyOff, 2},
    {vpp::common::kQueueDesc, 8},
    {vpp::common::kQueueDriver, 8},
    {vpp::common::kQueueDevice, 8},
    {vpp::common::kQueueReset, 2},
}};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const int lowest_free_before = [] {
    const int fd = ::eventfd(0, EFD_CLOEXEC);
    ::close(fd);
    return fd;
  }();
  {
    std::size_t pos = 0;
    auto take = [&](std::size_t n) {
      std::uint64_t v = 0;
      for (std::size_t i = 0; i < n; ++i)
        v |= std::uint64_t{pos < size ? data[pos++] : 0u} << (8 * i);
      return v;
    };
    const auto selector = static_cast<unsigned>(take(1));
    Harness h((selector & 1) != 0, (selector >> 1) & 3);
    constexpr unsigned kMemoryBar = vpp::VirtioPciLayout::kMemoryBar;
    auto common_write = [&](std::uint32_t offset, unsigned width, std::uint64_t value) {
      h.region_write(kMemoryBar, vpp::VirtioPciLayout::kCommonOffset + offset, value, width, false);
    };
    int operations = 0;
    while (pos < size && ++operations <= 256) {
      const unsigned op = static_cast<unsigned>(take(1)) % 10;
      switch (op) {
        case 0: {
          const auto file_page = static_cast<std::uint8_t>(take(1));
          const auto pages = static_cast<std::uint8_t>(take(1));
          const auto iova_page = static_cast<std::uint8_t>(take(1));
          h.dma_map(file_page, pages, iova_page, static_cast<std::uint8_t>(take(1)));
          break;
        }
        case 1: {
          const auto iova_page = static_cast<std::uint8_t>(take(1));
          const auto pages = static_cast<std::uint8_t>(take(1));
          h.dma_unmap(iova_page, pages, static_cast<std::uint8_t>(take(1)));
          break;
        }
        case 2: {
          const unsigned region = static_cast<unsigned>(take(1)) % 10;
          const auto offset = take(2);
          const auto code = static_cast<unsigned>(take(1));
          h.region_write(region, offset, take(8), kWidths[code & 7], (code & 8) != 0);
          break;
        }
        case 3: {
          const unsigned region = static_cast<unsigned>(take(1)) % 10;
          const auto offset = take(2);
          h.region_read(region, offset, kWidths[take(1) & 7]);
          break;
        }
        case 4: {
          const auto offset = static_cast<std::uint16_t>(take(2));
          const std::size_t length = std::min<std::size_t>(take(1), size - pos);
          h.ram_write(offset, std::span(data + pos, length));
          pos += length;
          break;
        }
        case 5: {
          const auto& field = kCommonFields[take(1) % kCommonFields.size()];
          common_write(field.first, field.second, take(8));
          break;
        }
        case 6:
          h.region_write(kMemoryBar, vpp::VirtioPciLayout::kNotifyOffset + 4 * (take(1) % 4), 0, 2,
                         (operations & 1) != 0);
          break;
        case 7: {
          const auto queue = take(1) % 4;
          const auto log2_size = take(1) % 6;
          const auto desc = take(2);
          const auto avail = take(2);
          const auto used = take(2);
          using namespace vpp::common;
          namespace st = virtio::status;
          common_write(kDeviceStatus, 1, 0);
          common_write(kDeviceStatus, 1, st::kAcknowledge | st::kDriver);
          common_write(kDriverFeatureSelect, 4, 1);
          common_write(kDriverFeature, 4, 1);  // VIRTIO_F_VERSION_1 (bit 32)
          common_write(kDriverFeatureSelect, 4, 0);
          common_write(kDriverFeature, 4, 0);
          common_write(kDeviceStatus, 1, st::kAcknowledge | st::kDriver | st::kFeaturesOk);
          common_write(kQueueSelect, 2, queue);
          common_write(kQueueSize, 2, 1u << log2_size);
          common_write(kQueueDesc, 8, kIovaBase + desc);
          common_write(kQueueDriver, 8, kIovaBase + avail);
          common_write(kQueueDevice, 8, kIovaBase + used);
          common_write(kQueueEnable, 2, 1);
          common_write(kDeviceStatus, 1,
                       st::kAcknowledge | st::kDriver | st::kFeaturesOk | st::kDriverOk);
          break;
        }
        case 8: h.device_reset(); break;
        case 9:
          h.disconnect();
          h.connect();
          break;
      }
      h.check_memory();
    }
  }
  const int lowest_free_after = [] {
    const int fd = ::eventfd(0, EFD_CLOEXEC);
    ::close(fd);
    return fd;
  }();
  FUZZ_CHECK(lowest_free_after == lowest_free_before);
  return 0;
}
