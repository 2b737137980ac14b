// Shared fixtures of the virtio-pci tests: a guest with RAM, an rng or blk device behind
// a transport, and the request helpers the end-to-end tests run through the driver.
#pragma once

#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "devices/virtio_blk.h"
#include "devices/virtio_rng.h"
#include "tests/devices/blk_harness.h"
#include "tests/virtio_pci/pci_driver.h"
#include "virtio/pci/legacy_io_mapper.h"
#include "virtio/pci/virtio_pci_function.h"

namespace vpci::virtio::testing {

enum class DeviceType { kRng, kBlk };

inline std::unique_ptr<Device> make_device(DeviceType type, std::uint16_t queue_size = 64) {
  if (type == DeviceType::kRng) {
    devices::RngDeviceOptions options;
    options.queue_size = queue_size;
    return std::make_unique<devices::RngDevice>(options);
  }
  devices::BlockDeviceOptions options;
  options.queue_size = queue_size;
  options.serial = "vpci-transport";
  auto device = devices::BlockDevice::create(
      std::make_unique<devices::testing::MemoryBackend>(1 << 20), options);
  if (!device) {
    ADD_FAILURE() << device.error().message;
    return nullptr;
  }
  return std::move(*device);
}

struct Guest {
  std::shared_ptr<GuestMemory> memory = std::make_shared<GuestMemory>();
  FakeGuestRam ram{memory, 0x100000, 4 << 20};
};

// A device behind a transport, optionally wrapped in the legacy I/O -> MMR mapper (then
// `function` points into the mapper's underlying MMR function).
struct Rig {
  Guest guest;
  std::unique_ptr<pci::VirtioPciFunction> owned;
  std::unique_ptr<pci::LegacyIoMapper> mapper;
  pci::VirtioPciFunction* function = nullptr;
  vpci::pci::Function* bus_view = nullptr;  // what the driver talks to
  std::unique_ptr<VirtioPciDriver> driver;

  Rig(DeviceType type, pci::VirtioPciOptions options, bool with_mapper = false) {
    if (with_mapper) options.kind = pci::TransportKind::kTransitionalMmr;
    auto created =
        pci::VirtioPciFunction::create(make_device(type), guest.memory, std::move(options));
    if (!created) {
      ADD_FAILURE() << created.error().message;
      return;
    }
    owned = std::move(*created);
    function = owned.get();
    bus_view = function;
    if (with_mapper) {
      auto wrapped = pci::LegacyIoMapper::create(std::move(owned));
      if (!wrapped) {
        ADD_FAILURE() << wrapped.error().message;
        function = nullptr;
        return;
      }
      mapper = std::move(*wrapped);
      bus_view = mapper.get();
    }
    driver = std::make_unique<VirtioPciDriver>(*bus_view, guest.ram);
  }
};

// One rng request: a 64-byte writable buffer comes back used with a length in 1..64,
// announced by an interrupt.
inline void run_rng_request(VirtioPciDriver& driver) {
  ChainBuilder chain(driver.ram());
  chain.writable(64);
  const std::uint16_t id = driver.submit(0, chain);
  auto used = driver.pop_used(0);
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->id, id);
  EXPECT_GE(used->length, 1u);
  EXPECT_LE(used->length, 64u);
  EXPECT_TRUE(driver.take_queue_interrupt(0));
}

struct BlkReply {
  std::uint8_t status = 0xFF;
  std::vector<std::uint8_t> data;
};

// One virtio-blk request (virtio 1.3 §5.2.6): header, data, status byte.
inline BlkReply run_blk_request(VirtioPciDriver& driver, std::uint32_t type, std::uint64_t sector,
                                std::span<const std::uint8_t> out, std::uint32_t in_length) {
  FakeGuestRam& ram = driver.ram();
  devices::blk::RequestHeader header{type, 0, sector};
  ChainBuilder chain(ram);
  chain.readable(std::span(reinterpret_cast<const std::uint8_t*>(&header), sizeof(header)));
  if (!out.empty()) chain.readable(out);
  if (in_length) chain.writable(in_length);
  chain.writable(1);
  (void)driver.submit(0, chain);
  BlkReply reply;
  auto used = driver.pop_used(0);
  if (!used) {
    ADD_FAILURE() << "blk request not completed";
    return reply;
  }
  EXPECT_TRUE(driver.take_queue_interrupt(0));
  auto written = chain.written_bytes();
  if (written.empty()) return reply;
  reply.status = written.back();
  written.pop_back();
  reply.data = std::move(written);
  return reply;
}

// Write a pattern to sectors 3-4, read it back, and check GET_ID and the capacity in
// device config (1 MiB = 2048 sectors).
inline void run_blk_requests(VirtioPciDriver& driver) {
  std::vector<std::uint8_t> pattern(1024);
  for (std::size_t i = 0; i < pattern.size(); ++i)
    pattern[i] = static_cast<std::uint8_t>(i * 7 + 1);
  auto written = run_blk_request(driver, devices::blk::kTypeOut, 3, pattern, 0);
  EXPECT_EQ(written.status, devices::blk::kStatusOk);
  auto read = run_blk_request(driver, devices::blk::kTypeIn, 3, {}, 1024);
  EXPECT_EQ(read.status, devices::blk::kStatusOk);
  EXPECT_EQ(read.data, pattern);
  auto id = run_blk_request(driver, devices::blk::kTypeGetId, 0, {}, 20);
  EXPECT_EQ(id.status, devices::blk::kStatusOk);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(id.data.data()), 14), "vpci-transport");
  auto capacity = driver.read_device_config(devices::blk::config::kCapacity, 8);
  ASSERT_TRUE(capacity.has_value()) << capacity.error().message;
  std::uint64_t sectors = 0;
  for (int i = 7; i >= 0; --i) sectors = (sectors << 8) | (*capacity)[i];
  EXPECT_EQ(sectors, 2048u);
}

}  // namespace vpci::virtio::testing
