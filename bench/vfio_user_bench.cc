// The vfio-user register path through the real socket server: REGION_READ and
// REGION_WRITE round trips per second between a client thread and a VfioUserServer
// (socket_server.h) serving a ScratchFunction over AF_UNIX, against a raw AF_UNIX
// ping-pong of exactly the same message sizes (bench_client.h, RawEchoPeer) measured in
// the same run. Posted writes (NO_REPLY, how QEMU sends BAR writes and doorbells) are
// measured as throughput: a batch of 256 posted writes, then one 4-byte read that can
// only be answered once all of them were handled.
//
// The ratio vpci / raw isolates what the server adds per message (framing, dispatch,
// allocation, syscalls): both sides use the same client code and the same kind of
// socket, and the two are measured alternately in chunks of 32 round trips (or one
// posted batch) so both see the same machine state. Wall time: two threads take part.
//
// Counters (for bench/run-all.sh): raw_us and vpci_us per message, ratio vpci / raw.
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "bench/bench_client.h"
#include "server/scratch_function.h"
#include "server/socket_server.h"
#include "server/vfio_regions.h"

namespace {

using vpci::bench::BenchClient;
using vpci::bench::RawEchoPeer;
using vpci::server::ScratchFunction;
using vpci::server::VfioUserServer;
namespace vu = vpci::server::vfio_user;

constexpr unsigned kPostedBatch = 256;
constexpr std::uint32_t kBar0 = 0;
constexpr std::uint32_t kSyncBytes = 4;

std::string socket_dir() {
  static const std::string dir = [] {
    std::string pattern = (std::filesystem::temp_directory_path() / "vpci-bench-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      std::perror("vfio_user_bench: mkdtemp");
      std::exit(2);
    }
    return pattern;
  }();
  return dir;
}

// One served ScratchFunction and a negotiated client.
struct ServedDevice {
  ServedDevice() {
    auto created =
        VfioUserServer::create(socket_dir() + "/bench.sock", function, function.guest_memory());
    if (!created) return;
    server = std::move(*created);
    server->start();
    client = BenchClient::connect(server->socket_path());
    if (client && !client->negotiate()) client.reset();
  }
  ScratchFunction function;
  std::unique_ptr<VfioUserServer> server;
  std::optional<BenchClient> client;
};

// Where the threads run. The scheduler's choice dominates a round trip on these VMs
// (about 11 us when client and server share a vCPU, 40 us when a wakeup has to reach
// an idle vCPU on the other side), so every comparison pins it:
//   0: client and both servers on CPU 0;
//   1: client on CPU 0, both servers on CPU 1 (as QEMU and a vpci process on a host).
bool pin_to(unsigned cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return ::sched_setaffinity(0, sizeof(set), &set) == 0;
}

void unpin() {
  cpu_set_t set;
  CPU_ZERO(&set);
  const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  for (long cpu = 0; cpu < cpus && cpu < CPU_SETSIZE; ++cpu) CPU_SET(static_cast<int>(cpu), &set);
  ::sched_setaffinity(0, sizeof(set), &set);
}

// Both peers of one comparison, alive together: the raw echo peer and a served device,
// their threads created on the server CPU (threads inherit the creator's affinity),
// the calling (client) thread then moved to CPU 0.
struct Pair {
  Pair(unsigned placement, std::size_t raw_request, std::size_t raw_reply, unsigned reply_every = 1,
       std::size_t raw_sync_request = 0)
      : pinned(pin_to(placement == 0 ? 0 : 1)),
        peer(raw_request, raw_reply, reply_every, raw_sync_request),
        raw(peer.take_client()) {
    pinned = pinned && pin_to(0);
  }
  ~Pair() { unpin(); }
  Pair(const Pair&) = delete;
  Pair& operator=(const Pair&) = delete;
  bool pinned;
  RawEchoPeer peer;
  BenchClient raw;
  ServedDevice device;
};

// Runs `chunk` on the raw peer, then on vpci, alternately, once per iteration, so that
// both see the same machine state (these VMs' round trips swing 3x within a minute as
// idle vCPUs are descheduled). Reports microseconds per message for each and their
// ratio; the benchmark's own time is the vpci side's (manual time).
template <typename Chunk>
void alternate(benchmark::State& state, Pair& pair, unsigned messages_per_chunk, Chunk chunk) {
  if (!pair.device.client) return state.SkipWithError("cannot serve or connect");
  if (!pair.pinned) return state.SkipWithError("cannot pin threads (needs 2 CPUs for placement 1)");
  double raw_seconds = 0;
  double vpci_seconds = 0;
  for (auto _ : state) {
    auto start = std::chrono::steady_clock::now();
    if (!chunk(pair.raw)) return state.SkipWithError("raw peer failed");
    auto middle = std::chrono::steady_clock::now();
    if (!chunk(*pair.device.client)) return state.SkipWithError("vpci server failed");
    auto end = std::chrono::steady_clock::now();
    raw_seconds += std::chrono::duration<double>(middle - start).count();
    const double vpci = std::chrono::duration<double>(end - middle).count();
    vpci_seconds += vpci;
    state.SetIterationTime(vpci);
  }
  const double messages = static_cast<double>(state.iterations()) * messages_per_chunk;
  state.counters["raw_us"] = raw_seconds / messages * 1e6;
  state.counters["vpci_us"] = vpci_seconds / messages * 1e6;
  state.counters["ratio"] = vpci_seconds / raw_seconds;
  state.SetItemsProcessed(static_cast<std::int64_t>(messages));
}

constexpr unsigned kRoundTripsPerChunk = 32;

// ---- REGION_READ ---------------------------------------------------------------------------

void read_benchmark(benchmark::State& state, std::uint32_t region) {
  const auto count = static_cast<std::uint32_t>(state.range(1));
  Pair pair(static_cast<unsigned>(state.range(0)), vu::kHeaderSize + vu::kRegionAccessSize,
            vu::kHeaderSize + vu::kRegionAccessSize + count);
  alternate(state, pair, kRoundTripsPerChunk, [&](BenchClient& client) {
    for (unsigned i = 0; i < kRoundTripsPerChunk; ++i) {
      if (!client.region_read(region, 0, count)) return false;
    }
    return true;
  });
}

void BM_RegionRead(benchmark::State& state) {
  read_benchmark(state, kBar0);
}
void BM_ConfigRead(benchmark::State& state) {
  read_benchmark(state, vpci::server::kRegionConfig);
}

// ---- REGION_WRITE, replied ---------------------------------------------------------------

void BM_RegionWrite(benchmark::State& state) {
  const std::vector<std::uint8_t> data(static_cast<std::size_t>(state.range(1)), 0xA5);
  Pair pair(static_cast<unsigned>(state.range(0)),
            vu::kHeaderSize + vu::kRegionAccessSize + data.size(),
            vu::kHeaderSize + vu::kRegionAccessSize);
  alternate(state, pair, kRoundTripsPerChunk, [&](BenchClient& client) {
    for (unsigned i = 0; i < kRoundTripsPerChunk; ++i) {
      if (!client.region_write(kBar0, 0, data, /*posted=*/false)) return false;
    }
    return true;
  });
}

// ---- REGION_WRITE, posted ------------------------------------------------------------------

// A batch of posted writes, then one read that is answered only after all of them.
void BM_PostedWrite(benchmark::State& state) {
  const std::vector<std::uint8_t> data(static_cast<std::size_t>(state.range(1)), 0x5A);
  Pair pair(static_cast<unsigned>(state.range(0)),
            vu::kHeaderSize + vu::kRegionAccessSize + data.size(),
            vu::kHeaderSize + vu::kRegionAccessSize + kSyncBytes, kPostedBatch + 1,
            vu::kHeaderSize + vu::kRegionAccessSize);
  alternate(state, pair, kPostedBatch + 1, [&](BenchClient& client) {
    for (unsigned i = 0; i < kPostedBatch; ++i) {
      if (!client.region_write(kBar0, 0, data, /*posted=*/true)) return false;
    }
    return client.region_read(kBar0, 0, kSyncBytes);
  });
}

void sizes(benchmark::internal::Benchmark* b) {
  for (const int placement : {0, 1}) {
    for (const int bytes : {4, 64, 1024}) b->Args({placement, bytes});
  }
  b->ArgNames({"cpus", "bytes"})->UseManualTime()->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_RegionRead)->Apply(sizes);
BENCHMARK(BM_ConfigRead)
    ->ArgNames({"cpus", "bytes"})
    ->Args({0, 4})
    ->Args({1, 4})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_RegionWrite)->Apply(sizes);
BENCHMARK(BM_PostedWrite)->Apply(sizes);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  std::filesystem::remove_all(socket_dir());
  return 0;
}
