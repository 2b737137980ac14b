// The register path, in process: ns per 1-, 2- and 4-byte config-space and BAR access on
// a modern virtio-pci device (virtio 1.3 §4.1.4), against a plain memory load or store
// of the same width as the floor, both measured in the same iteration.
//
// The device is a virtio-blk (MemoryBackend, 1 MiB) behind VirtioPciFunction, brought
// to DRIVER_OK by the test-side PCI driver (tests/virtio_pci/pci_driver.h) with one
// enabled split queue (EVENT_IDX negotiated) and MSI-X. Two views of the same device:
//   * direct:  pci::Function::config_read/write, bar_read/write (what an in-process bus
//              or the MMR mapper calls);
//   * server:  pci::Function::config_read/write and server::bar_read/bar_write (the
//              access splitting the vfio-user session applies to REGION_READ/WRITE).
//
// Accesses: config space (vendor/device ID, Command, cache line size), common config
// (device_feature_select, queue_select, queue_size, num_queues, device_status), the
// notify doorbell of queue 0 with an empty ring (so each kick does the real work: take
// a guest-memory snapshot, read avail idx, publish avail_event, re-read, check whether
// to notify), and device config (capacity, blk_size, a byte of the topology). Every
// access's Status is checked; a refused access stops the benchmark.
//
// Each iteration is a batch of kBatch floor accesses and then kBatch device accesses,
// each batch timed; counters (for bench/run-all.sh): `ns` (device, per access),
// `floor_ns` (per access) and `ratio` = ns / floor_ns.
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>

#include <benchmark/benchmark.h>

#include "devices/virtio_blk.h"
#include "server/vfio_regions.h"
#include "tests/devices/blk_harness.h"
#include "tests/virtio_pci/pci_driver.h"
#include "virtio/pci/registers.h"
#include "virtio/pci/virtio_pci_function.h"

namespace {

namespace vp = vpci::virtio::pci;
using vpci::virtio::GuestMemory;
using vpci::virtio::testing::DriverOptions;
using vpci::virtio::testing::FakeGuestRam;
using vpci::virtio::testing::VirtioPciDriver;
using Clock = std::chrono::steady_clock;

constexpr int kBatch = 256;
// The floor's batch is longer, so its few microseconds are well above the clock's
// resolution and the cost of reading it.
constexpr int kFloorBatch = 16 * kBatch;
constexpr unsigned kMemoryBar = vp::VirtioPciLayout::kMemoryBar;

// One initialised device, shared by every benchmark (built on first use).
struct Rig {
  std::shared_ptr<GuestMemory> memory = std::make_shared<GuestMemory>();
  FakeGuestRam ram{memory, 0x100000, 1 << 20};
  vp::VirtioPciFunction* function = nullptr;
  std::unique_ptr<vp::VirtioPciFunction> owned;
  std::unique_ptr<VirtioPciDriver> driver;
  std::uint64_t notify_offset = 0;  // BAR offset of queue 0's doorbell
  std::string error;

  Rig() {
    vpci::devices::BlockDeviceOptions blk;
    blk.queue_size = 256;
    auto device = vpci::devices::BlockDevice::create(
        std::make_unique<vpci::devices::testing::MemoryBackend>(1 << 20), blk);
    if (!device) {
      error = device.error().message;
      return;
    }
    auto created = vp::VirtioPciFunction::create(std::move(*device), memory);
    if (!created) {
      error = created.error().message;
      return;
    }
    function = created->get();
    owned = std::move(*created);
    driver = std::make_unique<VirtioPciDriver>(*function, ram);
    if (auto probed = driver->probe(); !probed) {
      error = probed.error().message;
      return;
    }
    if (auto status = driver->initialise(DriverOptions{}); !status) {
      error = status.error().message;
      return;
    }
    const auto notify = driver->probed().notify;
    notify_offset = notify->offset;  // queue 0: queue_notify_off 0
  }
};

Rig& rig() {
  static Rig instance;
  return instance;
}

enum class Path { kDirect, kServer };
enum class Space { kConfig, kBar };
enum class Op { kRead, kWrite };

struct Access {
  Space space;
  Op op;
  std::uint64_t offset;
  unsigned width;
  std::uint32_t value = 0;  // for writes
};

// The floor: a plain load or store of `width` bytes. The buffer's address escapes
// (DoNotOptimize) and every loaded value is consumed, every store followed by a
// compiler barrier (ClobberMemory), so each access is really performed.
template <unsigned Width>
double floor_batch(Op op, std::uint8_t* buffer) {
  using Word = std::conditional_t<Width == 1, std::uint8_t,
                                  std::conditional_t<Width == 2, std::uint16_t, std::uint32_t>>;
  benchmark::DoNotOptimize(buffer);
  const auto start = Clock::now();
  if (op == Op::kRead) {
    for (int i = 0; i < kFloorBatch; ++i) {
      Word value;
      std::memcpy(&value, buffer + 8 * (i & 7), Width);
      benchmark::DoNotOptimize(value);
    }
  } else {
    for (int i = 0; i < kFloorBatch; ++i) {
      const auto value = static_cast<Word>(i);
      std::memcpy(buffer + 8 * (i & 7), &value, Width);
      benchmark::ClobberMemory();
    }
  }
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double floor_for(unsigned width, Op op, std::uint8_t* buffer) {
  switch (width) {
    case 1: return floor_batch<1>(op, buffer);
    case 2: return floor_batch<2>(op, buffer);
    default: return floor_batch<4>(op, buffer);
  }
}

vpci::Status access_once(Rig& r, Path path, const Access& a, std::span<std::uint8_t> data) {
  if (path == Path::kDirect) {
    if (a.space == Space::kConfig) {
      return a.op == Op::kRead
                 ? r.function->config_read(static_cast<std::uint32_t>(a.offset), data)
                 : r.function->config_write(static_cast<std::uint32_t>(a.offset), data);
    }
    return a.op == Op::kRead ? r.function->bar_read(kMemoryBar, a.offset, data)
                             : r.function->bar_write(kMemoryBar, a.offset, data);
  }
  vpci::pci::Function& f = *r.function;
  if (a.space == Space::kConfig) {
    return a.op == Op::kRead ? f.config_read(static_cast<std::uint32_t>(a.offset), data)
                             : f.config_write(static_cast<std::uint32_t>(a.offset), data);
  }
  return a.op == Op::kRead ? vpci::server::bar_read(f, kMemoryBar, a.offset, data)
                           : vpci::server::bar_write(f, kMemoryBar, a.offset, data);
}

void run_access(benchmark::State& state, Path path, Access a) {
  Rig& r = rig();
  if (!r.error.empty()) {
    state.SkipWithError(r.error.c_str());
    return;
  }
  alignas(64) std::uint8_t floor_buffer[64] = {};
  std::uint8_t data[8] = {};
  for (unsigned i = 0; i < a.width; ++i) data[i] = static_cast<std::uint8_t>(a.value >> (8 * i));
  const std::span<std::uint8_t> bytes(data, a.width);
  double device_seconds = 0;
  double floor_seconds = 0;
  for (auto _ : state) {
    floor_seconds += floor_for(a.width, a.op, floor_buffer);
    const auto start = Clock::now();
    for (int i = 0; i < kBatch; ++i) {
      if (!access_once(r, path, a, bytes)) {
        state.SkipWithError("the device refused the access");
        return;
      }
      benchmark::DoNotOptimize(data);
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    device_seconds += seconds;
    state.SetIterationTime(seconds);
  }
  const double accesses = static_cast<double>(state.iterations()) * kBatch;
  const double ns = device_seconds / accesses * 1e9;
  const double floor_ns = floor_seconds / (accesses * (kFloorBatch / kBatch)) * 1e9;
  state.counters["ns"] = ns;
  state.counters["floor_ns"] = floor_ns;
  state.counters["ratio"] = ns / floor_ns;
  state.SetItemsProcessed(state.iterations() * kBatch);
}

// What each benchmark accesses (BAR offsets are in the memory BAR, virtio_pci_function.h).
namespace common = vp::common;
constexpr std::uint64_t kCommon = vp::VirtioPciLayout::kCommonOffset;
constexpr std::uint64_t kDevice = vp::VirtioPciLayout::kDeviceOffset;

void register_all() {
  struct Named {
    const char* name;
    Access access;
  };
  const std::uint64_t notify = rig().notify_offset;
  const Named accesses[] = {
      // Config space: plain stored bytes (Revision ID, Vendor ID, Vendor+Device ID) and
      // guest writes through the per-bit masks (Cache Line Size, Command, Command+Status).
      {"config_read/revision/1", {Space::kConfig, Op::kRead, 0x08, 1}},
      {"config_read/vendor_id/2", {Space::kConfig, Op::kRead, 0x00, 2}},
      {"config_read/vendor_device/4", {Space::kConfig, Op::kRead, 0x00, 4}},
      {"config_write/cache_line/1", {Space::kConfig, Op::kWrite, 0x0C, 1, 0x10}},
      {"config_write/command/2", {Space::kConfig, Op::kWrite, 0x04, 2, 0x0006}},
      {"config_write/command_status/4", {Space::kConfig, Op::kWrite, 0x04, 4, 0x0006}},
      // Common configuration (§4.1.4.3).
      {"common_read/device_status/1", {Space::kBar, Op::kRead, kCommon + common::kDeviceStatus, 1}},
      {"common_read/queue_size/2", {Space::kBar, Op::kRead, kCommon + common::kQueueSize, 2}},
      {"common_read/num_queues/2", {Space::kBar, Op::kRead, kCommon + common::kNumQueues, 2}},
      {"common_read/device_feature_select/4",
       {Space::kBar, Op::kRead, kCommon + common::kDeviceFeatureSelect, 4}},
      {"common_read/device_feature/4",
       {Space::kBar, Op::kRead, kCommon + common::kDeviceFeature, 4}},
      {"common_write/queue_select/2",
       {Space::kBar, Op::kWrite, kCommon + common::kQueueSelect, 2, 0}},
      {"common_write/device_feature_select/4",
       {Space::kBar, Op::kWrite, kCommon + common::kDeviceFeatureSelect, 4, 1}},
      // Doorbell of queue 0, ring enabled and empty (§4.1.5.2).
      {"notify/queue0/2", {Space::kBar, Op::kWrite, notify, 2, 0}},
      {"notify/queue0/4", {Space::kBar, Op::kWrite, notify, 4, 0}},
      // virtio-blk device config (§5.2.4): a byte of physical_block_exp, capacity, blk_size.
      {"device_read/physical_block_exp/1", {Space::kBar, Op::kRead, kDevice + 24, 1}},
      {"device_read/seg_max_lo/2", {Space::kBar, Op::kRead, kDevice + 12, 2}},
      {"device_read/capacity_lo/4", {Space::kBar, Op::kRead, kDevice + 0, 4}},
  };
  for (const auto& [name, access] : accesses) {
    for (const Path path : {Path::kDirect, Path::kServer}) {
      const std::string full = std::string(path == Path::kDirect ? "direct/" : "server/") + name;
      benchmark::RegisterBenchmark(
          full.c_str(),
          [path, access = access](benchmark::State& s) { run_access(s, path, access); })
          ->UseManualTime()
          ->Unit(benchmark::kNanosecond);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
