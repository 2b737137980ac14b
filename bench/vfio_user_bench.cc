// The vfio-user register path through the real socket server: REGION_READ and
// REGION_WRITE round trips per second between a client thread and a VfioUserServer
// (socket_server.h) serving a ScratchFunction over AF_UNIX, against a raw AF_UNIX
// ping-pong of exactly the same message sizes (bench_client.h, RawEchoPeer) measured in
// the same run. Posted writes (NO_REPLY, how QEMU sends BAR writes and doorbells) are
// measured as throughput: a batch of 256 posted writes, then one 4-byte read that can
// only be answered once all of them were handled.
//
// The ratio vpci / raw isolates what the server adds per message (framing, dispatch,
// allocation, syscalls): both sides use the same client code and the same sockets.
// Wall time (UseRealTime): two threads take part in every round trip.
//
// Counters per iteration (for bench/run-all.sh): `messages` (requests sent).
#include <stdlib.h>

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
    auto created = VfioUserServer::create(socket_dir() + "/bench.sock", function);
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

void finish(benchmark::State& state, std::uint64_t messages_per_iteration) {
  state.counters["messages"] = static_cast<double>(messages_per_iteration);
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(messages_per_iteration));
}

// ---- REGION_READ ---------------------------------------------------------------------------

void read_loop(benchmark::State& state, BenchClient& client, std::uint32_t region) {
  const auto count = static_cast<std::uint32_t>(state.range(0));
  for (auto _ : state) {
    if (!client.region_read(region, 0, count)) {
      state.SkipWithError("read failed");
      return;
    }
  }
  finish(state, 1);
}

void BM_RawRead(benchmark::State& state) {
  const auto count = static_cast<std::size_t>(state.range(0));
  RawEchoPeer peer(vu::kHeaderSize + vu::kRegionAccessSize,
                   vu::kHeaderSize + vu::kRegionAccessSize + count);
  BenchClient client(peer.take_client());
  read_loop(state, client, kBar0);
}

void BM_VpciRead(benchmark::State& state) {
  ServedDevice device;
  if (!device.client) return state.SkipWithError("cannot serve or connect");
  read_loop(state, *device.client, kBar0);
}

void BM_VpciConfigRead(benchmark::State& state) {
  ServedDevice device;
  if (!device.client) return state.SkipWithError("cannot serve or connect");
  read_loop(state, *device.client, vpci::server::kRegionConfig);
}

// ---- REGION_WRITE, replied ---------------------------------------------------------------

void write_loop(benchmark::State& state, BenchClient& client) {
  const std::vector<std::uint8_t> data(static_cast<std::size_t>(state.range(0)), 0xA5);
  for (auto _ : state) {
    if (!client.region_write(kBar0, 0, data, /*posted=*/false)) {
      state.SkipWithError("write failed");
      return;
    }
  }
  finish(state, 1);
}

void BM_RawWrite(benchmark::State& state) {
  const auto count = static_cast<std::size_t>(state.range(0));
  RawEchoPeer peer(vu::kHeaderSize + vu::kRegionAccessSize + count,
                   vu::kHeaderSize + vu::kRegionAccessSize);
  BenchClient client(peer.take_client());
  write_loop(state, client);
}

void BM_VpciWrite(benchmark::State& state) {
  ServedDevice device;
  if (!device.client) return state.SkipWithError("cannot serve or connect");
  write_loop(state, *device.client);
}

// ---- REGION_WRITE, posted ------------------------------------------------------------------

void posted_loop(benchmark::State& state, BenchClient& client) {
  const std::vector<std::uint8_t> data(static_cast<std::size_t>(state.range(0)), 0x5A);
  for (auto _ : state) {
    for (unsigned i = 0; i < kPostedBatch; ++i) {
      if (!client.region_write(kBar0, 0, data, /*posted=*/true)) {
        state.SkipWithError("posted write failed");
        return;
      }
    }
    if (!client.region_read(kBar0, 0, kSyncBytes)) {
      state.SkipWithError("sync read failed");
      return;
    }
  }
  finish(state, kPostedBatch + 1);
}

void BM_RawPostedWrite(benchmark::State& state) {
  const auto count = static_cast<std::size_t>(state.range(0));
  RawEchoPeer peer(vu::kHeaderSize + vu::kRegionAccessSize + count,
                   vu::kHeaderSize + vu::kRegionAccessSize + kSyncBytes, kPostedBatch + 1,
                   vu::kHeaderSize + vu::kRegionAccessSize);
  BenchClient client(peer.take_client());
  posted_loop(state, client);
}

void BM_VpciPostedWrite(benchmark::State& state) {
  ServedDevice device;
  if (!device.client) return state.SkipWithError("cannot serve or connect");
  posted_loop(state, *device.client);
}

void sizes(benchmark::internal::Benchmark* b) {
  b->ArgName("bytes")->Arg(4)->Arg(64)->Arg(1024)->UseRealTime()->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_RawRead)->Apply(sizes);
BENCHMARK(BM_VpciRead)->Apply(sizes);
BENCHMARK(BM_VpciConfigRead)->ArgName("bytes")->Arg(4)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_RawWrite)->Apply(sizes);
BENCHMARK(BM_VpciWrite)->Apply(sizes);
BENCHMARK(BM_RawPostedWrite)->Apply(sizes);
BENCHMARK(BM_VpciPostedWrite)->Apply(sizes);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  std::filesystem::remove_all(socket_dir());
  return 0;
}
