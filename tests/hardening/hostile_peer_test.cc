// A hostile vfio-user peer (issue 10, SECURITY.md): a virtio-blk (modern) and a
// virtio-rng (transitional) served the way `vpci serve` serves them — the transport
// VfioUserServer on real AF_UNIX sockets, guest RAM in a memfd handed over with DMA_MAP —
// and driven by the test virtio-pci driver through REGION_READ/WRITE. The peer then
// truncates messages, lies about sizes (message_size vs payload, argsz, counts), sends
// fds where none belong, maps memory overlapping or beyond its fd, unmaps memory under
// a request that is already on the ring, and disconnects mid-message.
//
// Asserted: the server never touches memory it no longer maps (a stray access would
// fault in the server thread; ASan and the memfd contents catch quieter ones), the
// device ends in DEVICE_NEEDS_RESET where the guest's buffers vanished and recovers
// after a reset, every malformed message gets an error reply or a clean close, and the
// other device keeps serving correct I/O on its own socket throughout.
// (tests/server/protocol_test.cc covers each command's validation one by one against
// the scratch function; this test adds a real DMA-doing device.)
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <sys/mman.h>

#include "devices/virtio_blk.h"
#include "devices/virtio_rng.h"
#include "server/socket_server.h"
#include "server/vfio_regions.h"
#include "tests/devices/blk_harness.h"
#include "tests/server/test_client.h"
#include "tests/virtio_pci/pci_driver.h"
#include "virtio/pci/virtio_pci_function.h"

namespace vpci::server {
namespace {

using namespace vfio_user;
using testing::Payload;
using testing::TestClient;
using virtio::testing::ChainBuilder;
using virtio::testing::DriverOptions;
using virtio::testing::FakeGuestRam;
using virtio::testing::VirtioPciDriver;
namespace vstatus = virtio::status;

constexpr std::uint64_t kIova = 0x100000;
constexpr std::size_t kRingBytes = 1 << 20;  // first DMA map: rings
constexpr std::size_t kDataBytes = 3 << 20;  // second DMA map: buffers
constexpr std::size_t kRamBytes = kRingBytes + kDataBytes;

std::string socket_path(const std::string& name) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("vpci-hostile-peer-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

// A pci::Function whose accesses travel as vfio-user REGION_READ/WRITE over a client
// socket, so the in-process test driver can drive a served device.
class RemoteFunction final : public pci::Function {
 public:
  explicit RemoteFunction(const pci::Function& local) {
    // Layout facts are fixed at construction; copied before the server thread starts.
    config_size_ = local.config_size();
    for (unsigned bar = 0; bar < pci::kBarCount; ++bar) bars_[bar] = local.bar_info(bar);
    msix_ = local.msix_vector_count();
  }
  void set_client(TestClient& client) { client_ = &client; }

  std::uint32_t config_size() const override { return config_size_; }
  pci::BarInfo bar_info(unsigned bar) const override {
    return bar < pci::kBarCount ? bars_[bar] : pci::BarInfo{};
  }
  std::uint16_t msix_vector_count() const override { return msix_; }
  Status config_read(std::uint32_t offset, std::span<std::uint8_t> data) override {
    return read(kRegionConfig, offset, data);
  }
  Status config_write(std::uint32_t offset, std::span<const std::uint8_t> data) override {
    return write(kRegionConfig, offset, data);
  }
  Status bar_read(unsigned bar, std::uint64_t offset, std::span<std::uint8_t> data) override {
    return read(bar, offset, data);
  }
  Status bar_write(unsigned bar, std::uint64_t offset,
                   std::span<const std::uint8_t> data) override {
    return write(bar, offset, data);
  }
  void set_interrupt_output(pci::InterruptOutput*) override {}
  void reset() override { (void)client_->call(kDeviceReset, Payload()); }

 private:
  Status read(unsigned region, std::uint64_t offset, std::span<std::uint8_t> data) {
    auto reply = client_->call(
        kRegionRead, testing::region_read(region, offset, static_cast<std::uint32_t>(data.size())));
    if (!reply || reply->is_error() || reply->payload.size() != kRegionAccessSize + data.size()) {
      std::fill(data.begin(), data.end(), 0xFF);
      return make_error(ErrorCode::kIoError, "REGION_READ failed");
    }
    std::memcpy(data.data(), reply->payload.data() + kRegionAccessSize, data.size());
    return {};
  }
  Status write(unsigned region, std::uint64_t offset, std::span<const std::uint8_t> data) {
    auto reply = client_->call(kRegionWrite, testing::region_write(region, offset, data));
    if (!reply || reply->is_error()) return make_error(ErrorCode::kIoError, "REGION_WRITE failed");
    return {};
  }

  TestClient* client_ = nullptr;  // set by Served::connect() before any access
  std::uint32_t config_size_ = 0;
  std::array<pci::BarInfo, pci::kBarCount> bars_{};
  std::uint16_t msix_ = 0;
};

// Guest RAM shared with the server: one memfd, mapped here and (by DMA_MAP) there.
struct SharedRam {
  UniqueFd fd{::memfd_create("hostile-peer-ram", MFD_CLOEXEC)};
  std::uint8_t* bytes = nullptr;
  SharedRam() {
    EXPECT_EQ(::ftruncate(fd.get(), kRamBytes), 0);
    void* map = ::mmap(nullptr, kRamBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    EXPECT_NE(map, MAP_FAILED);
    bytes = static_cast<std::uint8_t*>(map);
  }
  ~SharedRam() { ::munmap(bytes, kRamBytes); }
};

// One served device and a client + driver for it.
struct Served {
  std::shared_ptr<virtio::GuestMemory> memory = std::make_shared<virtio::GuestMemory>();
  std::unique_ptr<pci::Function> function;
  std::unique_ptr<VfioUserServer> server;
  std::string path;
  SharedRam ram;
  FakeGuestRam guest{std::make_shared<virtio::GuestMemory>(), kIova,
                     std::span(ram.bytes, kRamBytes)};
  std::optional<TestClient> client;
  std::unique_ptr<RemoteFunction> remote;
  std::unique_ptr<VirtioPciDriver> driver;

  Served(std::unique_ptr<virtio::Device> device, virtio::pci::TransportKind kind,
         const std::string& name) {
    virtio::pci::VirtioPciOptions options;
    options.kind = kind;
    options.msix_owner = pci::MsixTableOwner::kBus;
    auto made = virtio::pci::make_virtio_pci_function(kind, std::move(device), memory, options);
    EXPECT_TRUE(made.has_value());
    if (!made) return;
    remote = std::make_unique<RemoteFunction>(**made);
    function = std::move(*made);
    path = socket_path(name);
    auto created = VfioUserServer::create(path, *function, memory);
    EXPECT_TRUE(created.has_value());
    if (!created) return;
    server = std::move(*created);
    server->start();
  }
  // Connects, negotiates, maps both RAM halves and brings the device up (INTx, no
  // interrupts consumed: the tests poll the used ring, since virtio-blk completes its
  // requests from the server's loop after the doorbell write).
  bool connect() {
    auto c = TestClient::connect(path);
    if (!c) return false;
    client.emplace(std::move(*c));
    remote->set_client(*client);
    if (!client->negotiate()) return false;
    if (!map_rings() || !map_data()) return false;
    driver = std::make_unique<VirtioPciDriver>(*remote, guest);
    if (!driver->probe()) return false;
    return bring_up();
  }
  bool bring_up() {
    guest.reset_allocator();
    DriverOptions options;
    options.use_msix = false;
    auto init = driver->initialise(options);
    EXPECT_TRUE(init.has_value()) << init.error().message;
    guest.reset_allocator(kRingBytes);  // buffers go to the second map
    return init.has_value();
  }
  bool dma_map(std::uint64_t file_offset, std::uint64_t iova, std::uint64_t size) {
    const int fd = ram.fd.get();
    auto reply =
        client->call(kDmaMap, testing::dma_map(kDmaMapRead | kDmaMapWrite, file_offset, iova, size),
                     std::span(&fd, 1));
    return reply && !reply->is_error();
  }
  bool map_rings() { return dma_map(0, kIova, kRingBytes); }
  bool map_data() { return dma_map(kRingBytes, kIova + kRingBytes, kDataBytes); }
  bool unmap_data() {
    auto reply = client->call(kDmaUnmap, testing::dma_unmap(0, kIova + kRingBytes, kDataBytes));
    return reply && !reply->is_error();
  }
  std::uint8_t status() { return driver->status(); }
};

std::unique_ptr<virtio::Device> make_blk() {
  devices::BlockDeviceOptions options;
  options.queue_size = 64;
  auto device = devices::BlockDevice::create(
      std::make_unique<devices::testing::MemoryBackend>(1 << 20), options);
  EXPECT_TRUE(device.has_value());
  return device ? std::move(*device) : nullptr;
}

// A blk request; returns the status byte (0xEE if the request never completed) and the
// data read.
struct BlkResult {
  std::uint8_t status = 0xEE;
  std::vector<std::uint8_t> data;
};
BlkResult blk_request(Served& s, std::uint32_t type, std::uint64_t sector,
                      std::span<const std::uint8_t> out, std::uint32_t in_length) {
  devices::blk::RequestHeader header{type, 0, sector};
  ChainBuilder chain(s.guest);
  chain.readable(std::span(reinterpret_cast<const std::uint8_t*>(&header), sizeof(header)));
  if (!out.empty()) chain.readable(out);
  if (in_length != 0) chain.writable(in_length);
  chain.writable(1);
  (void)s.driver->submit(0, chain);
  BlkResult result;
  if (!s.driver->wait_used(0)) return result;
  auto written = chain.written_bytes();
  result.status = written.back();
  written.pop_back();
  result.data = std::move(written);
  return result;
}

std::vector<std::uint8_t> pattern(std::size_t n, unsigned salt) {
  std::vector<std::uint8_t> bytes(n);
  for (std::size_t i = 0; i < n; ++i) bytes[i] = static_cast<std::uint8_t>(i * 13 + salt);
  return bytes;
}

void expect_blk_io(Served& blk, unsigned salt) {
  const auto data = pattern(1024, salt);
  EXPECT_EQ(blk_request(blk, devices::blk::kTypeOut, 8 + salt, data, 0).status,
            devices::blk::kStatusOk);
  auto read = blk_request(blk, devices::blk::kTypeIn, 8 + salt, {}, 1024);
  EXPECT_EQ(read.status, devices::blk::kStatusOk);
  EXPECT_EQ(read.data, data);
}

void expect_rng_io(Served& rng) {
  ChainBuilder chain(rng.guest);
  chain.writable(64);
  const std::uint16_t id = rng.driver->submit(0, chain);
  auto used = rng.driver->wait_used(0);
  ASSERT_TRUE(used.has_value()) << "rng request not served";
  EXPECT_EQ(used->id, id);
  EXPECT_GE(used->length, 1u);
}

class HostilePeer : public ::testing::Test {
 protected:
  void SetUp() override {
    blk_ = std::make_unique<Served>(make_blk(), virtio::pci::TransportKind::kModern, "blk.sock");
    rng_ = std::make_unique<Served>(std::make_unique<devices::RngDevice>(),
                                    virtio::pci::TransportKind::kTransitional, "rng.sock");
    ASSERT_TRUE(blk_->server && rng_->server);
    ASSERT_TRUE(blk_->connect());
    ASSERT_TRUE(rng_->connect());
    expect_blk_io(*blk_, 0);
    expect_rng_io(*rng_);
  }
  void TearDown() override {
    // The other device served correctly to the very end.
    if (rng_ && rng_->driver) expect_rng_io(*rng_);
    blk_.reset();
    rng_.reset();
  }
  // After a broken connection: a new client on the same socket gets a fresh device.
  void reconnect_blk() {
    blk_->client->close();
    ASSERT_TRUE(blk_->connect());
  }

  std::unique_ptr<Served> blk_;
  std::unique_ptr<Served> rng_;
};

TEST_F(HostilePeer, UnmapUnderARequestOnTheRing) {
  // A read whose buffers live in the data map is published, then that map goes away,
  // then the doorbell rings: the device must fail the queue, not touch the buffers.
  devices::blk::RequestHeader header{devices::blk::kTypeIn, 0, 8};
  ChainBuilder chain(blk_->guest);
  chain.readable(std::span(reinterpret_cast<const std::uint8_t*>(&header), sizeof(header)));
  chain.writable(1024);
  chain.writable(1);
  for (const auto& e : chain.elements()) {
    if (e.writable) std::memset(blk_->guest.host(e.address, e.length), 0xAB, e.length);
  }
  (void)blk_->driver->submit(0, chain, /*kick=*/false);
  ASSERT_TRUE(blk_->unmap_data());
  ASSERT_TRUE(blk_->driver->notify(0).has_value());
  EXPECT_FALSE(blk_->driver->pop_used(0).has_value());
  EXPECT_NE(blk_->status() & vstatus::kDeviceNeedsReset, 0);
  for (const auto& e : chain.elements()) {
    if (!e.writable) continue;
    const std::uint8_t* bytes = blk_->guest.host(e.address, e.length);
    EXPECT_TRUE(std::all_of(bytes, bytes + e.length, [](std::uint8_t b) { return b == 0xAB; }))
        << "the device wrote into memory that was unmapped";
  }
  expect_rng_io(*rng_);

  // Recovery: map again, reset, and the device serves correctly.
  ASSERT_TRUE(blk_->map_data());
  ASSERT_TRUE(blk_->bring_up());
  expect_blk_io(*blk_, 1);
}

TEST_F(HostilePeer, UnmapOfTheRingsAndUnmapAllUnderLiveQueues) {
  // The rings themselves vanish: the next doorbell must fail the queue.
  auto reply = blk_->client->call(kDmaUnmap, testing::dma_unmap(0, kIova, kRingBytes));
  ASSERT_TRUE(reply && !reply->is_error());
  ChainBuilder chain(blk_->guest);
  chain.writable(64);
  // The driver writes into its own copy of RAM (still mapped here); the server no longer
  // sees it.
  (void)blk_->driver->submit(0, chain, /*kick=*/false);
  ASSERT_TRUE(blk_->driver->notify(0).has_value());
  EXPECT_NE(blk_->status() & vstatus::kDeviceNeedsReset, 0);
  ASSERT_TRUE(blk_->map_rings());
  ASSERT_TRUE(blk_->bring_up());
  expect_blk_io(*blk_, 2);

  // Everything at once, then a doorbell.
  reply = blk_->client->call(kDmaUnmap, testing::dma_unmap(kDmaUnmapAll, 0, 0));
  ASSERT_TRUE(reply && !reply->is_error());
  ChainBuilder more(blk_->guest);
  more.writable(64);
  (void)blk_->driver->submit(0, more, /*kick=*/false);
  ASSERT_TRUE(blk_->driver->notify(0).has_value());
  EXPECT_NE(blk_->status() & vstatus::kDeviceNeedsReset, 0);
  ASSERT_TRUE(blk_->map_rings() && blk_->map_data());
  ASSERT_TRUE(blk_->bring_up());
  expect_blk_io(*blk_, 3);
}

TEST_F(HostilePeer, PostedDoorbellThenUnmapCompletesBeforeTheUnmap) {
  // QEMU posts doorbells (NO_REPLY) and may unmap right behind them: messages on one
  // connection are handled in order, so the request completes against mapped memory and
  // the unmap waits for it. Sent in one sendmsg to leave no gap between them.
  const auto data = pattern(512, 7);
  ASSERT_EQ(blk_request(*blk_, devices::blk::kTypeOut, 40, data, 0).status,
            devices::blk::kStatusOk);
  devices::blk::RequestHeader header{devices::blk::kTypeIn, 0, 40};
  ChainBuilder chain(blk_->guest);
  chain.readable(std::span(reinterpret_cast<const std::uint8_t*>(&header), sizeof(header)));
  chain.writable(512);
  chain.writable(1);
  (void)blk_->driver->submit(0, chain, /*kick=*/false);
  const auto notify = blk_->driver->probed().notify;
  ASSERT_TRUE(notify.has_value());
  std::vector<std::uint8_t> both;
  {
    const std::array<std::uint8_t, 2> queue0{0, 0};
    Payload write = testing::region_write(notify->bar, notify->offset, queue0);
    std::vector<std::uint8_t> message(kHeaderSize);
    encode_header(message, Header{100, kRegionWrite,
                                  static_cast<std::uint32_t>(kHeaderSize + write.bytes().size()),
                                  kTypeCommand | kFlagNoReply, 0});
    message.insert(message.end(), write.bytes().begin(), write.bytes().end());
    Payload unmap = testing::dma_unmap(0, kIova + kRingBytes, kDataBytes);
    std::vector<std::uint8_t> second(kHeaderSize);
    encode_header(second, Header{101, kDmaUnmap,
                                 static_cast<std::uint32_t>(kHeaderSize + unmap.bytes().size()),
                                 kTypeCommand, 0});
    second.insert(second.end(), unmap.bytes().begin(), unmap.bytes().end());
    both = message;
    both.insert(both.end(), second.begin(), second.end());
  }
  ASSERT_TRUE(blk_->client->send_raw(both));
  auto reply = blk_->client->receive();
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->header.msg_id, 101);
  EXPECT_FALSE(reply->is_error());
  ASSERT_TRUE(blk_->driver->pop_used(0).has_value());
  auto written = chain.written_bytes();
  ASSERT_EQ(written.size(), 513u);
  EXPECT_EQ(written.back(), devices::blk::kStatusOk);
  written.pop_back();
  EXPECT_EQ(written, data);
  ASSERT_TRUE(blk_->map_data());
  expect_blk_io(*blk_, 4);
}

TEST_F(HostilePeer, DmaMapsOverlappingOrBeyondTheFd) {
  const int fd = blk_->ram.fd.get();
  const std::uint32_t rw = kDmaMapRead | kDmaMapWrite;
  struct Case {
    const char* name;
    std::uint64_t offset, iova, size;
  };
  const Case cases[] = {
      {"overlaps the ring map", 0, kIova + kRingBytes - 0x1000, 0x2000},
      {"inside the data map", 0, kIova + kRingBytes + 0x10000, 0x1000},
      {"covers both maps", 0, 0, 0x10000000},
      {"file range beyond the fd", kRamBytes - 0x1000, 0x40000000, 0x2000},
      {"offset beyond the fd", kRamBytes, 0x40000000, 0x1000},
      {"offset + size wraps", 0xFFFFFFFFFFFFF000ull, 0x40000000, 0x2000},
      {"iova + size wraps", 0, 0xFFFFFFFFFFFFF000ull, 0x2000},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    auto reply = blk_->client->call(kDmaMap, testing::dma_map(rw, c.offset, c.iova, c.size),
                                    std::span(&fd, 1));
    ASSERT_TRUE(reply.has_value());
    EXPECT_TRUE(reply->is_error());
  }
  // The existing maps are intact: I/O still works.
  expect_blk_io(*blk_, 5);
}

TEST_F(HostilePeer, TruncatedMessagesOfEveryCommandGetErrors) {
  // Each command's well-formed payload, cut at every length below its fixed part.
  const std::vector<std::pair<std::uint16_t, Payload>> commands = {
      {kDmaMap, testing::dma_map(kDmaMapRead, 0, 0x40000000, 0x1000)},
      {kDmaUnmap, testing::dma_unmap(0, kIova, kRingBytes)},
      {kDeviceGetInfo, Payload().add(std::uint32_t{16}).add(0u).add(0u).add(0u)},
      {kDeviceGetRegionInfo, testing::region_info(4)},
      {kDeviceGetRegionIoFds, Payload().add(std::uint32_t{16}).add(0u).add(4u).add(0u)},
      {kDeviceGetIrqInfo, testing::irq_info(0)},
      {kDeviceSetIrqs, testing::set_irqs(kIrqSetDataNone | kIrqSetActionTrigger, kIrqIntx, 0, 1)},
      {kRegionRead, testing::region_read(4, 0, 4)},
      {kRegionWrite, testing::region_write(4, 0x14, std::array<std::uint8_t, 1>{0})},
  };
  for (const auto& [command, payload] : commands) {
    for (std::size_t cut = 0; cut < payload.bytes().size(); ++cut) {
      SCOPED_TRACE(::testing::Message() << "command " << command << " cut at " << cut);
      auto reply = blk_->client->call(command, std::span(payload.bytes().data(), cut));
      ASSERT_TRUE(reply.has_value()) << "no reply: the connection broke";
      EXPECT_TRUE(reply->is_error());
      EXPECT_EQ(reply->header.message_size, kHeaderSize);
    }
  }
  // Nothing above changed the device: the status write above was refused, I/O works.
  EXPECT_NE(blk_->status() & vstatus::kDriverOk, 0);
  expect_blk_io(*blk_, 6);
}

TEST_F(HostilePeer, LyingSizesAndCounts) {
  // REGION_WRITE whose count disagrees with the data that follows.
  Payload longer = testing::region_write(4, 0x14, std::array<std::uint8_t, 1>{0});
  longer.add(std::uint64_t{0});  // 8 bytes more than count says
  auto reply = blk_->client->call(kRegionWrite, longer);
  ASSERT_TRUE(reply.has_value());
  EXPECT_TRUE(reply->is_error());
  Payload shorter = Payload().add(std::uint64_t{0x14}).add(std::uint32_t{4}).add(std::uint32_t{64});
  shorter.add(std::uint32_t{0});  // count 64, 4 bytes present
  reply = blk_->client->call(kRegionWrite, shorter);
  ASSERT_TRUE(reply.has_value());
  EXPECT_TRUE(reply->is_error());
  // Reads larger than the region, than the transfer limit, or wrapping the offset.
  const std::uint64_t bar4 = blk_->remote->bar_info(4).size;
  ASSERT_GT(bar4, 0u);
  for (auto [offset, count] : {std::pair<std::uint64_t, std::uint32_t>{0, 0x100000},
                               {0, kMaxDataXferSize + 1},
                               {0xFFFFFFFFFFFFFFFCull, 8},
                               {bar4 - 4, 8}}) {
    reply = blk_->client->call(kRegionRead, testing::region_read(4, offset, count));
    ASSERT_TRUE(reply.has_value());
    EXPECT_TRUE(reply->is_error()) << std::hex << offset << " " << count;
  }
  // argsz below the structure; SET_IRQS ranges that overflow or exceed the vectors.
  reply = blk_->client->call(kDeviceGetRegionInfo, testing::region_info(4, 8));
  ASSERT_TRUE(reply.has_value());
  EXPECT_TRUE(reply->is_error());
  for (auto [start, count] :
       {std::pair<std::uint32_t, std::uint32_t>{0xFFFFFFFF, 2}, {0, 0xFFFFFFFF}, {5, 1}}) {
    reply = blk_->client->call(
        kDeviceSetIrqs,
        testing::set_irqs(kIrqSetDataNone | kIrqSetActionTrigger, kIrqIntx, start, count));
    ASSERT_TRUE(reply.has_value());
    EXPECT_TRUE(reply->is_error()) << start << " " << count;
  }
  // message_size shorter than what is sent: the tail is read as the next header,
  // which cannot frame, so the server closes this connection — and only this one.
  std::vector<std::uint8_t> bytes(kHeaderSize + 16, 0xFF);
  encode_header(bytes, Header{7, kDeviceGetInfo, kHeaderSize, kTypeCommand, 0});
  ASSERT_TRUE(blk_->client->send_raw(bytes));
  (void)blk_->client->receive();  // the error reply to the short GET_INFO
  EXPECT_TRUE(blk_->client->wait_closed());
  expect_rng_io(*rng_);
  reconnect_blk();
  expect_blk_io(*blk_, 7);
}

TEST_F(HostilePeer, FdsWhereNoneBelongAreClosed) {
  // A memfd on every command that takes none: refused, and the server keeps no copy
  // (we see its link count drop via /proc: simplest is that the device still works and
  // the fd table of this process does not grow).
  const std::size_t before = testing::open_fd_count();
  const int fd = blk_->ram.fd.get();
  for (std::uint16_t command :
       {std::uint16_t{kVersion}, std::uint16_t{kDmaUnmap}, std::uint16_t{kDeviceGetInfo},
        std::uint16_t{kRegionRead}, std::uint16_t{kRegionWrite}, std::uint16_t{kDeviceReset},
        std::uint16_t{kDeviceGetIrqInfo}}) {
    auto reply = blk_->client->call(command, testing::region_read(4, 0, 4), std::span(&fd, 1));
    ASSERT_TRUE(reply.has_value()) << command;
    EXPECT_TRUE(reply->is_error()) << command;
  }
  // SET_IRQS with an fd but DATA_NONE.
  auto reply = blk_->client->call(
      kDeviceSetIrqs, testing::set_irqs(kIrqSetDataNone | kIrqSetActionTrigger, kIrqIntx, 0, 1),
      std::span(&fd, 1));
  ASSERT_TRUE(reply.has_value());
  EXPECT_TRUE(reply->is_error());
  EXPECT_EQ(testing::open_fd_count(), before);
  EXPECT_NE(blk_->status() & vstatus::kDriverOk, 0);
  expect_blk_io(*blk_, 8);
}

TEST_F(HostilePeer, DisconnectMidMessageWithLiveQueues) {
  ChainBuilder chain(blk_->guest);
  chain.writable(64);
  (void)blk_->driver->submit(0, chain, /*kick=*/false);  // left on the ring
  std::vector<std::uint8_t> partial(kHeaderSize + 4);
  encode_header(partial, Header{9, kRegionWrite, kHeaderSize + 64, kTypeCommand, 0});
  ASSERT_TRUE(blk_->client->send_raw(partial));
  const auto closed = blk_->server->connections_closed();
  blk_->client->close();
  for (int i = 0; i < 500 && blk_->server->connections_closed() == closed; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GT(blk_->server->connections_closed(), closed);
  expect_rng_io(*rng_);
  ASSERT_TRUE(blk_->connect());
  EXPECT_NE(blk_->status() & vstatus::kDriverOk, 0);
  expect_blk_io(*blk_, 9);
}

TEST_F(HostilePeer, ASecondClientWaitsForTheFirst) {
  // One connection per socket at a time (SECURITY.md): a second client is queued by the
  // kernel and only served once the first one leaves.
  auto second = TestClient::connect(blk_->path);
  ASSERT_TRUE(second.has_value());
  Payload version;
  version.add(std::uint16_t{0}).add(std::uint16_t{0});
  second->send_command(kVersion, version);
  EXPECT_FALSE(second->receive(200).has_value());
  expect_blk_io(*blk_, 10);  // the first client is unaffected
  blk_->client->close();
  auto reply = second->receive(10000);
  ASSERT_TRUE(reply.has_value());
  EXPECT_FALSE(reply->is_error());
}

}  // namespace
}  // namespace vpci::server
