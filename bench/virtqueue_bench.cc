// The virtqueue data path, device side: descriptor chains of 1, 3 and 8 buffers of
// 512 B - 64 KiB each, through the split (virtio 1.3 §2.7) and the packed (§2.8) ring,
// against memcpy of the same bytes as the ceiling, all in one run.
//
// One iteration is one batch: the fake driver (tests/virtio/fake_driver.h) fills the
// ring (256 descriptors: 256 / chain length chains, published at once, as a driver
// does under load), then the device pops every chain, copies its payload (device
// reads: all buffers driver-written, copied out to a host buffer as a block back end
// writing a disk would; device writes: all buffers device-writable, filled from a host
// buffer), completes it, and sends the used-buffer notification check once per batch
// (EVENT_IDX negotiated). Only the device half is timed (manual timing): the fake
// driver is test code with maps and vectors, not what a guest runs. The driver then
// reaps the used entries, untimed.
//
// The ceiling is measured in the same iteration, just before the device pass: memcpy
// of the same buffers between the same memory, in the same direction — the bytes/s no
// device that copies can beat. Pairing them matters: on this shared VM memory
// bandwidth for the 64 KiB cases (8-16 MiB per batch, beyond L2) varies several-fold
// from one second to the next.
//
// Counters (for bench/run-all.sh): `descriptors` and `bytes` per batch, `memcpy_s` and
// `device_s` per batch, `of_memcpy` = device speed / memcpy speed.
#include <chrono>
#include <cstring>
#include <memory>
#include <vector>

#include <benchmark/benchmark.h>

#include "tests/virtio/fake_driver.h"
#include "virtio/virtqueue.h"

namespace {

using namespace vpci::virtio;
using testing::BufferElement;
using testing::ChainBuilder;
using testing::FakeGuestRam;
using testing::PackedRing;
using testing::SplitRing;

constexpr std::uint16_t kQueueSize = 256;
constexpr GuestAddress kRamBase = 0x100000;

enum class Direction { kDeviceReads, kDeviceWrites };

class NullSink final : public QueueEventSink {
 public:
  void used_buffer_notification(std::uint16_t /*queue*/) override { ++notifications; }
  void queue_failed(std::uint16_t /*queue*/, const vpci::Error& /*error*/) override {
    failed = true;
  }
  std::uint64_t notifications = 0;
  bool failed = false;
};

// Guest RAM for the rings plus every buffer of one batch, each buffer at its own
// address (chains are rebuilt from the same addresses every batch).
struct Workload {
  Workload(unsigned chain_length, std::uint32_t buffer_bytes, Direction direction)
      : chains_per_batch(kQueueSize / chain_length),
        ram(memory, kRamBase, ram_bytes(chain_length, buffer_bytes)),
        host(std::size_t{chain_length} * buffer_bytes, 0x5A) {
    for (unsigned c = 0; c < chains_per_batch; ++c) {
      ChainBuilder chain(ram);
      for (unsigned d = 0; d < chain_length; ++d) {
        const GuestAddress address = ram.alloc(buffer_bytes, 64);
        chain.element(
            BufferElement{address, buffer_bytes, direction == Direction::kDeviceWrites, 0});
      }
      chains.push_back(std::move(chain));
    }
    descriptors_per_batch = std::uint64_t{chains_per_batch} * chain_length;
    bytes_per_batch = descriptors_per_batch * buffer_bytes;
  }

  static std::size_t ram_bytes(unsigned chain_length, std::uint32_t buffer_bytes) {
    const std::size_t buffers = std::size_t{kQueueSize / chain_length} * chain_length;
    return buffers * (buffer_bytes + 64) + 64 * 1024;  // + rings and alignment
  }

  unsigned chains_per_batch;
  std::shared_ptr<GuestMemory> memory = std::make_shared<GuestMemory>();
  FakeGuestRam ram;
  std::vector<ChainBuilder> chains;
  std::vector<std::uint8_t> host;  // the device's side of every copy
  std::uint64_t descriptors_per_batch = 0;
  std::uint64_t bytes_per_batch = 0;
};

// Pops, copies and completes every available chain; returns the chains handled.
unsigned run_device(Virtqueue& queue, Direction direction, std::vector<std::uint8_t>& host) {
  unsigned handled = 0;
  while (auto chain = queue.pop()) {
    if (direction == Direction::kDeviceReads) {
      const auto bytes = static_cast<std::size_t>(chain->readable_bytes());
      if (!chain->reader().read(std::span<std::uint8_t>(host.data(), bytes))) return 0;
      chain->complete(0);
    } else {
      const auto bytes = static_cast<std::size_t>(chain->writable_bytes());
      if (!chain->writer().write(std::span<const std::uint8_t>(host.data(), bytes))) return 0;
      chain->complete();
    }
    ++handled;
  }
  queue.notify_driver_if_needed();
  return handled;
}

// The ceiling: every buffer of the batch copied with plain memcpy between guest RAM
// and the device's host buffer, in the direction the device copies.
void copy_buffers(Workload& work, Direction direction) {
  for (const auto& chain : work.chains) {
    std::size_t at = 0;
    for (const auto& element : chain.elements()) {
      std::uint8_t* guest = work.ram.host(element.address, element.length);
      if (direction == Direction::kDeviceReads) {
        std::memcpy(work.host.data() + at, guest, element.length);
      } else {
        std::memcpy(guest, work.host.data() + at, element.length);
      }
      at += element.length;
    }
    benchmark::ClobberMemory();
  }
}

template <typename Driver>
void run_ring(benchmark::State& state, RingFormat format, Direction direction) {
  const auto chain_length = static_cast<unsigned>(state.range(0));
  const auto buffer_bytes = static_cast<std::uint32_t>(state.range(1));
  Workload work(chain_length, buffer_bytes, direction);
  Driver driver(work.ram, kQueueSize);
  Virtqueue queue(0, kQueueSize);
  NullSink sink;
  if (!queue.set_layout(driver.layout()) ||
      !queue.enable(work.memory, format, RingOptions{.event_idx = true, .indirect = false},
                    &sink)) {
    state.SkipWithError("cannot enable the queue");
    return;
  }
  double memcpy_seconds = 0;
  double device_seconds = 0;
  for (auto _ : state) {
    if constexpr (std::is_same_v<Driver, SplitRing>) {
      for (const auto& chain : work.chains) driver.add(chain, /*publish=*/false);
      driver.publish();
    } else {
      for (const auto& chain : work.chains) driver.add(chain);
    }
    // The ceiling, right before the device pass over the same buffers (so both find
    // them in the same cache state): plain memcpy of every buffer, same direction.
    const auto copy_start = std::chrono::steady_clock::now();
    copy_buffers(work, direction);
    const auto start = std::chrono::steady_clock::now();
    const unsigned handled = run_device(queue, direction, work.host);
    const auto end = std::chrono::steady_clock::now();
    const double device = std::chrono::duration<double>(end - start).count();
    memcpy_seconds += std::chrono::duration<double>(start - copy_start).count();
    device_seconds += device;
    state.SetIterationTime(device);
    if (handled != work.chains_per_batch) {
      state.SkipWithError("device did not handle every chain");
      return;
    }
    unsigned reaped = 0;
    while (driver.pop_used()) ++reaped;
    if (reaped != handled) {
      state.SkipWithError("driver did not get every chain back");
      return;
    }
  }
  if (sink.failed) state.SkipWithError("queue failed");
  // Per batch: the memcpy ceiling's time and the device's, and device / memcpy speed.
  const double batches = static_cast<double>(state.iterations());
  state.counters["memcpy_s"] = memcpy_seconds / batches;
  state.counters["device_s"] = device_seconds / batches;
  state.counters["of_memcpy"] = memcpy_seconds / device_seconds;
  state.counters["descriptors"] = static_cast<double>(work.descriptors_per_batch);
  state.counters["bytes"] = static_cast<double>(work.bytes_per_batch);
  state.SetItemsProcessed(state.iterations() *
                          static_cast<std::int64_t>(work.descriptors_per_batch));
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(work.bytes_per_batch));
}

void BM_SplitDeviceReads(benchmark::State& s) {
  run_ring<SplitRing>(s, RingFormat::kSplit, Direction::kDeviceReads);
}
void BM_SplitDeviceWrites(benchmark::State& s) {
  run_ring<SplitRing>(s, RingFormat::kSplit, Direction::kDeviceWrites);
}
void BM_PackedDeviceReads(benchmark::State& s) {
  run_ring<PackedRing>(s, RingFormat::kPacked, Direction::kDeviceReads);
}
void BM_PackedDeviceWrites(benchmark::State& s) {
  run_ring<PackedRing>(s, RingFormat::kPacked, Direction::kDeviceWrites);
}

void shapes(benchmark::internal::Benchmark* b) {
  for (const int chain_length : {1, 3, 8}) {
    for (const int buffer_bytes : {512, 4096, 65536}) b->Args({chain_length, buffer_bytes});
  }
  b->ArgNames({"chain", "buf"})->UseManualTime()->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_SplitDeviceReads)->Apply(shapes);
BENCHMARK(BM_SplitDeviceWrites)->Apply(shapes);
BENCHMARK(BM_PackedDeviceReads)->Apply(shapes);
BENCHMARK(BM_PackedDeviceWrites)->Apply(shapes);

}  // namespace

BENCHMARK_MAIN();
