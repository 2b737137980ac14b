// A pci::Function served by VfioUserServer over a real socket, driven by TestClient the
// way QEMU drives it: region and IRQ numbering, access splitting, INTx automasking, MSI-X,
// and DMA maps feeding the device's guest memory (server/session.h, vfio_regions.h).

#include <poll.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>
#include <tuple>

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "server/socket_server.h"
#include "server/vfio_regions.h"
#include "tests/server/test_client.h"
#include "tests/support/scratch_dir.h"

namespace vpci::server {
namespace {

using namespace vfio_user;
using testing::Payload;
using testing::TestClient;

// A pci::Function that records what reaches it: BAR0 64-bit memory 0x4000, BAR2 I/O 0x20,
// 4 KiB config space, four MSI-X vectors.
class RecordingFunction final : public pci::Function {
 public:
  struct BarAccess {
    unsigned bar;
    std::uint64_t offset;
    std::size_t size;
    bool write;
    bool operator==(const BarAccess&) const = default;
  };

  // What BAR0 declares mappable (pci::BarInfo); none by default. Set by the test thread,
  // read by the server's.
  std::atomic<std::uint64_t> bar0_mappable_offset = 0;
  std::atomic<std::uint64_t> bar0_mappable_size = 0;

  RecordingFunction() : config_(4096, 0) {
    config_[0] = 0xF4;  // vendor 0x1AF4 at offset 0
    config_[1] = 0x1A;
  }
  [[nodiscard]] std::uint32_t config_size() const override { return 4096; }
  [[nodiscard]] pci::BarInfo bar_info(unsigned bar) const override {
    if (bar == 0) {
      return {pci::BarKind::kMemory64, 0x4000, false, bar0_mappable_offset.load(),
              bar0_mappable_size.load()};
    }
    if (bar == 2) return {pci::BarKind::kIo, 0x20, false};
    return {};
  }
  [[nodiscard]] std::uint16_t msix_vector_count() const override { return 4; }
  Status config_read(std::uint32_t offset, std::span<std::uint8_t> data) override {
    std::memcpy(data.data(), config_.data() + offset, data.size());
    return {};
  }
  Status config_write(std::uint32_t offset, std::span<const std::uint8_t> data) override {
    std::memcpy(config_.data() + offset, data.data(), data.size());
    return {};
  }
  Status bar_read(unsigned bar, std::uint64_t offset, std::span<std::uint8_t> data) override {
    accesses.push_back({bar, offset, data.size(), false});
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(offset + i);
    return {};
  }
  Status bar_write(unsigned bar, std::uint64_t offset,
                   std::span<const std::uint8_t> data) override {
    accesses.push_back({bar, offset, data.size(), true});
    if (bar == 0 && offset == 0x100 && data.size() == 4) {
      std::uint32_t value = 0;
      std::memcpy(&value, data.data(), 4);
      // Test hook: 0x100 drives the interrupt output like a device would.
      if (value == 1) output.load()->set_intx_level(true);
      if (value == 0) output.load()->set_intx_level(false);
      if (value >= 0x10)
        output.load()->signal_msix(static_cast<std::uint16_t>(value - 0x10), 0xFEE00000, 0);
    }
    return {};
  }
  void set_interrupt_output(pci::InterruptOutput* out) override { output = out; }
  void reset() override { ++resets; }

  std::vector<std::uint8_t> config_;
  std::vector<BarAccess> accesses;
  // Written on the server thread when the session ends while the test thread may be
  // reading them (the socket orders them in practice, but TSan cannot see that).
  std::atomic<pci::InterruptOutput*> output{nullptr};
  std::atomic<int> resets{0};
};

// One directory for the sockets of this test program, removed when it exits.
std::string temp_socket_path(const std::string& name) {
  static const vpci::testing::ScratchDir dir("function-test");
  return (dir / name).string();
}

bool eventfd_fired(int fd, int timeout_ms = 1000) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) != 1) return false;
  std::uint64_t value = 0;
  return ::read(fd, &value, sizeof(value)) == sizeof(value) && value > 0;
}

class FunctionServingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = temp_socket_path("function.sock");
    auto server = VfioUserServer::create(path_, function_, memory_);
    ASSERT_TRUE(server.has_value()) << server.error().message;
    server_ = std::move(*server);
    server_->start();
    auto client = TestClient::connect(path_);
    ASSERT_TRUE(client.has_value());
    client_.emplace(std::move(*client));
    ASSERT_TRUE(client_->negotiate());
  }
  void TearDown() override {
    client_.reset();
    server_.reset();
  }
  std::optional<testing::ReplyMessage> call(std::uint16_t command,
                                            std::span<const std::uint8_t> payload,
                                            std::span<const int> fds = {}) {
    auto reply = client_->call(command, payload, fds);
    EXPECT_TRUE(reply.has_value());
    if (reply) {
      EXPECT_FALSE(reply->is_error()) << "errno " << reply->header.error;
    }
    return reply;
  }
  void write_bar0_u32(std::uint64_t offset, std::uint32_t value) {
    std::array<std::uint8_t, 4> bytes{};
    std::memcpy(bytes.data(), &value, 4);
    call(kRegionWrite, testing::region_write(0, offset, bytes));
  }
  void unmask_intx() {
    call(kDeviceSetIrqs, testing::set_irqs(kIrqSetDataNone | kIrqSetActionUnmask, kIrqIntx, 0, 1));
  }

  RecordingFunction function_;
  std::shared_ptr<virtio::GuestMemory> memory_ = std::make_shared<virtio::GuestMemory>();
  std::string path_;
  std::unique_ptr<VfioUserServer> server_;
  std::optional<TestClient> client_;
};

TEST_F(FunctionServingTest, RegionsComeFromBarsAndConfigSize) {
  const std::array<std::uint64_t, kRegionCount> sizes{0x4000, 0, 0x20, 0, 0, 0, 0, 4096, 0};
  for (unsigned i = 0; i < kRegionCount; ++i) {
    auto reply = call(kDeviceGetRegionInfo, testing::region_info(i));
    ASSERT_TRUE(reply && reply->payload.size() >= kRegionInfoSize);
    EXPECT_EQ(load<std::uint64_t>(reply->payload, 16), sizes[i]) << "region " << i;
    const std::uint32_t flags = load<std::uint32_t>(reply->payload, 4);
    EXPECT_EQ(flags, sizes[i] != 0 ? kRegionFlagRead | kRegionFlagWrite : 0u) << "region " << i;
  }
}

// A BAR range the function declares mappable (virtio's notification area with notify =
// "mapped") is one SPARSE_MMAP area of an MMAP region, and the reply carries the file to
// map: the same file for every request of the connection, as large as the BAR. A request
// too small for the capability learns the size to retry with, without CAPS or a file
// (QEMU refuses CAPS whose cap_offset lies outside what it asked for).
TEST_F(FunctionServingTest, AMappableBarRangeIsOneSparseAreaWithItsFile) {
  function_.bar0_mappable_offset = 0x1000;
  function_.bar0_mappable_size = 0x2000;
  constexpr std::uint32_t kFull = kRegionInfoSize + 8 + 8 + 16;
  auto short_reply = call(kDeviceGetRegionInfo, testing::region_info(0, kRegionInfoSize));
  ASSERT_TRUE(short_reply && !short_reply->is_error());
  ASSERT_EQ(short_reply->payload.size(), kRegionInfoSize);
  EXPECT_EQ(load<std::uint32_t>(short_reply->payload, 0), kFull) << "argsz to retry with";
  EXPECT_EQ(load<std::uint32_t>(short_reply->payload, 4),
            kRegionFlagRead | kRegionFlagWrite | kRegionFlagMmap);
  EXPECT_EQ(load<std::uint32_t>(short_reply->payload, 12), 0u) << "no cap_offset";
  EXPECT_TRUE(short_reply->fds.empty());

  auto full = call(kDeviceGetRegionInfo, testing::region_info(0, kFull));
  ASSERT_TRUE(full && !full->is_error());
  ASSERT_EQ(full->payload.size(), kFull);
  EXPECT_EQ(load<std::uint32_t>(full->payload, 4),
            kRegionFlagRead | kRegionFlagWrite | kRegionFlagMmap | kRegionFlagCaps);
  EXPECT_EQ(load<std::uint32_t>(full->payload, 12), kRegionInfoSize) << "cap_offset";
  EXPECT_EQ(load<std::uint64_t>(full->payload, 16), 0x4000u) << "size";
  EXPECT_EQ(load<std::uint64_t>(full->payload, 24), 0u) << "file offset of the region";
  EXPECT_EQ(load<std::uint16_t>(full->payload, 32), kCapSparseMmap);
  EXPECT_EQ(load<std::uint16_t>(full->payload, 34), 1u) << "version";
  EXPECT_EQ(load<std::uint32_t>(full->payload, 36), 0u) << "last capability";
  EXPECT_EQ(load<std::uint32_t>(full->payload, 40), 1u) << "nr_areas";
  EXPECT_EQ(load<std::uint64_t>(full->payload, 48), 0x1000u);
  EXPECT_EQ(load<std::uint64_t>(full->payload, 56), 0x2000u);
  ASSERT_EQ(full->fds.size(), 1u);
  struct stat file {};
  ASSERT_EQ(::fstat(full->fds[0].get(), &file), 0);
  EXPECT_EQ(file.st_size, 0x4000);
  // The area maps (shared, writable); a later request passes the same file.
  void* area =
      ::mmap(nullptr, 0x2000, PROT_READ | PROT_WRITE, MAP_SHARED, full->fds[0].get(), 0x1000);
  ASSERT_NE(area, MAP_FAILED);
  static_cast<volatile std::uint16_t*>(area)[0] = 0x1234;
  ASSERT_EQ(::munmap(area, 0x2000), 0);
  auto again = call(kDeviceGetRegionInfo, testing::region_info(0, 4096));
  ASSERT_TRUE(again && again->fds.size() == 1);
  struct stat again_file {};
  ASSERT_EQ(::fstat(again->fds[0].get(), &again_file), 0);
  EXPECT_EQ(again_file.st_ino, file.st_ino);
  EXPECT_EQ(again->payload.size(), kFull) << "the reply is as long as it needs, not as asked";
  // Accesses through messages still reach the function (a client need not map).
  function_.accesses.clear();
  write_bar0_u32(0x1000, 0);
  const std::vector<RecordingFunction::BarAccess> expected{{0, 0x1000, 4, true}};
  EXPECT_EQ(function_.accesses, expected);
}

// Mapped doorbells need a device that polls, which it does only in shared guest RAM: a
// client whose maps all came without a file (QEMU's default RAM) is not offered the area;
// one that shares RAM is, whatever ROMs it maps without a file beside it.
TEST_F(FunctionServingTest, AMappableRangeIsOfferedOnlyWithSharedRam) {
  function_.bar0_mappable_offset = 0x1000;
  function_.bar0_mappable_size = 0x1000;
  call(kDmaMap, testing::dma_map(kDmaMapRead | kDmaMapWrite, 0, 0x0, 0x10000));  // no file
  auto reply = call(kDeviceGetRegionInfo, testing::region_info(0, 4096));
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->payload.size(), kRegionInfoSize);
  EXPECT_EQ(load<std::uint32_t>(reply->payload, 4), kRegionFlagRead | kRegionFlagWrite);
  EXPECT_TRUE(reply->fds.empty());
  const UniqueFd ram(::memfd_create("ram", MFD_CLOEXEC));
  ASSERT_EQ(::ftruncate(ram.get(), 0x10000), 0);
  const int fd = ram.get();
  call(kDmaMap, testing::dma_map(kDmaMapRead | kDmaMapWrite, 0, 0x100000, 0x10000),
       std::span(&fd, 1));
  reply = call(kDeviceGetRegionInfo, testing::region_info(0, 4096));
  ASSERT_TRUE(reply);
  EXPECT_NE(load<std::uint32_t>(reply->payload, 4) & kRegionFlagMmap, 0u);
  EXPECT_EQ(reply->fds.size(), 1u);
}

// A range that is not whole pages inside the BAR is not offered at all.
TEST_F(FunctionServingTest, AMappableRangeThatIsNotWholePagesIsNotOffered) {
  for (auto [offset, size] : {std::pair<std::uint64_t, std::uint64_t>{0x800, 0x1000},
                              {0x1000, 0x800},
                              {0x3000, 0x2000}}) {
    function_.bar0_mappable_offset = offset;
    function_.bar0_mappable_size = size;
    auto reply = call(kDeviceGetRegionInfo, testing::region_info(0, 4096));
    ASSERT_TRUE(reply && !reply->is_error());
    EXPECT_EQ(reply->payload.size(), kRegionInfoSize);
    EXPECT_EQ(load<std::uint32_t>(reply->payload, 4), kRegionFlagRead | kRegionFlagWrite);
    EXPECT_TRUE(reply->fds.empty());
  }
}

TEST_F(FunctionServingTest, IrqCounts) {
  // INTx 1, MSI 0, MSI-X = vectors, ERR 1 (QEMU enables error recovery), REQ 0.
  const std::array<std::uint32_t, kIrqIndexCount> counts{1, 0, 4, 1, 0};
  for (unsigned i = 0; i < kIrqIndexCount; ++i) {
    auto reply = call(kDeviceGetIrqInfo, testing::irq_info(i));
    ASSERT_TRUE(reply && reply->payload.size() >= kIrqInfoSize);
    EXPECT_EQ(load<std::uint32_t>(reply->payload, 12), counts[i]) << "irq index " << i;
  }
}

TEST_F(FunctionServingTest, AccessesAreForwardedAndOddSizesSplitNaturally) {
  auto config = call(kRegionRead, testing::region_read(kRegionConfig, 0, 4096));
  ASSERT_TRUE(config && config->payload.size() == kRegionAccessSize + 4096);
  EXPECT_EQ(config->payload[kRegionAccessSize], 0xF4);
  EXPECT_EQ(config->payload[kRegionAccessSize + 1], 0x1A);

  auto io = call(kRegionRead, testing::region_read(2, 4, 2));
  ASSERT_TRUE(io && io->payload.size() == kRegionAccessSize + 2);
  EXPECT_EQ(io->payload[kRegionAccessSize], 4);  // the double returns offset-derived bytes
  // 11 bytes at offset 3: 1 @3, 4 @4, 2 @8, 1 @10... naturally aligned, in order.
  std::array<std::uint8_t, 11> data{};
  call(kRegionWrite, testing::region_write(0, 3, data));
  const std::vector<RecordingFunction::BarAccess> expected{
      {2, 4, 2, false}, {0, 3, 1, true}, {0, 4, 4, true}, {0, 8, 4, true}, {0, 12, 2, true}};
  EXPECT_EQ(function_.accesses, expected);
}

TEST_F(FunctionServingTest, IntxLevelIsAutomaskedAndRetriggeredOnUnmask) {
  UniqueFd irq(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  const int fd = irq.get();
  call(kDeviceSetIrqs, testing::set_irqs(kIrqSetDataEventfd | kIrqSetActionTrigger, kIrqIntx, 0, 1),
       std::span(&fd, 1));
  write_bar0_u32(0x100, 1);  // level up: one edge
  EXPECT_TRUE(eventfd_fired(fd));
  unmask_intx();  // QEMU's EOI while the level is still up: fires again
  EXPECT_TRUE(eventfd_fired(fd));
  write_bar0_u32(0x100, 0);  // level down
  unmask_intx();
  EXPECT_FALSE(eventfd_fired(fd, 100));
}

TEST_F(FunctionServingTest, MsixVectorsReachTheirEventfds) {
  std::array<UniqueFd, 4> irqs;
  std::array<int, 4> fds{};
  for (std::size_t i = 0; i < 4; ++i) {
    irqs[i].reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    fds[i] = irqs[i].get();
  }
  call(kDeviceSetIrqs, testing::set_irqs(kIrqSetDataEventfd | kIrqSetActionTrigger, kIrqMsix, 0, 4),
       fds);
  write_bar0_u32(0x100, 0x10 + 2);  // signal_msix(2)
  EXPECT_TRUE(eventfd_fired(fds[2]));
  EXPECT_FALSE(eventfd_fired(fds[0], 0));
  EXPECT_FALSE(eventfd_fired(fds[1], 0));
  EXPECT_FALSE(eventfd_fired(fds[3], 0));
}

TEST_F(FunctionServingTest, DmaMapsAppearInGuestMemoryAndUnmapWaitsForSnapshots) {
  constexpr std::size_t kRam = 0x4000;
  UniqueFd ram(::memfd_create("guest-ram", MFD_CLOEXEC));
  ASSERT_EQ(::ftruncate(ram.get(), kRam), 0);
  auto* host = static_cast<std::uint8_t*>(
      ::mmap(nullptr, kRam, PROT_READ | PROT_WRITE, MAP_SHARED, ram.get(), 0));
  ASSERT_NE(host, MAP_FAILED);
  std::memcpy(host + 0x1010, "vpci", 4);
  const int fd = ram.get();
  call(kDmaMap, testing::dma_map(kDmaMapRead | kDmaMapWrite, 0, 0x80000, kRam), std::span(&fd, 1));
  // An fd-less map (QEMU's ROM areas) becomes a message-backed region: no host mapping.
  call(kDmaMap, testing::dma_map(kDmaMapRead, 0, 0xFFFC0000, 0x1000));

  std::shared_ptr<const virtio::MemoryMap> in_flight = memory_->snapshot();
  ASSERT_EQ(in_flight->regions().size(), 2u);
  EXPECT_NE(in_flight->regions()[0]->host(), nullptr);
  EXPECT_EQ(in_flight->regions()[1]->host(), nullptr);
  EXPECT_FALSE(in_flight->all_host_mapped());
  std::array<std::uint8_t, 4> word{};
  ASSERT_TRUE(in_flight->read(0x81010, word).has_value());
  EXPECT_EQ(std::memcmp(word.data(), "vpci", 4), 0);
  ASSERT_TRUE(in_flight->write(0x81020, std::span<const std::uint8_t>(word)).has_value());
  EXPECT_EQ(std::memcmp(host + 0x1020, "vpci", 4), 0);

  // DMA_UNMAP while a "request" still holds the snapshot: the reply must not come before
  // the snapshot is dropped, since the server munmaps right after dma_region_removed.
  std::atomic<bool> snapshot_dropped{false};
  std::atomic<bool> dropped_before_reply{false};
  std::thread unmapper([&] {
    auto reply = client_->call(kDmaUnmap, testing::dma_unmap(0, 0x80000, kRam));
    dropped_before_reply = snapshot_dropped.load();
    EXPECT_TRUE(reply && !reply->is_error());
  });
  // Give a non-waiting implementation ample time to reply early (no effect on a correct one).
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  snapshot_dropped = true;
  in_flight.reset();
  unmapper.join();
  EXPECT_TRUE(dropped_before_reply);
  ASSERT_EQ(memory_->snapshot()->regions().size(), 1u);
  EXPECT_EQ(memory_->snapshot()->regions()[0]->guest_address(), 0xFFFC0000u);
  ::munmap(host, kRam);
}

// The attach and early-boot sequence QEMU 11.1.3's vfio-user-pci actually sent (recorded
// with the server's message trace, tests/guest): DMA maps before GET_INFO, an fd-less
// ROM map, ROM BAR probing through config, INTx eventfd set/disable/set around
// DEVICE_RESET, then the PAM/ROM churn that splits guest RAM into pieces and rejoins it.
// Every request must succeed, and the device's GuestMemory must end up holding exactly
// the final maps.
TEST_F(FunctionServingTest, QemuAttachSequenceReplays) {
  constexpr std::uint64_t kRam = 0x20000000;  // -m 512, memory-backend-memfd share=on
  UniqueFd ram(::memfd_create("guest-ram", MFD_CLOEXEC));
  ASSERT_EQ(::ftruncate(ram.get(), kRam), 0);
  const int fd = ram.get();
  const auto rw = kDmaMapRead | kDmaMapWrite;
  auto map = [&](std::uint32_t flags, std::uint64_t offset, std::uint64_t iova, std::uint64_t size,
                 bool with_fd) {
    call(kDmaMap, testing::dma_map(flags, offset, iova, size),
         with_fd ? std::span<const int>(&fd, 1) : std::span<const int>());
  };
  auto unmap = [&](std::uint64_t iova, std::uint64_t size) {
    call(kDmaUnmap, testing::dma_unmap(0, iova, size));
  };
  map(rw, 0, 0, kRam, true);
  map(kDmaMapRead, 0, 0xFFFC0000, 0x40000, false);  // BIOS ROM: no fd
  call(kDeviceGetInfo, Payload()
                           .add(std::uint32_t{kDeviceInfoSize})
                           .add(std::uint32_t{0})
                           .add(std::uint32_t{0})
                           .add(std::uint32_t{0}));
  for (unsigned index : {0u, 1u, 2u, 3u, 4u, 5u, 7u})
    call(kDeviceGetRegionInfo, testing::region_info(index));
  call(kDeviceGetIrqInfo, testing::irq_info(kIrqErr));
  call(kRegionRead, testing::region_read(kRegionConfig, 0, 4096));
  std::array<std::uint8_t, 4> rom_probe{0x00, 0xF8, 0xFF, 0xFF};
  call(kRegionRead, testing::region_read(kRegionConfig, 0x30, 4));
  call(kRegionWrite, testing::region_write(kRegionConfig, 0x30, rom_probe));
  call(kRegionRead, testing::region_read(kRegionConfig, 0x30, 4));
  call(kRegionWrite, testing::region_write(kRegionConfig, 0x30, std::array<std::uint8_t, 4>{}));
  call(kRegionRead, testing::region_read(kRegionConfig, 0x3D, 1));
  UniqueFd intx(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  const int intx_fd = intx.get();
  const auto assign = kIrqSetDataEventfd | kIrqSetActionTrigger;
  call(kDeviceSetIrqs, testing::set_irqs(assign, kIrqIntx, 0, 1), std::span(&intx_fd, 1));
  call(kDeviceSetIrqs, testing::set_irqs(kIrqSetDataNone | kIrqSetActionTrigger, kIrqIntx, 0, 0));
  call(kDeviceReset, Payload());
  call(kDeviceSetIrqs, testing::set_irqs(assign, kIrqIntx, 0, 1), std::span(&intx_fd, 1));
  // PAM reprogramming: RAM split around the ROM shadows (fd-less), twice, then rejoined.
  unmap(0, kRam);
  map(rw, 0, 0, 0xC0000, true);
  map(kDmaMapRead, 0, 0xC0000, 0x20000, false);
  map(kDmaMapRead, 0, 0xE0000, 0x20000, false);
  map(rw, 0x100000, 0x100000, kRam - 0x100000, true);
  unmap(0, 0xC0000);
  unmap(0xC0000, 0x20000);
  unmap(0xE0000, 0x20000);
  unmap(0x100000, kRam - 0x100000);
  map(rw, 0, 0, 0xD8000, true);
  map(kDmaMapRead, 0, 0xD8000, 0x8000, false);
  map(kDmaMapRead, 0, 0xE0000, 0x10000, false);
  map(rw, 0xF0000, 0xF0000, kRam - 0xF0000, true);
  unmap(0, 0xD8000);
  unmap(0xD8000, 0x8000);
  unmap(0xE0000, 0x10000);
  unmap(0xF0000, kRam - 0xF0000);
  map(rw, 0, 0, kRam, true);

  EXPECT_EQ(server_->protocol_errors(), 0u);
  EXPECT_EQ(function_.resets.load(), 1);
  const auto memory = memory_->snapshot();
  // RAM, mapped, and the fd-less BIOS ROM, message-backed.
  ASSERT_EQ(memory->regions().size(), 2u);
  EXPECT_EQ(memory->regions()[0]->guest_address(), 0u);
  EXPECT_EQ(memory->regions()[0]->size(), kRam);
  EXPECT_EQ(memory->regions()[1]->guest_address(), 0xFFFC0000u);
  EXPECT_EQ(memory->regions()[1]->host(), nullptr);
  const std::array<std::uint8_t, 4> word{1, 2, 3, 4};
  ASSERT_TRUE(memory->write(kRam - 4, word).has_value());
  std::array<std::uint8_t, 4> back{};
  ASSERT_EQ(::pread(ram.get(), back.data(), 4, kRam - 4), 4);
  EXPECT_EQ(back, word);
}

TEST_F(FunctionServingTest, DisconnectResetsDetachesAndEmptiesGuestMemory) {
  UniqueFd ram(::memfd_create("guest-ram", MFD_CLOEXEC));
  ASSERT_EQ(::ftruncate(ram.get(), 0x1000), 0);
  const int fd = ram.get();
  call(kDmaMap, testing::dma_map(kDmaMapRead, 0, 0x1000, 0x1000), std::span(&fd, 1));
  ASSERT_EQ(memory_->snapshot()->regions().size(), 1u);
  EXPECT_NE(function_.output.load(), nullptr);
  client_->close();
  for (int i = 0; i < 500 && server_->connections_closed() < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(server_->connections_closed(), 1u);
  EXPECT_EQ(function_.resets.load(), 1);
  EXPECT_EQ(function_.output.load(), nullptr);
  EXPECT_TRUE(memory_->snapshot()->regions().empty());
}

}  // namespace
}  // namespace vpci::server
