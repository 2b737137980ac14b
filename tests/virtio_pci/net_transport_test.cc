// virtio-net end to end through every transport and driver path, with the test driver
// (tests/virtio_pci/pci_driver.h) and a socket-pair back end standing in for the tap:
// modern (split, packed), transitional via modern and via legacy I/O, legacy-only,
// transitional MMR via modern and via its legacy window, the legacy I/O -> MMR mapper, and
// legacy I/O over a PF's admin queue (the mapper's admin backend, virtio 1.3 §2.12.1.2).
// Each case checks the header size the back end was told (virtio 1.3 §5.1.6: 10 bytes for
// a legacy driver without MRG_RXBUF, 12 otherwise), a frame each way byte for byte with
// its interrupt, the device config (MAC, link up) and the control queue's acks.
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "base/event_loop.h"
#include "base/little_endian.h"
#include "devices/net_spec.h"
#include "devices/virtio_net.h"
#include "tests/devices/net_harness.h"
#include "tests/virtio_pci/test_devices.h"
#include "virtio/pci/legacy_admin_path.h"
#include "virtio/pci/transport_function.h"

namespace vpci::virtio::testing {
namespace {

using devices::testing::SocketPacketBackend;
using pci::TransportKind;
namespace net = devices::net;

constexpr std::array<std::uint8_t, 6> kMac = {0x52, 0x54, 0x00, 0xab, 0xcd, 0x01};

struct NetCase {
  const char* name;
  TransportKind kind;
  DriverPath path;
  bool packed;
  bool msix;
  bool mergeable;  // offer MRG_RXBUF (the driver takes what is offered)
  bool mapper = false;
  bool admin = false;  // the mapper's admin backend: a VF of an SR-IOV PF
};

void PrintTo(const NetCase& c, std::ostream* os) {
  *os << c.name;
}

// A NetDevice on a socket-pair back end behind a transport (optionally the mapper), its
// event loop run by the test between driver steps.
struct NetRig {
  Guest guest;
  std::unique_ptr<EventLoop> loop;
  SocketPacketBackend* backend = nullptr;
  devices::NetDevice* device = nullptr;  // owned by the function
  std::unique_ptr<pci::VirtioPciFunction> owned;
  std::unique_ptr<pci::LegacyIoMapper> mapper;
  vpci::pci::Function* bus_view = nullptr;
  std::unique_ptr<vpci::pci::Function> admin_mapper;  // legacy-over-admin
  pci::LegacyAdminPath* admin_path = nullptr;         // owned by admin_mapper
  std::unique_ptr<VirtioPciDriver> driver;  // after the functions: it detaches on destruction

  explicit NetRig(const NetCase& c) {
    auto created_loop = EventLoop::create();
    if (!created_loop) {
      ADD_FAILURE() << created_loop.error().message;
      return;
    }
    loop = std::move(*created_loop);
    devices::NetDeviceOptions options;
    options.mac = kMac;
    options.mergeable_rx_buffers = c.mergeable;
    options.queue_size = 64;
    auto backend_owned = std::make_unique<SocketPacketBackend>(1);
    backend = backend_owned.get();
    auto created_device = devices::NetDevice::create(std::move(backend_owned), options);
    if (!created_device) {
      ADD_FAILURE() << created_device.error().message;
      return;
    }
    device = created_device->get();
    if (c.admin) {
      build_over_admin(std::move(*created_device));
      return;
    }
    pci::VirtioPciOptions pci_options;
    pci_options.kind = c.mapper ? TransportKind::kTransitionalMmr : c.kind;
    auto created = pci::VirtioPciFunction::create(std::move(*created_device), guest.memory,
                                                  std::move(pci_options));
    if (!created) {
      ADD_FAILURE() << created.error().message;
      return;
    }
    owned = std::move(*created);
    owned->set_event_loop(loop.get());
    bus_view = owned.get();
    if (c.mapper) {
      auto wrapped = pci::LegacyIoMapper::create(std::move(owned));
      if (!wrapped) {
        ADD_FAILURE() << wrapped.error().message;
        return;
      }
      mapper = std::move(*wrapped);
      bus_view = mapper.get();
    }
    driver = std::make_unique<VirtioPciDriver>(*bus_view, guest.ram);
  }

  // legacy-over-admin exactly as `vpci serve` builds it: VF 1 of a management SR-IOV PF,
  // presented by the legacy I/O mapper over the PF's admin queue.
  void build_over_admin(std::unique_ptr<devices::NetDevice> vf_device) {
    auto created = pci::make_transport_function(TransportKind::kLegacyOverAdmin,
                                                std::move(vf_device), guest.memory);
    if (!created) {
      ADD_FAILURE() << created.error().message;
      return;
    }
    admin_mapper = std::move(*created);
    admin_mapper->set_event_loop(loop.get());
    admin_path = dynamic_cast<pci::LegacyIoMapper&>(*admin_mapper).admin_path();
    bus_view = admin_mapper.get();
    driver = std::make_unique<VirtioPciDriver>(*bus_view, guest.ram);
  }

  // Runs the device's loop until `done` holds (bounded: a lost frame fails the test, it
  // does not hang it).
  template <typename Done>
  bool run_until(Done done) {
    // `done` may consume what it checks (a frame, a used buffer): evaluated once per turn.
    for (int i = 0; i < 2000; ++i) {
      if (done()) return true;
      if (auto ran = loop->run_once(std::chrono::milliseconds(1)); !ran) {
        ADD_FAILURE() << ran.error().message;
        return false;
      }
    }
    return false;
  }
};

// A frame to the device's own MAC, `size` bytes in all.
std::vector<std::uint8_t> ethernet_frame(std::size_t size, std::uint8_t salt) {
  std::vector<std::uint8_t> frame(kMac.begin(), kMac.end());
  while (frame.size() < size) frame.push_back(static_cast<std::uint8_t>(frame.size() * 13 + salt));
  return frame;
}

class NetTransports : public ::testing::TestWithParam<NetCase> {};

TEST_P(NetTransports, FramesBothWaysWithTheNegotiatedHeader) {
  const NetCase& c = GetParam();
  NetRig rig(c);
  ASSERT_TRUE(rig.driver);
  auto probe = rig.driver->probe();
  ASSERT_TRUE(probe.has_value()) << probe.error().message;
  EXPECT_EQ(probe->virtio_id, 1u);
  DriverOptions driver_options;
  driver_options.path = c.path;
  driver_options.packed = c.packed;
  driver_options.use_msix = c.msix;
  auto init = rig.driver->initialise(driver_options);
  ASSERT_TRUE(init.has_value()) << init.error().message;
  const std::uint64_t features = rig.driver->negotiated_features();
  const bool legacy = c.path != DriverPath::kModern;
  EXPECT_EQ(has_feature(features, feature::kVersion1), !legacy);
  EXPECT_EQ(has_feature(features, net::kFeatureMrgRxbuf), c.mergeable);
  ASSERT_TRUE(has_feature(features, net::kFeatureCtrlVq));
  const unsigned header =
      legacy && !c.mergeable ? net::kLegacyHeaderSize : unsigned{net::kHeaderSize};
  EXPECT_EQ(rig.backend->header_size, header);

  // Device config through the transport's own window: the MAC and link up.
  auto config = rig.driver->read_device_config(net::config::kMac, 8);
  ASSERT_TRUE(config.has_value()) << config.error().message;
  EXPECT_TRUE(std::equal(kMac.begin(), kMac.end(), config->begin()));
  EXPECT_EQ(load_le<std::uint16_t>(std::span(*config).subspan(net::config::kStatus)),
            net::kStatusLinkUp);

  constexpr std::uint16_t kRx = 0, kTx = 1, kControl = 2;
  for (int round = 0; round < 3; ++round) {
    // Transmit: header and frame in separate descriptors (a legacy driver without
    // ANY_LAYOUT must do so, §5.1.6.6); the back end gets them as one message.
    const auto frame = ethernet_frame(200 + 100 * round, static_cast<std::uint8_t>(round));
    std::vector<std::uint8_t> out_header(header, 0);
    ChainBuilder tx(rig.driver->ram());
    tx.readable(out_header);
    tx.readable(frame);
    (void)rig.driver->submit(kTx, tx);
    std::optional<std::vector<std::uint8_t>> sent;
    ASSERT_TRUE(rig.run_until([&] { return (sent = rig.backend->sent(0)).has_value(); }))
        << "tx packets " << rig.device->stats().transmit.at(0).packets << " drops "
        << rig.device->stats().transmit.at(0).drops << " status " << int{rig.driver->status()};
    ASSERT_EQ(sent->size(), header + frame.size());
    EXPECT_TRUE(std::equal(frame.begin(), frame.end(), sent->begin() + header));
    ASSERT_TRUE(rig.run_until([&] { return rig.driver->pop_used(kTx).has_value(); }));

    // Receive: the tap side writes header + frame; it lands in one buffer, num_buffers
    // = 1 with MRG_RXBUF.
    ChainBuilder rx(rig.driver->ram());
    rx.writable(2048);
    (void)rig.driver->submit(kRx, rx);
    std::vector<std::uint8_t> incoming(header, 0);
    const auto reply = ethernet_frame(300 + round, static_cast<std::uint8_t>(0x40 + round));
    incoming.insert(incoming.end(), reply.begin(), reply.end());
    rig.backend->inject(0, incoming);
    std::optional<UsedBuffer> used;
    ASSERT_TRUE(rig.run_until([&] { return (used = rig.driver->pop_used(kRx)).has_value(); }));
    ASSERT_EQ(used->length, incoming.size());
    const auto written = rx.written_bytes();
    EXPECT_TRUE(std::equal(reply.begin(), reply.end(), written.begin() + header));
    if (c.mergeable) {
      EXPECT_EQ(load_le<std::uint16_t>(std::span(written).subspan(net::kNumBuffersOffset)), 1);
    }
    EXPECT_TRUE(rig.driver->take_queue_interrupt(kRx));
  }

  // Control queue: promiscuous on is acked OK, an unknown class ERR.
  for (const auto& [class_id, expected] : {std::pair{net::kClassRx, net::kControlOk},
                                           std::pair{std::uint8_t{0x7f}, net::kControlError}}) {
    ChainBuilder control(rig.driver->ram());
    const std::array<std::uint8_t, 2> command = {class_id, net::kRxPromisc};
    const std::array<std::uint8_t, 1> on = {1};
    control.readable(command);
    control.readable(on);
    control.writable(1);
    (void)rig.driver->submit(kControl, control);
    std::optional<UsedBuffer> used;
    ASSERT_TRUE(rig.run_until([&] { return (used = rig.driver->pop_used(kControl)).has_value(); }));
    EXPECT_EQ(used->length, 1u);
    EXPECT_EQ(control.written_bytes().at(0), expected) << int{class_id};
  }
  const devices::NetDeviceStats& stats = rig.device->stats();
  EXPECT_EQ(stats.transmit.at(0).packets, 3u);
  EXPECT_EQ(stats.receive.at(0).packets, 3u);
  EXPECT_EQ(stats.receive.at(0).drops + stats.transmit.at(0).drops, 0u);
  EXPECT_EQ(stats.control_commands, 2u);
  EXPECT_EQ(stats.control_errors, 1u);
  if (rig.admin_path != nullptr) {
    // What Linux's virtio-vfio-pci presents for net: a 32-byte I/O BAR0 (MAC and status).
    EXPECT_EQ(rig.bus_view->bar_info(0).size, 32u);
    // Every legacy register access went through the PF's admin queue: dozens of commands.
    EXPECT_GT(rig.admin_path->driver().commands_sent(), 20u);
    EXPECT_EQ(rig.admin_path->sriov_pf().member_count(), 1u);
  }
}

const NetCase kNetCases[] = {
    {"modern_split_msix", TransportKind::kModern, DriverPath::kModern, false, true, true},
    {"modern_packed_intx", TransportKind::kModern, DriverPath::kModern, true, false, true},
    {"transitional_modern", TransportKind::kTransitional, DriverPath::kModern, false, true, false},
    {"transitional_legacy_mrg", TransportKind::kTransitional, DriverPath::kLegacyIo, false, true,
     true},
    {"transitional_legacy_10_byte_header", TransportKind::kTransitional, DriverPath::kLegacyIo,
     false, false, false},
    {"legacy_only_10_byte_header", TransportKind::kLegacy, DriverPath::kLegacyIo, false, true,
     false},
    {"legacy_only_mrg_intx", TransportKind::kLegacy, DriverPath::kLegacyIo, false, false, true},
    {"mmr_modern_packed", TransportKind::kTransitionalMmr, DriverPath::kModern, true, true, true},
    {"mmr_legacy_window_10_byte_header", TransportKind::kTransitionalMmr, DriverPath::kLegacyMmr,
     false, true, false},
    {"mmr_legacy_window_mrg_intx", TransportKind::kTransitionalMmr, DriverPath::kLegacyMmr, false,
     false, true},
    {"legacy_over_mmr_10_byte_header", TransportKind::kTransitionalMmr, DriverPath::kLegacyIo,
     false, true, false, true},
    {"legacy_over_mmr_mrg_intx", TransportKind::kTransitionalMmr, DriverPath::kLegacyIo, false,
     false, true, true},
    {"legacy_over_admin_10_byte_header", TransportKind::kModern, DriverPath::kLegacyIo, false, true,
     false, false, true},
    {"legacy_over_admin_mrg_intx", TransportKind::kModern, DriverPath::kLegacyIo, false, false,
     true, false, true},
};

INSTANTIATE_TEST_SUITE_P(Transports, NetTransports, ::testing::ValuesIn(kNetCases),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

}  // namespace
}  // namespace vpci::virtio::testing
