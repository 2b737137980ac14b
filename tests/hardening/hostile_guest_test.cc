// A hostile guest next to well-behaved ones (issue 10, SECURITY.md "Threat model"): one
// device in the process gets garbage written to every register offset at every width,
// rings that loop, overlap or point outside guest RAM, giant and nested indirect
// tables, avail indices that jump, resets in the middle of requests and queues enabled
// at impossible addresses — while, on another thread, the test driver keeps doing rng
// and blk I/O on other devices (other transports) and checks every byte.
//
// Asserted: the hostile device never crashes the process, each ring attack ends with
// DEVICE_NEEDS_RESET (or the request is served when it is merely odd, not invalid),
// the device recovers after a reset and serves correct requests again, and the good
// devices' I/O is complete and correct throughout.
//
// Devices are driven in-process through pci::Function, one thread per device group —
// the threading `vpci serve` uses (one server thread per device) — so TSan also checks
// that devices share no hidden state.
#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/virtio_pci/test_devices.h"

namespace vpci::virtio::testing {
namespace {

using pci::TransportKind;
namespace c = vpci::virtio::pci::common;

struct Target {
  const char* name;
  DeviceType device;
  TransportKind kind;
  bool mapper;
};

void PrintTo(const Target& t, std::ostream* os) {
  *os << t.name;
}

std::unique_ptr<Rig> make_rig(const Target& t) {
  pci::VirtioPciOptions options;
  options.kind = t.kind;
  auto rig = std::make_unique<Rig>(t.device, options, t.mapper);
  if (!rig->function) return nullptr;
  auto probe = rig->driver->probe();
  EXPECT_TRUE(probe.has_value()) << probe.error().message;
  return rig;
}

bool initialise(Rig& rig, DriverOptions options = {}) {
  auto init = rig.driver->initialise(options);
  EXPECT_TRUE(init.has_value()) << init.error().message;
  return init.has_value() && (rig.driver->status() & status::kDriverOk) != 0;
}

// One correct request on queue 0, checked; used after every attack to show recovery.
void expect_serves(Rig& rig, DeviceType device, std::uint64_t salt) {
  if (device == DeviceType::kRng) {
    run_rng_request(*rig.driver);
    return;
  }
  std::vector<std::uint8_t> pattern(512);
  for (std::size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<std::uint8_t>(i ^ salt);
  const std::uint64_t sector = 100 + salt % 64;
  EXPECT_EQ(run_blk_request(*rig.driver, devices::blk::kTypeOut, sector, pattern, 0).status,
            devices::blk::kStatusOk);
  auto read = run_blk_request(*rig.driver, devices::blk::kTypeIn, sector, {}, 512);
  EXPECT_EQ(read.status, devices::blk::kStatusOk);
  EXPECT_EQ(read.data, pattern);
}

// Reset through the modern interface and bring the device back up (a fresh allocator
// region keeps the fake RAM from running out over many attacks).
void recover(Rig& rig, DeviceType device, std::uint64_t salt) {
  ASSERT_TRUE(rig.driver->common_write(c::kDeviceStatus, 1, 0).has_value());
  ASSERT_EQ(rig.driver->status(), 0) << "reset did not complete";
  rig.guest.ram.reset_allocator();
  ASSERT_TRUE(initialise(rig));
  expect_serves(rig, device, salt);
}

// ---- the hostile workload ------------------------------------------------------------

// Writes pseudo-random values at every offset of every BAR and of config space, at
// widths 1, 2, 4 and 8 (and reads each back). Errors are the expected answer to most
// of these; the process must simply survive them. Returns the number of accesses.
std::size_t register_garbage(vpci::pci::Function& function, std::mt19937_64& random) {
  std::size_t accesses = 0;
  for (unsigned bar = 0; bar < vpci::pci::kBarCount; ++bar) {
    const auto info = function.bar_info(bar);
    if (info.kind == vpci::pci::BarKind::kAbsent) continue;
    const std::uint64_t limit = std::min<std::uint64_t>(info.size, 0x10000);
    for (unsigned width : {1u, 2u, 4u, 8u}) {
      for (std::uint64_t offset = 0; offset + width <= limit; ++offset) {
        std::array<std::uint8_t, 8> bytes{};
        const std::uint64_t value = random();
        std::memcpy(bytes.data(), &value, 8);
        (void)function.bar_write(bar, offset, std::span(bytes.data(), width));
        (void)function.bar_read(bar, offset, std::span(bytes.data(), width));
        accesses += 2;
      }
    }
  }
  for (unsigned width : {1u, 2u, 4u, 8u}) {
    for (std::uint32_t offset = 0; offset + width <= function.config_size(); ++offset) {
      std::array<std::uint8_t, 8> bytes{};
      const std::uint64_t value = random();
      std::memcpy(bytes.data(), &value, 8);
      (void)function.config_write(offset, std::span(bytes.data(), width));
      (void)function.config_read(offset, std::span(bytes.data(), width));
      accesses += 2;
    }
  }
  // Out of range, odd widths.
  std::array<std::uint8_t, 16> wide{};
  for (unsigned bar = 0; bar < 8; ++bar) {
    (void)function.bar_write(bar, ~std::uint64_t{0} - 1, std::span(wide.data(), 4));
    (void)function.bar_write(bar, 0, std::span(wide.data(), 16));
    (void)function.bar_read(bar, 0, std::span(wide.data(), 3));
  }
  (void)function.config_write(0xFFFFFFF0, std::span(wide.data(), 16));
  return accesses;
}

class HostileGuest : public ::testing::TestWithParam<Target> {
 protected:
  void SetUp() override {
    hostile_ = make_rig(GetParam());
    ASSERT_TRUE(hostile_);
    ASSERT_TRUE(initialise(*hostile_));
  }

  Rig& rig() { return *hostile_; }
  VirtioPciDriver& driver() { return *hostile_->driver; }
  SplitRing& ring() { return *driver().split_ring(0); }
  FakeGuestRam& ram() { return hostile_->guest.ram; }
  bool needs_reset() { return (driver().status() & status::kDeviceNeedsReset) != 0; }

  // Publishes `head` as the next available entry and rings the doorbell.
  void publish_and_kick(std::uint16_t head) {
    const std::uint16_t idx = ring().avail_idx();
    ring().set_avail_entry(static_cast<std::uint16_t>(idx % ring().size()), head);
    ring().set_avail_idx(static_cast<std::uint16_t>(idx + 1));
    (void)driver().notify(0);
  }

  // Every ring attack; after each the device must need a reset (these chains are all
  // invalid per virtio 1.3 §2.7.5) and must then recover.
  void ring_attacks(std::uint64_t& salt) {
    const DeviceType device = GetParam().device;
    // Re-allocated before each attack: recover() re-places the rings from the start of RAM.
    GuestAddress buffer = 0;
    struct Attack {
      const char* name;
      std::function<void()> run;
    };
    const std::uint16_t size = ring().size();
    const std::vector<Attack> attacks = {
        {"chain loops onto itself",
         [&] {
           ring().write_desc(0, {buffer, 64, desc_flags::kWrite | desc_flags::kNext, 0});
           publish_and_kick(0);
         }},
        {"two descriptors loop",
         [&] {
           ring().write_desc(0, {buffer, 64, desc_flags::kWrite | desc_flags::kNext, 1});
           ring().write_desc(1, {buffer + 64, 64, desc_flags::kWrite | desc_flags::kNext, 0});
           publish_and_kick(0);
         }},
        {"next beyond the table",
         [&] {
           ring().write_desc(0, {buffer, 64, desc_flags::kWrite | desc_flags::kNext,
                                 static_cast<std::uint16_t>(size + 5)});
           publish_and_kick(0);
         }},
        {"head beyond the table", [&] { publish_and_kick(static_cast<std::uint16_t>(size * 3)); }},
        {"buffer outside guest RAM",
         [&] {
           ring().write_desc(0, {0xFFFFFFFFFFFFF000ull, 0x2000, desc_flags::kWrite, 0});
           publish_and_kick(0);
         }},
        {"buffer straddles the end of RAM",
         [&] {
           ring().write_desc(0, {ram().base() + ram().size() - 8, 64, desc_flags::kWrite, 0});
           publish_and_kick(0);
         }},
        {"giant indirect table",
         [&] {
           ring().write_desc(0, {buffer, 0xFFFFFFF0u, desc_flags::kIndirect, 0});
           publish_and_kick(0);
         }},
        {"indirect table of 1 MiB (more entries than the queue)",
         [&] {
           ring().write_desc(0, {ram().base(), 1u << 20, desc_flags::kIndirect, 0});
           publish_and_kick(0);
         }},
        {"indirect table that loops",
         [&] {
           for (std::uint16_t i = 0; i < 4; ++i) {
             ram().put(buffer + 16ull * i,
                       SplitDescriptor{buffer + 1024, 16, desc_flags::kWrite | desc_flags::kNext,
                                       static_cast<std::uint16_t>((i + 1) % 4)});
           }
           ring().write_desc(0, {buffer, 64, desc_flags::kIndirect, 0});
           publish_and_kick(0);
         }},
        {"nested indirect",
         [&] {
           ram().put(buffer, SplitDescriptor{buffer + 512, 64, desc_flags::kIndirect, 0});
           ring().write_desc(0, {buffer, 16, desc_flags::kIndirect, 0});
           publish_and_kick(0);
         }},
        {"indirect with NEXT",
         [&] {
           ram().put(buffer, SplitDescriptor{buffer + 512, 64, desc_flags::kWrite, 0});
           ring().write_desc(0, {buffer, 16, desc_flags::kIndirect | desc_flags::kNext, 1});
           ring().write_desc(1, {buffer + 1024, 64, desc_flags::kWrite, 0});
           publish_and_kick(0);
         }},
        {"avail idx jumps past the ring",
         [&] {
           ring().write_desc(0, {buffer, 64, desc_flags::kWrite, 0});
           ring().set_avail_idx(static_cast<std::uint16_t>(ring().avail_idx() + size + 1000));
           (void)driver().notify(0);
         }},
        {"chain longer than the queue through indirect + direct mix",
         [&] {
           // Every descriptor of the table chained: size + 1 buffers can't be a chain.
           for (std::uint16_t i = 0; i < size; ++i) {
             ring().write_desc(i, {buffer, 1, desc_flags::kWrite | desc_flags::kNext,
                                   static_cast<std::uint16_t>((i + 1) % size)});
           }
           publish_and_kick(0);
         }},
    };
    for (const Attack& attack : attacks) {
      SCOPED_TRACE(attack.name);
      buffer = ram().alloc(4096);
      attack.run();
      EXPECT_TRUE(needs_reset()) << "status " << int{driver().status()};
      recover(rig(), device, ++salt);
    }

    // Odd but valid: a device-writable buffer overlapping the rings themselves and
    // another chain's buffer. The device serves it (the guest only hurts itself) or
    // refuses it; either way it must recover.
    {
      SCOPED_TRACE("buffers overlap the rings");
      const QueueLayout layout = ring().layout();
      ring().write_desc(0, {layout.device, 64, desc_flags::kWrite, 0});
      ring().write_desc(1, {layout.device + 8, 64, desc_flags::kWrite, 0});
      publish_and_kick(0);
      publish_and_kick(1);
      recover(rig(), device, ++salt);
    }

    // Reset in the middle of a request: published, then reset, then the doorbell.
    {
      SCOPED_TRACE("reset mid-request");
      ChainBuilder chain(ram());
      chain.writable(64);
      const std::uint16_t used_before = ring().used_idx();
      (void)driver().submit(0, chain, /*kick=*/false);
      ASSERT_TRUE(driver().common_write(c::kDeviceStatus, 1, 0).has_value());
      (void)driver().notify(0);
      EXPECT_EQ(driver().status(), 0);
      EXPECT_EQ(ring().used_idx(), used_before);  // nothing was processed after the reset
      recover(rig(), device, ++salt);
    }
  }

  // Queue enable with addresses a ring can't have: must not enable (or must need a
  // reset), never crash.
  void bad_queue_enables(std::uint64_t& salt) {
    const DeviceType device = GetParam().device;
    const std::array<std::array<std::uint64_t, 3>, 5> layouts = {{
        {0xFFFFFFFFFFFFFFF0ull, ram().base() + 0x1000, ram().base() + 0x2000},    // wraps
        {ram().base() + 1, ram().base() + 0x1000, ram().base() + 0x2000},         // unaligned desc
        {ram().base(), ram().base() + 0x1001, ram().base() + 0x2002},             // unaligned rings
        {0x10, 0x20, 0x40},                                                       // unmapped
        {ram().base() + ram().size() - 16, ram().base(), ram().base() + 0x2000},  // runs off RAM
    }};
    for (const auto& layout : layouts) {
      SCOPED_TRACE(::testing::Message() << "desc " << std::hex << layout[0]);
      ASSERT_TRUE(driver().common_write(c::kDeviceStatus, 1, 0).has_value());
      (void)driver().common_write(c::kDeviceStatus, 1, status::kAcknowledge | status::kDriver);
      (void)driver().common_write(c::kDriverFeatureSelect, 4, 1);
      (void)driver().common_write(c::kDriverFeature, 4, 1);
      (void)driver().common_write(c::kDeviceStatus, 1,
                                  status::kAcknowledge | status::kDriver | status::kFeaturesOk);
      (void)driver().common_write(c::kQueueSelect, 2, 0);
      (void)driver().common_write(c::kQueueDesc, 8, layout[0]);
      (void)driver().common_write(c::kQueueDriver, 8, layout[1]);
      (void)driver().common_write(c::kQueueDevice, 8, layout[2]);
      (void)driver().common_write(c::kQueueEnable, 2, 1);
      (void)driver().common_write(
          c::kDeviceStatus, 1,
          status::kAcknowledge | status::kDriver | status::kFeaturesOk | status::kDriverOk);
      (void)driver().notify(0);
      const auto enabled = driver().common_read(c::kQueueEnable, 2);
      EXPECT_TRUE(needs_reset() || (enabled && *enabled == 0))
          << "status " << int{driver().status()};
      recover(rig(), device, ++salt);
    }
  }

  std::unique_ptr<Rig> hostile_;
};

// The good devices: other transports and driver paths than most hostile targets, each
// checked request by request.
struct GoodWorkload {
  std::unique_ptr<Rig> rng_modern;
  std::unique_ptr<Rig> blk_legacy;
  std::unique_ptr<Rig> blk_packed;
  std::unique_ptr<Rig> rng_mapper;
  int rounds_done = 0;

  bool set_up() {
    rng_modern = make_rig({"rng modern", DeviceType::kRng, TransportKind::kModern, false});
    blk_legacy =
        make_rig({"blk transitional", DeviceType::kBlk, TransportKind::kTransitional, false});
    blk_packed = make_rig({"blk modern", DeviceType::kBlk, TransportKind::kModern, false});
    rng_mapper = make_rig({"rng mapper", DeviceType::kRng, TransportKind::kTransitionalMmr, true});
    if (!rng_modern || !blk_legacy || !blk_packed || !rng_mapper) return false;
    DriverOptions legacy;
    legacy.path = DriverPath::kLegacyIo;
    legacy.use_msix = false;
    DriverOptions packed;
    packed.packed = true;
    return initialise(*rng_modern) && initialise(*blk_legacy, legacy) &&
           initialise(*blk_packed, packed) && initialise(*rng_mapper, legacy);
  }

  void run(int rounds) {
    for (int round = 0; round < rounds; ++round) {
      // Fresh buffers each round; the rings sit below the kept bytes.
      run_rng_request(*rng_modern->driver);
      run_rng_request(*rng_mapper->driver);
      for (Rig* rig : {blk_legacy.get(), blk_packed.get()}) {
        std::vector<std::uint8_t> pattern(1024);
        for (std::size_t i = 0; i < pattern.size(); ++i) {
          pattern[i] = static_cast<std::uint8_t>(i * 31 + round * 7 + (rig == blk_packed.get()));
        }
        const std::uint64_t sector = 2 * static_cast<std::uint64_t>(round % 500);
        auto written = run_blk_request(*rig->driver, devices::blk::kTypeOut, sector, pattern, 0);
        EXPECT_EQ(written.status, devices::blk::kStatusOk);
        auto read = run_blk_request(*rig->driver, devices::blk::kTypeIn, sector, {}, 1024);
        EXPECT_EQ(read.status, devices::blk::kStatusOk);
        EXPECT_EQ(read.data, pattern) << "round " << round;
      }
      for (Rig* rig : {rng_modern.get(), blk_legacy.get(), blk_packed.get(), rng_mapper.get()}) {
        EXPECT_EQ(rig->driver->status() & status::kDeviceNeedsReset, 0);
      }
      if (::testing::Test::HasFailure()) return;
      ++rounds_done;
    }
  }
};

TEST_P(HostileGuest, OtherDevicesAreUnaffectedAndTheHostileOneRecovers) {
  GoodWorkload good;
  ASSERT_TRUE(good.set_up());
  constexpr int kGoodRounds = 150;

  std::size_t garbage_accesses = 0;
  std::thread hostile_thread([&] {
    std::mt19937_64 random(0x5EC0'0010);
    std::uint64_t salt = 0;
    // Rings first (the device is up), then garbage everywhere, then rings again on a
    // device that has survived the garbage.
    ring_attacks(salt);
    bad_queue_enables(salt);
    garbage_accesses = register_garbage(*rig().bus_view, random);
    // Garbage may have disabled bus mastering, moved BARs or left MSI-X half set up;
    // a function-level reset (what the vfio-user DEVICE_RESET does) must bring it back.
    rig().bus_view->reset();
    ASSERT_TRUE(driver().probe().has_value());
    recover(rig(), GetParam().device, ++salt);
    ring_attacks(salt);
  });
  good.run(kGoodRounds);
  hostile_thread.join();

  EXPECT_EQ(good.rounds_done, kGoodRounds);
  EXPECT_GT(garbage_accesses, 100000u);
}

const Target kTargets[] = {
    {"blk_modern", DeviceType::kBlk, TransportKind::kModern, false},
    {"rng_transitional", DeviceType::kRng, TransportKind::kTransitional, false},
    {"blk_mmr", DeviceType::kBlk, TransportKind::kTransitionalMmr, false},
    {"rng_legacy_over_mmr", DeviceType::kRng, TransportKind::kTransitionalMmr, true},
};

INSTANTIATE_TEST_SUITE_P(Transports, HostileGuest, ::testing::ValuesIn(kTargets),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

}  // namespace
}  // namespace vpci::virtio::testing
