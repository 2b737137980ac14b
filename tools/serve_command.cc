// `vpci serve [CONFIG] [--socket-dir DIR] [--check] [--trace FILE] [--stats]`
//
// Runs the devices CONFIG names (server/serve_config.h; docs/serve.md), each on its
// own vfio-user socket <socket_dir>/<name>.sock, until SIGINT or SIGTERM. Without
// CONFIG it serves the default pair — a modern virtio-rng and a modern virtio-blk on
// a fresh 64 MiB image in the socket directory — and prints the QEMU arguments that
// attach a guest to them.
//
// Shutdown: SIGINT/SIGTERM are blocked in every thread and taken by sigwait() in the
// main thread, so no handler runs inside the servers. The servers stop (ending any
// connection, which resets the devices and drops guest memory), the images are synced
// and the socket files removed before exit.
//
// --trace FILE writes every vfio-user message of every device as one line (server/
// trace.h), prefixed by the device name; --stats prints, at shutdown, each device's
// messages and server-side time by command and the interrupts it signalled
// (docs/PERFORMANCE.md uses both to profile a real guest).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "server/serve_config.h"
#include "server/served_device.h"
#include "server/socket_server.h"
#include "tools/commands.h"

namespace vpci::tools {
namespace {

struct ServeOptions {
  std::string config;
  std::string socket_dir;
  bool check_only = false;
  std::string trace;  // file, or "-" for stderr; empty: no trace
  bool stats = false;
};

// One line per device: "<name>: N messages, T s handling (U us each), K interrupts",
// then one line per kind of message, busiest first.
void print_stats(const std::string& name, const server::VfioUserServer& served) {
  auto rows = served.stats();
  std::uint64_t messages = 0;
  std::uint64_t nanoseconds = 0;
  for (const auto& row : rows) {
    messages += row.messages;
    nanoseconds += row.nanoseconds;
  }
  const auto per_message_us = [](std::uint64_t ns, std::uint64_t count) {
    return count == 0 ? 0.0 : static_cast<double>(ns) / 1e3 / static_cast<double>(count);
  };
  fmt::print("vpci serve: stats {}: {} messages, {:.3f} s handling ({:.2f} us each), {} interrupts signalled\n",
             name, messages, static_cast<double>(nanoseconds) / 1e9,
             per_message_us(nanoseconds, messages), served.interrupts_signalled());
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.messages > b.messages; });
  for (const auto& row : rows) {
    fmt::print("vpci serve: stats {}:   {:<32} {:>10} messages {:>10.3f} s {:>8.2f} us each\n", name,
               row.what, row.messages, static_cast<double>(row.nanoseconds) / 1e9,
               per_message_us(row.nanoseconds, row.messages));
  }
}

// $XDG_RUNTIME_DIR/vpci when the session has one (private to the user), else
// /tmp/vpci-<uid>.
std::filesystem::path default_socket_dir() {
  if (const char* runtime = std::getenv("XDG_RUNTIME_DIR"); runtime != nullptr && *runtime != 0) {
    return std::filesystem::path(runtime) / "vpci";
  }
  return std::filesystem::temp_directory_path() / fmt::format("vpci-{}", ::getuid());
}

Status make_socket_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return make_error(ErrorCode::kIoError, "cannot create socket directory {}: {}", dir.string(),
                      ec.message());
  }
  if (!std::filesystem::is_directory(dir, ec)) {
    return make_error(ErrorCode::kInvalidArgument, "socket directory {} is not a directory",
                      dir.string());
  }
  return {};
}

// A fresh sparse image of `bytes`, replacing whatever was there.
Status create_fresh_image(const std::filesystem::path& path, std::uint64_t bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return make_error(ErrorCode::kIoError, "cannot create image {}: {}", path.string(),
                      std::strerror(errno));
  }
  const int rc = ::ftruncate(fd, static_cast<off_t>(bytes));
  const int saved = errno;
  ::close(fd);
  if (rc != 0) {
    return make_error(ErrorCode::kIoError, "cannot size image {} to {} bytes: {}", path.string(),
                      bytes, std::strerror(saved));
  }
  return {};
}

std::string shell_quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// The QEMU (>= 10.1) command line that attaches a guest to every socket: guest RAM
// must be a shared memfd so the server can map it (reference vfio-user.md §5), and
// vfio-user-pci only takes the JSON -device form.
std::string qemu_arguments(const std::vector<std::string>& sockets) {
  std::string out =
      "qemu-system-x86_64 -M q35 -m 512 \\\n"
      "  -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem \\\n";
  for (const std::string& socket : sockets) {
    const nlohmann::json device = {{"driver", "vfio-user-pci"},
                                   {"socket", {{"type", "unix"}, {"path", socket}}}};
    out += fmt::format("  -device {} \\\n", shell_quote(device.dump()));
  }
  out += "  -kernel <bzImage> -initrd <initrd> -append console=ttyS0 -nographic";
  return out;
}

Result<server::ServeConfig> load_config(const ServeOptions& options) {
  if (!options.config.empty()) return server::load_serve_config(options.config);
  const std::filesystem::path dir =
      options.socket_dir.empty() ? default_socket_dir() : std::filesystem::path(options.socket_dir);
  VPCI_TRY(make_socket_dir(dir));
  const std::filesystem::path image = dir / "blk0.img";
  if (!options.check_only) VPCI_TRY(create_fresh_image(image, server::kDefaultImageBytes));
  return server::parse_serve_config(server::default_serve_config_text(image), "<default>", dir,
                                    /*check_files=*/!options.check_only);
}

int run_serve(const ServeOptions& options) {
  // Block the shutdown signals before any server thread exists, so every thread
  // inherits the mask and only sigwait() below sees them.
  sigset_t shutdown_signals;
  sigemptyset(&shutdown_signals);
  sigaddset(&shutdown_signals, SIGINT);
  sigaddset(&shutdown_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &shutdown_signals, nullptr);

  auto config = load_config(options);
  if (!config) {
    fmt::print(stderr, "vpci serve: {}\n", config.error().message);
    return 1;
  }
  std::filesystem::path socket_dir;
  if (!options.socket_dir.empty()) {
    socket_dir = options.socket_dir;
  } else if (config->socket_dir) {
    socket_dir = *config->socket_dir;
  } else {
    socket_dir = default_socket_dir();
  }

  std::vector<std::unique_ptr<server::ServedDevice>> devices;
  for (const server::ServedDeviceSpec& spec : config->devices) {
    auto device = server::ServedDevice::create(spec);
    if (!device) {
      fmt::print(stderr, "vpci serve: {}:{}: device \"{}\": {}\n", config->source, spec.line,
                 spec.name, device.error().message);
      return 1;
    }
    devices.push_back(std::move(*device));
  }
  if (options.check_only) {
    fmt::print("{}: {} device(s) OK\n", config->source, devices.size());
    for (const auto& device : devices) fmt::print("  {}\n", device->describe());
    return 0;
  }
  if (auto made = make_socket_dir(socket_dir); !made) {
    fmt::print(stderr, "vpci serve: {}\n", made.error().message);
    return 1;
  }

  std::FILE* trace_file = nullptr;
  if (options.trace == "-") {
    trace_file = stderr;
  } else if (!options.trace.empty()) {
    trace_file = std::fopen(options.trace.c_str(), "we");
    if (trace_file == nullptr) {
      fmt::print(stderr, "vpci serve: cannot open trace file {}: {}\n", options.trace,
                 std::strerror(errno));
      return 1;
    }
  }
  struct CloseTrace {
    std::FILE* file;
    ~CloseTrace() {
      if (file != nullptr && file != stderr) std::fclose(file);
    }
  } close_trace{trace_file};
  std::mutex trace_mutex;  // one line at a time from every server thread

  std::vector<std::unique_ptr<server::VfioUserServer>> servers;
  std::vector<std::string> sockets;
  for (const auto& device : devices) {
    const std::string socket = (socket_dir / (device->spec().name + ".sock")).string();
    auto served = server::VfioUserServer::create(socket, device->function());
    if (!served) {
      fmt::print(stderr, "vpci serve: device \"{}\": {}\n", device->spec().name,
                 served.error().message);
      return 1;  // servers created so far remove their sockets as they are destroyed
    }
    if (trace_file != nullptr) {
      (*served)->set_trace([trace_file, &trace_mutex, name = device->spec().name](const std::string& line) {
        std::lock_guard lock(trace_mutex);
        fmt::print(trace_file, "[{}] {}\n", name, line);
        if (trace_file == stderr) std::fflush(trace_file);
      });
    }
    if (options.stats) (*served)->enable_stats();
    servers.push_back(std::move(*served));
    sockets.push_back(socket);
  }
  for (auto& served : servers) served->start();

  for (std::size_t i = 0; i < devices.size(); ++i) {
    fmt::print("vpci serve: {} on {}\n", devices[i]->describe(), sockets[i]);
  }
  fmt::print("vpci serve: attach a guest with:\n{}\n", qemu_arguments(sockets));
  fmt::print("vpci serve: ready ({} device(s)); SIGINT or SIGTERM stops\n", devices.size());
  std::fflush(stdout);

  int signal_number = 0;
  sigwait(&shutdown_signals, &signal_number);
  fmt::print("vpci serve: {} received, shutting down\n", strsignal(signal_number));

  int status = 0;
  for (auto& served : servers) served->stop();  // ends every connection
  if (options.stats) {
    for (std::size_t i = 0; i < servers.size(); ++i) print_stats(devices[i]->spec().name, *servers[i]);
  }
  servers.clear();  // removes the socket files
  for (const auto& device : devices) {
    if (auto flushed = device->flush(); !flushed) {
      fmt::print(stderr, "vpci serve: device \"{}\": {}\n", device->spec().name,
                 flushed.error().message);
      status = 1;
    }
  }
  fmt::print("vpci serve: stopped\n");
  return status;
}

void register_serve(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<ServeOptions>();
  CLI::App* serve = app.add_subcommand(
      "serve", "Serve virtio devices to a VMM over vfio-user (QEMU >= 10.1 vfio-user-pci)");
  serve->add_option("config", options->config,
                    "TOML file naming the devices (docs/serve.md); default: a modern "
                    "virtio-rng and a modern virtio-blk on a fresh 64 MiB image");
  serve->add_option("--socket-dir", options->socket_dir,
                    "Directory for the <name>.sock sockets (overrides the file's socket_dir; "
                    "default $XDG_RUNTIME_DIR/vpci or /tmp/vpci-<uid>)");
  serve->add_flag("--check", options->check_only,
                  "Validate the configuration, open the back ends, print the devices and exit");
  serve->add_option("--trace", options->trace,
                    "Write every vfio-user message as one line to FILE (\"-\": stderr)");
  serve->add_flag("--stats", options->stats,
                  "At shutdown, print each device's messages and handling time by command");
  serve->callback([options, &exit_code] { exit_code = run_serve(*options); });
}

VPCI_REGISTER_COMMAND(register_serve);

}  // namespace
}  // namespace vpci::tools
