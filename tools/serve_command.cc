// `vpci serve [CONFIG] [--socket-dir DIR] [--check] [--trace FILE] [--stats]`
//
// Runs the devices CONFIG names (server/serve_config.h; docs/serve.md), each on its
// own vfio-user socket <socket_dir>/<name>.sock, until SIGINT or SIGTERM. Without
// CONFIG it serves the default pair — a modern virtio-rng and a modern virtio-blk on
// a fresh 64 MiB image in the socket directory — and prints the QEMU arguments that
// attach a guest to them.
//
// Another server is never disturbed: every image is locked while it is served
// (server/image_lock.h; the default image is locked before it is emptied), and a
// socket path is taken over only when nothing listens on it (server/socket_server.h).
//
// Start-up and signals: reading and checking the configuration (a FIFO may trickle for
// as long as its writer likes) and --check create nothing, so SIGINT and SIGTERM keep
// their default action there and end the process at once. Just before the first
// directory, image or socket is created they are blocked — in every thread, as the
// server threads start later and inherit the mask — and the start-up looks for a
// pending one after every step; one that came removes what this start created and ends
// the process by that signal. Once ready, sigwait() in the main thread takes them, so
// no handler runs inside the servers: the servers stop (ending any connection, which
// resets the devices and drops guest memory), the images are synced and this process's
// socket files removed before exit.
//
// --trace FILE writes every vfio-user message of every device as one line (server/
// trace.h), prefixed by the device name; --stats prints, at shutdown, each device's
// messages and server-side time by command and the interrupts it signalled
// (docs/PERFORMANCE.md uses both to profile a real guest).
#include <fcntl.h>
#include <signal.h>
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
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sys/mman.h>
#include <sys/stat.h>

#include "server/image_lock.h"
#include "server/serve_config.h"
#include "server/served_device.h"
#include "server/socket_server.h"
#include "server/unique_fd.h"
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
  fmt::print(
      "vpci serve: stats {}: {} messages, {:.3f} s handling ({:.2f} us each), {} interrupts "
      "signalled\n",
      name, messages, static_cast<double>(nanoseconds) / 1e9, per_message_us(nanoseconds, messages),
      served.interrupts_signalled());
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.messages > b.messages; });
  for (const auto& row : rows) {
    fmt::print("vpci serve: stats {}:   {:<32} {:>10} messages {:>10.3f} s {:>8.2f} us each\n",
               name, row.what, row.messages, static_cast<double>(row.nanoseconds) / 1e9,
               per_message_us(row.nanoseconds, row.messages));
  }
}

// $XDG_RUNTIME_DIR/vpci when the session has one (private to the user), else
// /tmp/vpci-<uid>.
std::filesystem::path default_socket_dir() {
  // getenv is not thread-safe against setenv; this runs before any thread starts.
  // NOLINTNEXTLINE(concurrency-mt-unsafe)
  if (const char* runtime = std::getenv("XDG_RUNTIME_DIR"); runtime != nullptr && *runtime != 0) {
    return std::filesystem::path(runtime) / "vpci";
  }
  return std::filesystem::temp_directory_path() / fmt::format("vpci-{}", ::getuid());
}

// `path` made absolute, without "." components; ".." stays (lexically dropping it
// would be wrong under a symbolic link).
Result<std::filesystem::path> absolute_path(const std::filesystem::path& path) {
  std::error_code ec;
  const std::filesystem::path absolute = std::filesystem::absolute(path, ec);
  if (ec) {
    return make_error(ErrorCode::kIoError, "cannot make {} absolute: {}", path.string(),
                      ec.message());
  }
  std::filesystem::path out;
  for (const auto& part : absolute) {
    if (part != ".") out /= part;
  }
  return out;
}

// Creates the socket directory itself, never its parents: a typo in a parent should
// be an error, not a new tree. `created` says whether it did.
Status make_socket_dir(const std::filesystem::path& dir, bool& created) {
  created = false;
  if (::mkdir(dir.c_str(), 0777) == 0) {
    created = true;
    return {};
  }
  const int saved = errno;
  if (saved == ENOENT) {
    return make_error(ErrorCode::kNotFound,
                      "cannot create socket directory {}: {} does not exist (only the last "
                      "component is created)",
                      dir.string(), dir.parent_path().string());
  }
  if (saved != EEXIST) {
    return make_error(ErrorCode::kIoError, "cannot create socket directory {}: {}", dir.string(),
                      errno_text(saved));
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return make_error(ErrorCode::kInvalidArgument, "socket directory {} is not a directory",
                      dir.string());
  }
  return {};
}

// For --check of the default devices: an anonymous 64 MiB file standing in for the
// fresh image a start would make, so the check creates nothing on disk.
Result<server::UniqueFd> anonymous_image(std::uint64_t bytes) {
  server::UniqueFd fd(::memfd_create("vpci-serve-check", MFD_CLOEXEC));
  if (!fd.valid() || ::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) {
    return make_error(ErrorCode::kIoError, "cannot make a {}-byte stand-in image: {}", bytes,
                      errno_text(errno));
  }
  return fd;
}

// What this start created on disk, removed again unless the server became ready (then
// the default image and the directory stay, as after every run). The directory is
// removed only if empty, so nothing anyone else put there is lost.
struct CreatedPaths {
  std::filesystem::path dir;    // empty: it existed already
  std::filesystem::path image;  // empty: not created by this start
  bool keep = false;
  CreatedPaths() = default;
  CreatedPaths(const CreatedPaths&) = delete;
  CreatedPaths& operator=(const CreatedPaths&) = delete;
  ~CreatedPaths() {
    if (keep) return;
    if (!image.empty()) ::unlink(image.c_str());
    if (!dir.empty()) ::rmdir(dir.c_str());
  }
};

// SIGINT and SIGTERM, blocked once the start-up begins to create things (see the top of
// this file).
class ShutdownSignals {
 public:
  ShutdownSignals() {
    (void)sigemptyset(&set_);
    (void)sigaddset(&set_, SIGINT);
    (void)sigaddset(&set_, SIGTERM);
  }
  // Before any server thread exists, so every thread inherits the mask and only
  // pending()/wait() see the signals.
  void block() { (void)pthread_sigmask(SIG_BLOCK, &set_, nullptr); }
  // Takes a signal that arrived since block(); 0 if none did.
  int pending() {
    const timespec now{};
    const int signal_number = sigtimedwait(&set_, nullptr, &now);
    return signal_number > 0 ? signal_number : 0;
  }
  int wait() {
    int signal_number = 0;
    sigwait(&set_, &signal_number);
    return signal_number;
  }

 private:
  sigset_t set_{};
};

// Ends the process by `signal_number` with its default action, so the parent sees
// which signal stopped the start-up (as it would have earlier, before blocking).
[[noreturn]] void end_by_signal(int signal_number) {
  (void)std::fflush(stdout);
  (void)std::fflush(stderr);
  struct sigaction action {};
  action.sa_handler = SIG_DFL;
  // None of these can fail for a valid signal number; there is nothing to do if they did.
  (void)sigemptyset(&action.sa_mask);
  (void)sigaction(signal_number, &action, nullptr);
  sigset_t only;
  (void)sigemptyset(&only);
  (void)sigaddset(&only, signal_number);
  (void)pthread_sigmask(SIG_UNBLOCK, &only, nullptr);
  (void)::raise(signal_number);
  std::_Exit(128 + signal_number);  // not reached: the default action terminates
}

// The trace file, opened without waiting: the signals are blocked by then, and a FIFO
// with no reader would otherwise hold the start-up forever.
Result<std::FILE*> open_trace(const std::string& trace) {
  if (trace.empty()) return nullptr;
  if (trace == "-") return stderr;
  const int fd = ::open(trace.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NONBLOCK | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int saved = errno;
    return make_error(ErrorCode::kIoError, "cannot open trace file {}: {}{}", trace,
                      errno_text(saved), saved == ENXIO ? " (a FIFO nobody reads?)" : "");
  }
  if (const int flags = ::fcntl(fd, F_GETFL); flags >= 0) {
    (void)::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);  // writes to a FIFO may block
  }
  std::FILE* file = ::fdopen(fd, "w");
  if (file == nullptr) {
    const int saved = errno;
    ::close(fd);
    return make_error(ErrorCode::kIoError, "cannot open trace file {}: {}", trace,
                      errno_text(saved));
  }
  return file;
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

// What to serve and where. Socket paths are absolute, so the QEMU arguments printed
// work from any directory.
struct Plan {
  server::ServeConfig config;
  std::filesystem::path socket_dir;
  // The default devices: blk0's image <socket_dir>/blk0.img is made fresh by the start
  // (and stood in for by an anonymous file under --check).
  bool defaults = false;
  std::filesystem::path default_image;
};

// Reads and checks the configuration; creates nothing.
Result<Plan> make_plan(const ServeOptions& options) {
  Plan plan;
  std::filesystem::path dir = options.socket_dir;
  if (!options.config.empty()) {
    VPCI_ASSIGN_OR_RETURN(plan.config, server::load_serve_config(options.config));
    if (dir.empty() && plan.config.socket_dir) dir = *plan.config.socket_dir;
  }
  if (dir.empty()) dir = default_socket_dir();
  VPCI_ASSIGN_OR_RETURN(plan.socket_dir, absolute_path(dir));
  if (options.config.empty()) {
    plan.defaults = true;
    plan.default_image = plan.socket_dir / "blk0.img";
    // check_files = false: the image exists only once the start has made it.
    VPCI_ASSIGN_OR_RETURN(plan.config, server::parse_serve_config(
                                           server::default_serve_config_text(plan.default_image),
                                           "<default>", plan.socket_dir,
                                           /*check_files=*/false));
  }
  return plan;
}

Result<std::unique_ptr<server::ServedDevice>> create_device(const Plan& plan,
                                                            const server::ServedDeviceSpec& spec,
                                                            server::UniqueFd image) {
  auto device = server::ServedDevice::create(spec, std::move(image));
  if (!device) {
    return make_error(device.error().code, "{}:{}: device \"{}\": {}", plan.config.source,
                      spec.line, spec.name, device.error().message);
  }
  return device;
}

// --check: builds every device, opening (and locking, then releasing) its back end,
// and creates nothing: the default image is only tested for a lock and stood in for.
int check_serve(const Plan& plan) {
  server::UniqueFd image;
  if (plan.defaults) {
    auto stand_in = server::check_image_lockable(plan.default_image).and_then([] {
      return anonymous_image(server::kDefaultImageBytes);
    });
    if (!stand_in) {
      fmt::print(stderr, "vpci serve: {}\n", stand_in.error().message);
      return 1;
    }
    image = std::move(*stand_in);
  }
  std::vector<std::unique_ptr<server::ServedDevice>> devices;
  for (const server::ServedDeviceSpec& spec : plan.config.devices) {
    const bool takes_image = plan.defaults && spec.kind == server::DeviceKind::kVirtioBlk;
    auto device = create_device(
        plan, spec, takes_image ? std::exchange(image, server::UniqueFd()) : server::UniqueFd());
    if (!device) {
      fmt::print(stderr, "vpci serve: {}\n", device.error().message);
      return 1;
    }
    devices.push_back(std::move(*device));
  }
  fmt::print("{}: {} device(s) OK\n", plan.config.source, devices.size());
  for (const auto& device : devices) fmt::print("  {}\n", device->describe());
  return 0;
}

// Serves until SIGINT/SIGTERM. A signal that comes before "ready" sets `interrupted_by`
// (the caller ends the process by it once everything here is undone).
int run_serve(const ServeOptions& options, int& interrupted_by) {
  auto plan = make_plan(options);
  if (!plan) {
    fmt::print(stderr, "vpci serve: {}\n", plan.error().message);
    return 1;
  }
  if (options.check_only) return check_serve(*plan);

  ShutdownSignals signals;
  signals.block();  // from here on the start-up creates things it must undo
  const auto signalled = [&] {
    interrupted_by = signals.pending();
    if (interrupted_by != 0) {
      fmt::print(stderr, "vpci serve: {} while starting; removing what it created\n",
                 ::sigdescr_np(interrupted_by));
    }
    return interrupted_by != 0;
  };
  const auto fail = [](const Error& error) {
    fmt::print(stderr, "vpci serve: {}\n", error.message);
    return 1;
  };

  // Destroyed in reverse: the servers (removing their sockets), then what this start
  // created (the default image is unlinked while its device still holds the lock), then
  // the devices.
  std::vector<std::unique_ptr<server::ServedDevice>> devices;
  server::UniqueFd default_image;
  CreatedPaths created;
  std::vector<std::unique_ptr<server::VfioUserServer>> servers;

  bool dir_created = false;
  const auto make_dir = [&]() -> Status {
    VPCI_TRY(make_socket_dir(plan->socket_dir, dir_created));
    if (dir_created) created.dir = plan->socket_dir;
    return {};
  };
  if (plan->defaults) {  // the default image lives in the socket directory
    if (auto made = make_dir(); !made) return fail(made.error());
    if (signalled()) return 1;
    bool image_created = false;
    auto image =
        server::open_fresh_image(plan->default_image, server::kDefaultImageBytes, image_created);
    if (image_created) created.image = plan->default_image;
    if (!image) return fail(image.error());
    default_image = std::move(*image);
    if (signalled()) return 1;
  }
  for (const server::ServedDeviceSpec& spec : plan->config.devices) {
    const bool takes_image = plan->defaults && spec.kind == server::DeviceKind::kVirtioBlk;
    auto device = create_device(
        *plan, spec,
        takes_image ? std::exchange(default_image, server::UniqueFd()) : server::UniqueFd());
    if (!device) return fail(device.error());
    devices.push_back(std::move(*device));
    if (signalled()) return 1;
  }
  if (!plan->defaults) {
    if (auto made = make_dir(); !made) return fail(made.error());
    if (signalled()) return 1;
  }

  std::vector<std::string> sockets;
  for (const auto& device : devices) {
    const std::string socket = (plan->socket_dir / (device->spec().name + ".sock")).string();
    auto served =
        server::VfioUserServer::create(socket, device->function(), device->guest_memory());
    if (!served) {
      fmt::print(stderr, "vpci serve: device \"{}\": {}\n", device->spec().name,
                 served.error().message);
      return 1;  // servers created so far remove their sockets as they are destroyed
    }
    servers.push_back(std::move(*served));
    sockets.push_back(socket);
    if (signalled()) return 1;
  }

  auto trace_file = open_trace(options.trace);
  if (!trace_file) return fail(trace_file.error());
  struct CloseTrace {
    std::FILE* file;
    ~CloseTrace() {
      if (file != nullptr && file != stderr) (void)std::fclose(file);
    }
  } close_trace{*trace_file};
  std::mutex trace_mutex;  // one line at a time from every server thread
  for (std::size_t i = 0; i < servers.size(); ++i) {
    if (*trace_file != nullptr) {
      auto sink = [trace_file = *trace_file, &trace_mutex,
                   name = devices[i]->spec().name](const std::string& line) {
        std::lock_guard lock(trace_mutex);
        fmt::print(trace_file, "[{}] {}\n", name, line);
        if (trace_file == stderr) (void)std::fflush(trace_file);
      };
      servers[i]->set_trace(sink);
      devices[i]->set_admin_trace(sink);
    }
    if (options.stats) servers[i]->enable_stats();
  }
  if (signalled()) return 1;
  for (auto& served : servers) served->start();
  created.keep = true;

  for (std::size_t i = 0; i < devices.size(); ++i) {
    fmt::print("vpci serve: {} on {}\n", devices[i]->describe(), sockets[i]);
  }
  fmt::print("vpci serve: attach a guest with:\n{}\n", qemu_arguments(sockets));
  fmt::print("vpci serve: ready ({} device(s)); SIGINT or SIGTERM stops\n", devices.size());
  (void)std::fflush(stdout);

  const int signal_number = signals.wait();
  fmt::print("vpci serve: {} received, shutting down\n", ::sigdescr_np(signal_number));

  int status = 0;
  for (auto& served : servers) served->stop();  // ends every connection
  if (options.stats) {
    for (std::size_t i = 0; i < servers.size(); ++i) {
      print_stats(devices[i]->spec().name, *servers[i]);
      for (const auto& line : devices[i]->device_stats())
        fmt::print("vpci serve: stats {}: {}\n", devices[i]->spec().name, line);
    }
  }
  servers.clear();  // removes the socket files this process bound
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
                    "default $XDG_RUNTIME_DIR/vpci or /tmp/vpci-<uid>); created if missing, "
                    "but not its parents");
  serve->add_flag("--check", options->check_only,
                  "Validate the configuration, open the back ends, print the devices and exit, "
                  "creating nothing");
  serve->add_option("--trace", options->trace,
                    "Write every vfio-user message as one line to FILE (\"-\": stderr)");
  serve->add_flag("--stats", options->stats,
                  "At shutdown, print each device's messages and handling time by command");
  serve->callback([options, &exit_code] {
    int interrupted_by = 0;
    exit_code = run_serve(*options, interrupted_by);
    if (interrupted_by != 0) end_by_signal(interrupted_by);
  });
}

VPCI_REGISTER_COMMAND(register_serve);

}  // namespace
}  // namespace vpci::tools
