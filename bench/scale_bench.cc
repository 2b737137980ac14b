// Scale: one serving process with N devices, each a VfioUserServer on its own AF_UNIX
// socket. For each N it measures
//   * startup: creating the N functions and servers, until every socket accepts;
//   * resident memory per device: VmRSS of the serving process before and after
//     (idle), and again with a negotiated client on every device;
//   * register round-trip latency (4-byte config-space REGION_READ) p50/p99 while
//     every device has a client and kClientThreads threads issue requests round-robin
//     over all of them; and the same against N raw AF_UNIX echo peers (bench_client.h,
//     a thread and a socket pair each, no protocol) in the same run, as the floor.
//     Client threads run on CPU 0, all server (and raw peer) threads on CPU 1.
//
// The serving side runs in a forked child (so its RSS contains nothing of the
// clients), the clients in the parent. Not a Google Benchmark program: each figure is
// one whole-process measurement; bench/run-all.sh repeats it and takes medians.
//
//   scale_bench [--devices=1,64,1024,4096] [--requests=N] [--socket-dir=DIR]
//               [--device=virtio-rng|scratch] [--json]
//
// Sockets are created under --socket-dir (default: $TMPDIR or /tmp). Where that is
// matters: bind() of an AF_UNIX socket creates an inode, about 0.35 ms each on this
// machine's ext4 /tmp against 0.03 ms on tmpfs (/dev/shm, /run on most systems).
//
// The devices come from make_device(): by default a modern virtio-rng exactly as
// `vpci serve` builds it; --device=scratch serves the bare ScratchFunction.
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>
#include <sys/vfs.h>
#include <sys/wait.h>

#include "bench/bench_client.h"
#include "server/scratch_function.h"
#include "server/served_device.h"
#include "server/socket_server.h"
#include "server/vfio_regions.h"

namespace {

using vpci::bench::BenchClient;
using vpci::bench::RawEchoPeer;
using vpci::server::VfioUserServer;
namespace vu = vpci::server::vfio_user;
using Clock = std::chrono::steady_clock;

constexpr unsigned kClientThreads = 4;

// The device every socket serves: by default what `vpci serve` builds for a
// `kind = "virtio-rng"`, `transport = "modern"` entry (ServedDevice: RngDevice, its
// DeviceCore and queue, VirtioPciFunction with MSI-X, GuestMemory);
// --device=scratch serves the bare ScratchFunction instead, for comparison.
enum class DeviceType { kVirtioRng, kScratch };
DeviceType g_device_type = DeviceType::kVirtioRng;

class ServedScratch final : public vpci::server::ServedDevice {
 public:
  const vpci::server::ServedDeviceSpec& spec() const override { return spec_; }
  vpci::pci::Function& function() override { return function_; }
  const std::shared_ptr<vpci::virtio::GuestMemory>& guest_memory() const override {
    return function_.guest_memory();
  }
  vpci::Status flush() override { return {}; }
  std::string describe() const override { return "scratch"; }

 private:
  vpci::server::ServedDeviceSpec spec_;
  vpci::server::ScratchFunction function_;
};

std::unique_ptr<vpci::server::ServedDevice> make_device(unsigned index) {
  if (g_device_type == DeviceType::kScratch) return std::make_unique<ServedScratch>();
  vpci::server::ServedDeviceSpec spec;
  spec.name = "rng" + std::to_string(index);
  spec.kind = vpci::server::DeviceKind::kVirtioRng;
  spec.transport = vpci::server::TransportKind::kModern;
  auto device = vpci::server::ServedDevice::create(spec);
  if (!device) {
    std::fprintf(stderr, "scale_bench: device %u: %s\n", index, device.error().message.c_str());
    return nullptr;
  }
  return std::move(*device);
}
const char* device_name() {
  return g_device_type == DeviceType::kScratch
             ? "ScratchFunction (4 KiB config space, 4 KiB BAR0)"
             : "virtio-rng, modern virtio-pci (ServedDevice, as vpci serve builds it)";
}
const char* device_key() {
  return g_device_type == DeviceType::kScratch ? "scratch" : "virtio-rng";
}

long vm_rss_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Clients on CPU 0, every server thread on CPU 1 (when there are two CPUs): otherwise
// the scheduler's placement, not the server, decides the latency on a 2-vCPU VM.
void pin_to(unsigned cpu) {
  if (::sysconf(_SC_NPROCESSORS_ONLN) < 2) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  ::sched_setaffinity(0, sizeof(set), &set);
}
constexpr unsigned kClientCpu = 0;
constexpr unsigned kServerCpu = 1;

// The file system of the socket directory, which decides bind()'s cost.
std::string filesystem_of(const std::filesystem::path& dir) {
  struct statfs info {};
  if (::statfs(dir.c_str(), &info) != 0) return "unknown";
  switch (static_cast<unsigned long>(info.f_type)) {
    case 0x01021994: return "tmpfs";
    case 0xEF53: return "ext4";
    case 0x58465342: return "xfs";
    case 0x9123683E: return "btrfs";
    case 0x794C7630: return "overlayfs";
    default: return "other";
  }
}

void raise_fd_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
}

bool write_line(int fd, const std::string& text) {
  const std::string line = text + "\n";
  return ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
}

std::string read_line(int fd) {
  std::string line;
  char c = 0;
  while (::read(fd, &c, 1) == 1 && c != '\n') line.push_back(c);
  return line;
}

struct ServerFigures {
  double startup_s = 0;  // functions + sockets + threads
  double create_s = 0;   // functions + sockets only
  long rss_before_kib = 0;
  long rss_idle_kib = 0;
  long rss_connected_kib = 0;
  double stop_s = 0;
};

// The serving process: reports startup and RSS on `report`, takes orders on `orders`.
[[noreturn]] void serve_devices(unsigned devices, const std::string& dir, int orders, int report) {
  pin_to(kServerCpu);  // inherited by every server thread
  std::vector<std::unique_ptr<vpci::server::ServedDevice>> functions;
  std::vector<std::unique_ptr<VfioUserServer>> servers;
  functions.reserve(devices);
  servers.reserve(devices);
  const long before = vm_rss_kib();
  const auto start = Clock::now();
  for (unsigned i = 0; i < devices; ++i) {
    functions.push_back(make_device(i));
    if (!functions.back()) {
      write_line(report, "error");
      std::_Exit(1);
    }
    auto server =
        VfioUserServer::create(dir + "/dev" + std::to_string(i) + ".sock",
                               functions.back()->function(), functions.back()->guest_memory());
    if (!server) {
      std::fprintf(stderr, "scale_bench: device %u: %s\n", i, server.error().message.c_str());
      write_line(report, "error");
      std::_Exit(1);
    }
    servers.push_back(std::move(*server));
  }
  const double created = seconds_since(start);
  for (auto& server : servers) server->start();
  // Sockets accept once listen() ran (inside create); the servers' threads are running.
  const double startup = seconds_since(start);
  write_line(report, std::to_string(startup) + " " + std::to_string(created) + " " +
                         std::to_string(before) + " " + std::to_string(vm_rss_kib()));
  // "connected": every client negotiated; measure again.
  if (read_line(orders) != "measure") std::_Exit(1);
  write_line(report, std::to_string(vm_rss_kib()));
  if (read_line(orders) != "stop") std::_Exit(1);
  const auto stop_start = Clock::now();
  servers.clear();
  write_line(report, std::to_string(seconds_since(stop_start)));
  std::_Exit(0);
}

struct Latencies {
  double p50_us = 0;
  double p99_us = 0;
  std::size_t samples = 0;
};

Latencies percentiles(std::vector<double>& samples_us) {
  Latencies out;
  out.samples = samples_us.size();
  if (samples_us.empty()) return out;
  std::sort(samples_us.begin(), samples_us.end());
  auto at = [&](double q) {
    const auto index = static_cast<std::size_t>(q * static_cast<double>(samples_us.size() - 1));
    return samples_us[index];
  };
  out.p50_us = at(0.50);
  out.p99_us = at(0.99);
  return out;
}

// kClientThreads threads, thread t using clients t, t + T, t + 2T, ... round-robin,
// `requests` round trips in all on each side. Every thread alternates between the two
// sides in chunks of kChunk requests, so vpci and the raw floor see the same machine
// state (the shared VM's latency swings by 3x within seconds).
constexpr std::size_t kChunk = 64;

struct LatencyPair {
  Latencies vpci;
  Latencies raw;
};

LatencyPair measure(std::vector<BenchClient>& vpci_clients, std::vector<BenchClient>& raw_clients,
                    std::size_t requests) {
  const unsigned threads =
      std::min<unsigned>(kClientThreads, static_cast<unsigned>(vpci_clients.size()));
  std::vector<std::vector<double>> samples[2];
  samples[0].resize(threads);
  samples[1].resize(threads);
  std::atomic<bool> failed{false};
  std::vector<std::thread> workers;
  for (unsigned t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      pin_to(kClientCpu);
      std::vector<std::size_t> mine;
      for (std::size_t i = t; i < vpci_clients.size(); i += threads) mine.push_back(i);
      const std::size_t count = requests / threads;
      std::size_t next[2] = {0, 0};
      for (int side : {0, 1}) samples[side][t].reserve(count);
      while (next[0] < count && !failed) {
        for (int side : {0, 1}) {
          std::vector<BenchClient>& clients = side == 0 ? vpci_clients : raw_clients;
          for (std::size_t k = 0; k < kChunk && next[side] < count; ++k, ++next[side]) {
            BenchClient& client = clients[mine[next[side] % mine.size()]];
            const auto start = Clock::now();
            if (!client.region_read(vpci::server::kRegionConfig, 0, 4)) {
              failed = true;
              return;
            }
            samples[side][t].push_back(seconds_since(start) * 1e6);
          }
        }
      }
    });
  }
  for (auto& w : workers) w.join();
  if (failed) return LatencyPair{};
  LatencyPair out;
  for (int side : {0, 1}) {
    std::vector<double> all;
    for (auto& s : samples[side]) all.insert(all.end(), s.begin(), s.end());
    (side == 0 ? out.vpci : out.raw) = percentiles(all);
  }
  return out;
}

struct Row {
  unsigned devices = 0;
  ServerFigures server;
  Latencies vpci;
  Latencies raw;
  bool ok = false;
};

Row run(unsigned devices, std::size_t requests, const std::filesystem::path& socket_parent) {
  Row row;
  row.devices = devices;
  std::string dir = (socket_parent / "vpci-scale-XXXXXX").string();
  if (::mkdtemp(dir.data()) == nullptr) return row;
  int orders[2];
  int report[2];
  if (::pipe(orders) != 0 || ::pipe(report) != 0) return row;
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(orders[1]);
    ::close(report[0]);
    serve_devices(devices, dir, orders[0], report[1]);
  }
  ::close(orders[0]);
  ::close(report[1]);
  {
    std::istringstream first(read_line(report[0]));
    first >> row.server.startup_s >> row.server.create_s >> row.server.rss_before_kib >>
        row.server.rss_idle_kib;
    if (first.fail()) {
      ::waitpid(child, nullptr, 0);
      return row;
    }
  }
  std::vector<BenchClient> clients;
  clients.reserve(devices);
  bool connected = true;
  for (unsigned i = 0; i < devices && connected; ++i) {
    auto client = BenchClient::connect(dir + "/dev" + std::to_string(i) + ".sock");
    connected = client && client->negotiate();
    if (connected) clients.push_back(std::move(*client));
  }
  write_line(orders[1], "measure");
  row.server.rss_connected_kib = std::strtol(read_line(report[0]).c_str(), nullptr, 10);
  // The floor: as many raw echo peers (a thread and a socket each) as devices, used by
  // the same client threads the same way, so the cost of touching thousands of cold
  // threads and sockets is in the floor too and the ratio shows only the protocol.
  {
    std::vector<std::unique_ptr<RawEchoPeer>> peers;
    std::vector<BenchClient> raw_clients;
    peers.reserve(devices);
    raw_clients.reserve(devices);
    pin_to(kServerCpu);  // the peers' threads inherit it
    for (unsigned t = 0; t < devices; ++t) {
      peers.push_back(std::make_unique<RawEchoPeer>(vu::kHeaderSize + vu::kRegionAccessSize,
                                                    vu::kHeaderSize + vu::kRegionAccessSize + 4));
      raw_clients.emplace_back(peers.back()->take_client());
    }
    pin_to(kClientCpu);
    if (connected) {
      const LatencyPair latencies = measure(clients, raw_clients, requests);
      row.vpci = latencies.vpci;
      row.raw = latencies.raw;
    }
    raw_clients.clear();
  }
  clients.clear();
  write_line(orders[1], "stop");
  row.server.stop_s = std::strtod(read_line(report[0]).c_str(), nullptr);
  ::close(orders[1]);
  ::close(report[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  std::filesystem::remove_all(dir);
  row.ok = connected && WIFEXITED(status) && WEXITSTATUS(status) == 0 && row.vpci.samples > 0;
  return row;
}

}  // namespace

int main(int argc, char** argv) {
  // A serving child that dies (e.g. out of file descriptors) must end as a row marked
  // failed, not as a silent SIGPIPE of this process when it next writes an order.
  ::signal(SIGPIPE, SIG_IGN);
  std::vector<unsigned> device_counts{1, 64, 1024, 4096};
  std::size_t requests = 20000;
  bool json = false;
  std::filesystem::path socket_parent = std::filesystem::temp_directory_path();
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--devices=", 0) == 0) {
      device_counts.clear();
      std::stringstream list(arg.substr(10));
      std::string item;
      while (std::getline(list, item, ','))
        device_counts.push_back(static_cast<unsigned>(std::stoul(item)));
    } else if (arg.rfind("--requests=", 0) == 0) {
      requests = std::stoul(arg.substr(11));
    } else if (arg.rfind("--socket-dir=", 0) == 0) {
      socket_parent = arg.substr(13);
    } else if (arg == "--device=virtio-rng") {
      g_device_type = DeviceType::kVirtioRng;
    } else if (arg == "--device=scratch") {
      g_device_type = DeviceType::kScratch;
    } else if (arg == "--json") {
      json = true;
    } else {
      std::fprintf(stderr,
                   "usage: scale_bench [--devices=1,64,1024,4096] [--requests=N] "
                   "[--socket-dir=DIR] [--device=virtio-rng|scratch] [--json]\n");
      return 2;
    }
  }
  raise_fd_limit();
  if (!json) {
    std::printf("device: %s; %u client threads; %zu requests; sockets in %s (%s)\n", device_name(),
                kClientThreads, requests, socket_parent.c_str(),
                filesystem_of(socket_parent).c_str());
  }
  int failures = 0;
  for (const unsigned devices : device_counts) {
    const Row row = run(devices, requests, socket_parent);
    if (!row.ok) ++failures;
    const double per_device_idle =
        static_cast<double>(row.server.rss_idle_kib - row.server.rss_before_kib) / devices;
    const double per_device_connected =
        static_cast<double>(row.server.rss_connected_kib - row.server.rss_before_kib) / devices;
    if (json) {
      std::printf(
          "{\"device\": \"%s\", \"socket_dir\": \"%s\", \"socket_fs\": \"%s\", \"devices\": %u, "
          "\"ok\": %s, \"startup_s\": %.6f, \"create_s\": %.6f, \"stop_s\": %.6f, "
          "\"rss_before_kib\": %ld, \"rss_idle_kib\": %ld, \"rss_connected_kib\": %ld, "
          "\"kib_per_device_idle\": %.2f, \"kib_per_device_connected\": %.2f, "
          "\"p50_us\": %.2f, \"p99_us\": %.2f, \"raw_p50_us\": %.2f, \"raw_p99_us\": %.2f}\n",
          device_key(), socket_parent.c_str(), filesystem_of(socket_parent).c_str(), devices,
          row.ok ? "true" : "false", row.server.startup_s, row.server.create_s, row.server.stop_s,
          row.server.rss_before_kib, row.server.rss_idle_kib, row.server.rss_connected_kib,
          per_device_idle, per_device_connected, row.vpci.p50_us, row.vpci.p99_us, row.raw.p50_us,
          row.raw.p99_us);
    } else {
      std::printf(
          "%5u devices: %s startup %.3f s (sockets %.3f s), stop %.3f s, RSS/device %.1f KiB idle, "
          "%.1f KiB "
          "connected; latency p50 %.1f us p99 %.1f us (raw p50 %.1f us p99 %.1f us)\n",
          devices, row.ok ? "ok" : "FAILED", row.server.startup_s, row.server.create_s,
          row.server.stop_s, per_device_idle, per_device_connected, row.vpci.p50_us,
          row.vpci.p99_us, row.raw.p50_us, row.raw.p99_us);
    }
    std::fflush(stdout);
  }
  return failures == 0 ? 0 : 1;
}
