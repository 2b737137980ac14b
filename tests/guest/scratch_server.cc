// Test-only vfio-user server for the real-guest harness: serves one ScratchFunction
// (server/scratch_function.h, a pci::Function served like every vpci device) per
// --socket until SIGINT/SIGTERM, optionally tracing every message (--trace FILE, "-" for
// stderr). On exit it prints one summary line per device that the guest test asserts on:
//   SCRATCH-SUMMARY <socket> connections=N protocol_errors=N dma_requests=N interrupts=N
//     resets=N intx_raised=N guest_memory_regions=N
// Usage: vpci_scratch_server --socket PATH... [--trace FILE]
#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "server/scratch_function.h"
#include "server/socket_server.h"

namespace {

int usage() {
  std::fprintf(stderr, "usage: vpci_scratch_server --socket PATH... [--trace FILE|-]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> sockets;
  std::string trace_path;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--socket" && i + 1 < argc) {
      sockets.emplace_back(argv[++i]);
    } else if (arg == "--trace" && i + 1 < argc) {
      trace_path = argv[++i];
    } else {
      return usage();
    }
  }
  if (sockets.empty()) return usage();

  // Block the stop signals before any server thread exists so only sigwait sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::FILE* trace_file = nullptr;
  if (trace_path == "-") {
    trace_file = stderr;
  } else if (!trace_path.empty()) {
    trace_file = std::fopen(trace_path.c_str(), "w");
    if (trace_file == nullptr) {
      std::fprintf(stderr, "scratch_server: cannot open %s: %s\n", trace_path.c_str(),
                   std::strerror(errno));
      return 1;
    }
  }
  std::mutex trace_mutex;  // several server threads share one trace file

  std::vector<std::unique_ptr<vpci::server::ScratchFunction>> functions;
  // Destroyed in reverse: servers first, then the functions they serve.
  std::vector<std::unique_ptr<vpci::server::VfioUserServer>> servers;
  auto serve = [&](const std::string& path, vpci::server::ScratchFunction& function) {
    auto server = vpci::server::VfioUserServer::create(path, function, function.guest_memory());
    if (!server) {
      std::fprintf(stderr, "scratch_server: %s\n", server.error().message.c_str());
      return false;
    }
    if (trace_file != nullptr) {
      const std::string name = path.substr(path.find_last_of('/') + 1);
      (*server)->set_trace([trace_file, &trace_mutex, name](const std::string& line) {
        std::lock_guard lock(trace_mutex);
        std::fprintf(trace_file, "[%s] %s\n", name.c_str(), line.c_str());
        std::fflush(trace_file);
      });
    }
    (*server)->start();
    servers.push_back(std::move(*server));
    std::fprintf(stderr, "scratch_server: serving %s\n", path.c_str());
    return true;
  };
  for (const std::string& path : sockets) {
    functions.push_back(std::make_unique<vpci::server::ScratchFunction>());
    if (!serve(path, *functions.back())) return 1;
  }

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  for (auto& server : servers) server->stop();
  for (std::size_t i = 0; i < servers.size(); ++i) {
    const auto& server = *servers[i];
    std::printf(
        "SCRATCH-SUMMARY %s connections=%llu protocol_errors=%llu dma_requests=%llu "
        "interrupts=%llu ",
        server.socket_path().c_str(), static_cast<unsigned long long>(server.connections_closed()),
        static_cast<unsigned long long>(server.protocol_errors()),
        static_cast<unsigned long long>(server.dma_requests_sent()),
        static_cast<unsigned long long>(server.interrupts_signalled()));
    const auto& f = *functions[i];
    std::printf("resets=%u intx_raised=%u guest_memory_regions=%zu\n", f.reset_count(),
                f.interrupts_raised(), f.guest_memory()->snapshot()->regions().size());
  }
  std::fflush(stdout);
  servers.clear();
  if (trace_file != nullptr && trace_file != stderr) std::fclose(trace_file);
  return 0;
}
