// virtio-net device (devices/virtio_net.h) over a socket-pair back end: features and
// config, transmit, receive with and without mergeable buffers, no-room back-pressure,
// the control queue, and the hostile-driver rules of reference virtio-net.md §8.
#include <cstring>

#include <gtest/gtest.h>

#include "base/little_endian.h"
#include "tests/devices/net_harness.h"
#include "virtio/spec.h"

namespace vpci::devices {
namespace {

using testing::NetHarness;
using virtio::feature_bit;

constexpr std::array<std::uint8_t, 6> kMac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

NetDeviceOptions options(std::uint16_t pairs = 1) {
  NetDeviceOptions o;
  o.mac = kMac;
  o.queue_pairs = pairs;
  return o;
}

// Everything the device offers, as a modern Linux driver would take it.
std::uint64_t all_features(bool mergeable = true) {
  std::uint64_t f = ~std::uint64_t{0} & ((std::uint64_t{1} << 24) - 1);
  if (!mergeable) f &= ~feature_bit(net::kFeatureMrgRxbuf);
  return f | feature_bit(virtio::feature::kEventIdx);
}

// A 12-byte header (num_buffers 0) and an Ethernet frame to `destination` of `size`.
std::vector<std::uint8_t> frame_with_header(std::size_t size,
                                            std::array<std::uint8_t, 6> destination = kMac,
                                            std::uint8_t salt = 1) {
  std::vector<std::uint8_t> bytes(net::kHeaderSize + size);
  for (std::size_t i = 0; i < size; ++i)
    bytes[net::kHeaderSize + i] = static_cast<std::uint8_t>(i * 7 + salt);
  std::copy(destination.begin(), destination.end(), bytes.begin() + net::kHeaderSize);
  return bytes;
}

TEST(NetDevice, OffersADependencyConsistentFeatureSetAndItsConfig) {
  NetHarness net(options(), all_features());
  const std::uint64_t offered = net.device().device_features();
  for (unsigned bit :
       {net::kFeatureMac, net::kFeatureStatus, net::kFeatureCsum, net::kFeatureGuestCsum,
        net::kFeatureHostTso4, net::kFeatureGuestTso6, net::kFeatureMrgRxbuf, net::kFeatureCtrlVq,
        net::kFeatureCtrlRx, net::kFeatureCtrlMacAddr, net::kFeatureCtrlGuestOffloads}) {
    EXPECT_TRUE(virtio::has_feature(offered, bit)) << bit;
  }
  EXPECT_FALSE(virtio::has_feature(offered, net::kFeatureMq));   // one pair
  EXPECT_FALSE(virtio::has_feature(offered, net::kFeatureMtu));  // none configured
  std::array<std::uint8_t, net::config::kSize> config{};
  net.device().read_config(0, config);
  EXPECT_TRUE(std::equal(kMac.begin(), kMac.end(), config.begin()));
  EXPECT_EQ(load_le<std::uint16_t>(std::span(config).subspan(net::config::kStatus)),
            net::kStatusLinkUp);
  EXPECT_EQ(load_le<std::uint16_t>(std::span(config).subspan(net::config::kMaxVirtqueuePairs)), 1);
  // The header size and offloads went to the back end at FEATURES_OK.
  EXPECT_EQ(net.backend().header_size, 12u);
  EXPECT_EQ(net.backend().offloads,
            net::kTunOffloadCsum | net::kTunOffloadTso4 | net::kTunOffloadTso6);
  EXPECT_EQ(net.device().num_queues(), 3);
}

TEST(NetDevice, MergeableBuffersCanBeLeftUnoffered) {
  NetDeviceOptions o = options();
  o.mergeable_rx_buffers = false;
  NetHarness net(o, all_features());
  EXPECT_FALSE(virtio::has_feature(net.device().device_features(), net::kFeatureMrgRxbuf));
}

TEST(NetDevice, HeaderIsTenBytesOnlyForALegacyDriverWithoutMergeableBuffers) {
  NetHarness net(options(), all_features());
  ASSERT_TRUE(net.device().accept_features(0));  // legacy, nothing negotiated
  EXPECT_EQ(net.device().header_size(), 10u);
  EXPECT_EQ(net.backend().header_size, 10u);
  ASSERT_TRUE(net.device().accept_features(feature_bit(net::kFeatureMrgRxbuf)));
  EXPECT_EQ(net.device().header_size(), 12u);
  EXPECT_EQ(net.backend().offloads, 0u);  // no GUEST_CSUM: no receive offloads
}

TEST(NetDevice, TransmitWritesOneFrameWhateverTheDescriptorLayout) {
  NetHarness net(options(), all_features());
  const auto frame = frame_with_header(200);
  net.transmit(frame, /*pieces=*/5);  // header split across descriptors
  auto sent = net.backend().sent(0);
  ASSERT_TRUE(sent.has_value());
  EXPECT_EQ(*sent, frame);
  auto used = net.driver(1).pop_used();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->length, 0u);
  EXPECT_EQ(net.device().stats().transmit[0].packets, 1u);
  EXPECT_EQ(net.device().stats().transmit[0].bytes, 200u);
}

TEST(NetDevice, TransmitDropsOversizedShortAndRefusedFramesOnly) {
  NetHarness net(options(), all_features());
  net.transmit(frame_with_header(1500 + 14 + 4 + 1));  // beyond MTU without GSO
  std::vector<std::uint8_t> short_header(8, 0);
  net.transmit(short_header);
  net.backend().reject_frames = true;  // the kernel refuses this header (EINVAL)
  net.transmit(frame_with_header(100));
  net.backend().reject_frames = false;
  net.transmit(frame_with_header(100, kMac, 9));
  EXPECT_EQ(net.device().stats().transmit[0].drops, 3u);
  EXPECT_EQ(net.device().stats().transmit[0].packets, 1u);
  // Every chain came back, with used length 0, and the queue still runs.
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(net.driver(1).pop_used().has_value()) << i;
  EXPECT_FALSE(net.core().queue(1)->failed());
  EXPECT_EQ(*net.backend().sent(0), frame_with_header(100, kMac, 9));
}

TEST(NetDevice, AFullBackEndParksTheFrameUntilItIsWritable) {
  NetHarness net(options(), all_features());
  net.backend().refuse_sends = 1;
  net.transmit(frame_with_header(64));
  EXPECT_FALSE(net.backend().sent(0).has_value());
  EXPECT_FALSE(net.driver(1).pop_used().has_value());  // still the device's
  net.run_loop();                                      // EPOLLOUT: sent now
  EXPECT_EQ(*net.backend().sent(0), frame_with_header(64));
  EXPECT_TRUE(net.driver(1).pop_used().has_value());
}

TEST(NetDevice, MergeableReceiveSpreadsAFrameAndPublishesItWhole) {
  NetHarness net(options(), all_features());
  auto buffers = net.post_receive_buffers(4, 600);
  auto frame = frame_with_header(1400);  // 1412 bytes with the header: 600 + 600 + 212
  net.backend().inject(0, frame);
  net.run_loop();
  auto first = net.driver(0).pop_used();
  auto second = net.driver(0).pop_used();
  auto third = net.driver(0).pop_used();
  ASSERT_TRUE(first && second && third);
  EXPECT_FALSE(net.driver(0).pop_used().has_value());
  EXPECT_EQ(first->length, 600u);
  EXPECT_EQ(second->length, 600u);
  EXPECT_EQ(third->length, 212u);
  // num_buffers is the device's to write (§5.1.6.4).
  store_le<std::uint16_t>(std::span(frame).subspan(net::kNumBuffersOffset), 3);
  std::vector<std::uint8_t> joined;
  for (int i = 0; i < 3; ++i) {
    auto bytes = buffers[static_cast<std::size_t>(i)].written_bytes();
    const std::uint32_t used = i == 2 ? 212u : 600u;
    joined.insert(joined.end(), bytes.begin(), bytes.begin() + used);
  }
  EXPECT_EQ(joined, frame);
  EXPECT_EQ(net.device().stats().receive[0].packets, 1u);
  EXPECT_EQ(net.device().stats().receive[0].bytes, 1400u);
}

TEST(NetDevice, ReceiveDropsFramesBeyondTheMtuWithoutGso) {
  NetHarness net(options(), all_features());
  net.post_receive_buffers(8, 1024);
  net.backend().inject(0, frame_with_header(1500 + 14 + 4 + 1));
  auto gso = frame_with_header(4000);
  gso[1] = 1;  // VIRTIO_NET_HDR_GSO_TCPV4: up to 64 KiB
  net.backend().inject(0, gso);
  net.run_loop();
  EXPECT_EQ(net.device().stats().receive[0].drops, 1u);
  EXPECT_EQ(net.device().stats().receive[0].packets, 1u);
}

TEST(NetDevice, WithoutRoomTheFrameWaitsForTheNextReceiveKick) {
  NetHarness net(options(), all_features());
  net.backend().inject(0, frame_with_header(1000));
  net.run_loop();
  EXPECT_FALSE(net.driver(0).pop_used().has_value());
  EXPECT_EQ(net.device().stats().receive[0].drops, 0u);
  // A buffer too small for the whole frame is held, not used: never a partial packet.
  net.post_receive_buffers(1, 512);
  net.run_loop();
  EXPECT_FALSE(net.driver(0).pop_used().has_value());
  net.post_receive_buffers(1, 1024);
  net.run_loop();
  EXPECT_TRUE(net.driver(0).pop_used().has_value());
  EXPECT_TRUE(net.driver(0).pop_used().has_value());
  EXPECT_EQ(net.device().stats().receive[0].packets, 1u);
}

// A guest that never gives receive room while the tap is flooded: the device holds one
// frame, stops polling the tap (the rest wait in the back end, bounded by its queue),
// and transmit and control keep working on the same loop. When room comes every waiting
// frame is delivered, in order, none dropped.
TEST(NetDevice, ATapFloodWithNoReceiveRoomStallsNothingElse) {
  NetHarness net(options(), all_features());
  std::size_t waiting = 0;
  while (waiting < 1000 &&
         net.backend().try_inject(
             0, frame_with_header(1000, kMac, static_cast<std::uint8_t>(waiting)))) {
    ++waiting;
  }
  ASSERT_GT(waiting, 2u);
  net.run_loop();
  EXPECT_EQ(net.device().stats().receive[0].packets, 0u);
  EXPECT_EQ(net.device().stats().receive[0].drops, 0u);

  for (std::uint8_t i = 0; i < 5; ++i) {
    const auto out = frame_with_header(300, kMac, i);
    net.transmit(out);
    net.run_loop();
    EXPECT_EQ(net.backend().sent(0), out);
  }
  const std::array<std::uint8_t, 1> on = {1};
  EXPECT_EQ(net.control(net::kClassRx, net::kRxPromisc, on), net::kControlOk);

  std::size_t delivered = 0;
  for (int round = 0; round < 200 && delivered < waiting; ++round) {
    auto buffers = net.post_receive_buffers(16, 2048);
    net.run_loop();
    for (auto& buffer : buffers) {
      auto used = net.driver(0).pop_used();
      if (!used) break;
      const auto bytes = buffer.written_bytes();
      // Frames arrive in the order the tap queued them (the salt is the frame's index).
      EXPECT_EQ(bytes.at(net::kHeaderSize + 6),
                static_cast<std::uint8_t>(6 * 7 + static_cast<std::uint8_t>(delivered)));
      ++delivered;
    }
  }
  EXPECT_EQ(delivered, waiting);
  EXPECT_EQ(net.device().stats().receive[0].packets, waiting);
  EXPECT_EQ(net.device().stats().receive[0].drops, 0u);
}

// Linux sends one control command at a time, but a hostile driver can fill the ring:
// every command is answered, in order, inside the kick, and nothing else is held up.
TEST(NetDevice, AControlQueueFloodIsAnsweredInOrder) {
  NetHarness net(options(), all_features());
  constexpr std::uint16_t kControl = 2;
  std::size_t answered = 0, refused = 0;
  for (int round = 0; round < 50; ++round) {
    std::vector<virtio::testing::ChainBuilder> commands;
    for (int i = 0; i < 21; ++i) {  // 3 descriptors each: a full 64-entry ring
      // Even commands are valid (promiscuous on), odd ones name an unknown class.
      const std::array<std::uint8_t, 2> header = {
          static_cast<std::uint8_t>(i % 2 == 0 ? net::kClassRx : 0x7f), net::kRxPromisc};
      const std::array<std::uint8_t, 1> on = {1};
      commands.emplace_back(net.ram());
      commands.back().readable(header).readable(on).writable(1);
      net.driver(kControl).add(commands.back(), /*publish=*/false);
    }
    net.driver(kControl).publish();
    ASSERT_TRUE(net.core().notify(kControl));
    for (std::size_t i = 0; i < commands.size(); ++i) {
      auto used = net.driver(kControl).pop_used();
      ASSERT_TRUE(used.has_value()) << "round " << round << " command " << i;
      EXPECT_EQ(used->length, 1u);
      EXPECT_EQ(commands[i].written_bytes().at(0),
                i % 2 == 0 ? net::kControlOk : net::kControlError);
      ++answered;
      refused += i % 2;
    }
  }
  EXPECT_EQ(net.device().stats().control_commands, answered);
  EXPECT_EQ(net.device().stats().control_errors, refused);
  const auto out = frame_with_header(100);
  net.transmit(out);
  EXPECT_EQ(net.backend().sent(0), out);
}

TEST(NetDevice, WithoutMergeableBuffersAFrameTooBigForItsBufferIsDropped) {
  NetHarness net(options(), all_features(/*mergeable=*/false));
  auto buffers = net.post_receive_buffers(2, 600);
  net.backend().inject(0, frame_with_header(1000));  // does not fit one buffer
  net.backend().inject(0, frame_with_header(500));
  net.run_loop();
  auto used = net.driver(0).pop_used();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->length, 512u);
  EXPECT_FALSE(net.driver(0).pop_used().has_value());
  EXPECT_EQ(net.device().stats().receive[0].drops, 1u);
  // num_buffers is 1 without MRG_RXBUF (§5.1.6.4).
  const auto bytes = buffers[0].written_bytes();
  EXPECT_EQ(load_le<std::uint16_t>(std::span(bytes).subspan(net::kNumBuffersOffset)), 1);
}

TEST(NetDevice, ControlQueueAnswersAndFilters) {
  NetHarness net(options(), all_features());
  const std::array<std::uint8_t, 1> off = {0};
  EXPECT_EQ(net.control(net::kClassRx, net::kRxPromisc, off), net::kControlOk);
  const std::array<std::uint8_t, 6> other = {0x52, 0x54, 0, 0, 0, 9};
  EXPECT_EQ(net.control(net::kClassMac, net::kMacAddrSet, other), net::kControlOk);
  std::array<std::uint8_t, net::config::kSize> config{};
  net.device().read_config(0, config);
  EXPECT_TRUE(std::equal(other.begin(), other.end(), config.begin()));
  // Not promiscuous: frames for the old MAC are filtered, the new one's and broadcast pass.
  net.post_receive_buffers(4, 2048);
  net.backend().inject(0, frame_with_header(100, kMac));
  net.backend().inject(0, frame_with_header(100, other));
  net.backend().inject(0, frame_with_header(100, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}));
  net.run_loop();
  EXPECT_EQ(net.device().stats().receive[0].packets, 2u);
  EXPECT_EQ(net.device().stats().receive[0].filtered, 1u);
  // MQ is not negotiated with one pair; unknown classes and bad lengths get ERR.
  const std::array<std::uint8_t, 2> pairs = {1, 0};
  EXPECT_EQ(net.control(net::kClassMq, net::kMqVqPairsSet, pairs), net::kControlError);
  EXPECT_EQ(net.control(42, 0, {}), net::kControlError);
  EXPECT_EQ(net.control(net::kClassRx, net::kRxPromisc, {}), net::kControlError);
  // A MAC table whose count lies about the bytes that follow.
  const std::array<std::uint8_t, 8> lying = {200, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(net.control(net::kClassMac, net::kMacTableSet, lying), net::kControlError);
  EXPECT_EQ(net.device().stats().control_errors, 4u);
}

TEST(NetDevice, QueuePairsFollowVqPairsSetWithinTheMaximum) {
  NetHarness net(options(2), all_features() | feature_bit(net::kFeatureMq));
  EXPECT_EQ(net.device().num_queues(), 5);
  EXPECT_EQ(net.backend().active_pairs, 1u);
  const std::array<std::uint8_t, 2> two = {2, 0};
  const std::array<std::uint8_t, 2> three = {3, 0};
  const std::array<std::uint8_t, 2> zero = {0, 0};
  EXPECT_EQ(net.control(net::kClassMq, net::kMqVqPairsSet, two), net::kControlOk);
  EXPECT_EQ(net.backend().active_pairs, 2u);
  EXPECT_EQ(net.control(net::kClassMq, net::kMqVqPairsSet, three), net::kControlError);
  EXPECT_EQ(net.control(net::kClassMq, net::kMqVqPairsSet, zero), net::kControlError);
  EXPECT_EQ(net.device().active_pairs(), 2u);
}

TEST(NetDevice, DrainGivesHeldBuffersBackAndResetRestoresDefaults) {
  NetHarness net(options(), all_features());
  net.post_receive_buffers(1, 512);
  net.backend().inject(0, frame_with_header(1000));  // needs two buffers: one is held
  net.run_loop();
  EXPECT_EQ(net.core().queue(0)->stats().popped, 1u);
  // A buffer the driver makes available without a kick (EVENT_IDX said none was needed).
  virtio::testing::ChainBuilder more(net.ram());
  more.writable(1024);
  net.driver(0).add(more);
  net.core().drain();
  EXPECT_EQ(net.core().queue(0)->stats().popped, 0u);
  // The waiting frame is retried once the drain's caller is done: both buffers are
  // popped (the returned one again) and the frame delivered with no kick at all.
  net.run_loop();
  EXPECT_EQ(net.device().stats().receive[0].packets, 1u);

  const std::array<std::uint8_t, 1> off = {0};
  EXPECT_EQ(net.control(net::kClassRx, net::kRxPromisc, off), net::kControlOk);
  ASSERT_TRUE(net.core().write_status(0));
  EXPECT_EQ(net.backend().offloads, 0u);
  EXPECT_EQ(net.device().active_pairs(), 1u);
}

}  // namespace
}  // namespace vpci::devices
