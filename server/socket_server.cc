#include "server/socket_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <span>
#include <vector>

#include "server/protocol.h"
#include "server/session.h"
#include "server/trace.h"

namespace vpci::server {
namespace {

enum class ReadStatus { kOk, kClosed, kStopped };

// Waits until `fd` is readable or the stop eventfd fires.
ReadStatus wait_readable(int fd, int stop_fd) {
  std::array<pollfd, 2> fds{pollfd{fd, POLLIN, 0}, pollfd{stop_fd, POLLIN, 0}};
  while (true) {
    const int n = ::poll(fds.data(), fds.size(), -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ReadStatus::kClosed;
    if ((fds[1].revents & POLLIN) != 0) return ReadStatus::kStopped;
    if (fds[0].revents != 0) return ReadStatus::kOk;
  }
}

// Reads exactly `length` bytes into `out`, collecting every SCM_RIGHTS fd that arrives
// with them. fds are taken with MSG_CMSG_CLOEXEC and owned at once; if the peer sends
// more than fit, the kernel drops the rest and reports MSG_CTRUNC.
// `poll_first`: wait before the first read. A message's payload is normally in the
// socket already when its header is (the client writes the message at once), so the
// payload is read with MSG_DONTWAIT first and polled for only if it is not: one
// syscall less per message (docs/PERFORMANCE.md, "Real guest").
ReadStatus read_exact(int fd, int stop_fd, std::uint8_t* out, std::size_t length,
                      IncomingMessage& message, bool poll_first) {
  std::size_t done = 0;
  bool must_wait = poll_first;
  while (done < length) {
    if (must_wait) {
      if (const ReadStatus s = wait_readable(fd, stop_fd); s != ReadStatus::kOk) return s;
    }
    must_wait = true;
    iovec iov{out + done, length - done};
    alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * vfio_user::kMaxMsgFds)> control{};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    const ssize_t n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | (poll_first ? 0 : MSG_DONTWAIT));
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    // Take ownership of the fds before anything else so no path leaks them.
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int received = -1;
        std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        message.fds.emplace_back(received);
      }
    }
    if ((msg.msg_flags & MSG_CTRUNC) != 0) message.fds_truncated = true;
    if (n <= 0) return ReadStatus::kClosed;  // EOF mid-message or a socket error
    done += static_cast<std::size_t>(n);
  }
  return ReadStatus::kOk;
}

bool write_all(int fd, const std::vector<std::uint8_t>& bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

// Counters indexed by [command][region slot][posted]; commands and regions past the
// table share its last slot (REGION_READ/WRITE of an unknown region are errors anyway).
struct VfioUserServer::Stats {
  static constexpr std::size_t kCommands = 18;  // 0 to DEVICE_FEATURE (16), other
  static constexpr std::size_t kRegions = 11;   // VFIO PCI regions 0-9 (BARs, ROM, config, VGA), other
  struct Cell {
    std::atomic<std::uint64_t> messages{0};
    std::atomic<std::uint64_t> nanoseconds{0};
  };
  std::array<std::array<std::array<Cell, 2>, kRegions>, kCommands> cells;

  Cell& cell(const vfio_user::Header& header, std::span<const std::uint8_t> message) {
    const std::size_t command = std::min<std::size_t>(header.command, kCommands - 1);
    std::size_t region = 0;
    if ((header.command == vfio_user::kRegionRead || header.command == vfio_user::kRegionWrite) &&
        message.size() >= vfio_user::kHeaderSize + 12) {
      // Payload: offset (u64), region (u32), count (u32) — spec "VFIO_USER_REGION_READ".
      std::uint32_t index = 0;
      std::memcpy(&index, message.data() + vfio_user::kHeaderSize + 8, sizeof(index));
      region = std::min<std::size_t>(index, kRegions - 1);
    }
    const std::size_t posted = (header.flags & vfio_user::kFlagNoReply) != 0 ? 1 : 0;
    return cells[command][region][posted];
  }
};

Result<std::unique_ptr<VfioUserServer>> VfioUserServer::create(std::string socket_path,
                                                               PciFunction& function) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof(addr.sun_path)) {
    return make_error(ErrorCode::kInvalidArgument, "socket path \"{}\" is empty or longer than {} bytes",
                      socket_path, sizeof(addr.sun_path) - 1);
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  struct stat st {};
  if (::lstat(socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return make_error(ErrorCode::kAlreadyExists, "{} exists and is not a socket", socket_path);
    }
    ::unlink(socket_path.c_str());  // stale socket of an earlier run
  }
  UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener.valid()) return make_error(ErrorCode::kIoError, "socket: {}", std::strerror(errno));
  if (::bind(listener.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return make_error(ErrorCode::kIoError, "bind {}: {}", socket_path, std::strerror(errno));
  }
  if (::listen(listener.get(), 4) != 0) {
    return make_error(ErrorCode::kIoError, "listen {}: {}", socket_path, std::strerror(errno));
  }
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC));
  if (!stop.valid()) return make_error(ErrorCode::kIoError, "eventfd: {}", std::strerror(errno));
  return std::unique_ptr<VfioUserServer>(
      new VfioUserServer(std::move(socket_path), function, std::move(listener), std::move(stop)));
}

VfioUserServer::VfioUserServer(std::string socket_path, PciFunction& function, UniqueFd listener,
                               UniqueFd stop)
    : socket_path_(std::move(socket_path)),
      function_(function),
      listener_(std::move(listener)),
      stop_event_(std::move(stop)) {}

VfioUserServer::~VfioUserServer() {
  stop();
  ::unlink(socket_path_.c_str());
}

void VfioUserServer::enable_stats() {
  if (!stats_) stats_ = std::make_unique<Stats>();
}

std::vector<VfioUserServer::StatsRow> VfioUserServer::stats() const {
  std::vector<StatsRow> rows;
  if (!stats_) return rows;
  for (std::size_t command = 0; command < Stats::kCommands; ++command) {
    for (std::size_t region = 0; region < Stats::kRegions; ++region) {
      for (std::size_t posted = 0; posted < 2; ++posted) {
        const Stats::Cell& cell = stats_->cells[command][region][posted];
        const std::uint64_t messages = cell.messages.load(std::memory_order_relaxed);
        if (messages == 0) continue;
        std::string what = command + 1 == Stats::kCommands
                               ? "other"
                               : command_name_of(static_cast<std::uint16_t>(command));
        if (command == vfio_user::kRegionRead || command == vfio_user::kRegionWrite) {
          what += region + 1 == Stats::kRegions ? " region other"
                                                 : " region " + std::to_string(region);
        }
        if (posted != 0) what += " posted";
        rows.push_back(
            StatsRow{std::move(what), messages, cell.nanoseconds.load(std::memory_order_relaxed)});
      }
    }
  }
  return rows;
}

void VfioUserServer::start() {
  if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
}

void VfioUserServer::stop() {
  if (!thread_.joinable()) return;
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(stop_event_.get(), &one, sizeof(one));
  thread_.join();
}

void VfioUserServer::run() {
  while (true) {
    if (wait_readable(listener_.get(), stop_event_.get()) != ReadStatus::kOk) return;
    UniqueFd connection(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!connection.valid()) continue;  // the client gave up before we accepted
    serve(connection.get());
    connections_closed_.fetch_add(1);
    // A stop request ends the connection and the loop: the next wait sees it.
  }
}

void VfioUserServer::serve(int connection) {
  if (trace_) trace_("connected");
  struct TraceDisconnect {
    const TraceSink& sink;
    ~TraceDisconnect() {
      if (sink) sink("disconnected");
    }
  } trace_disconnect{trace_};
  VfioUserSession session(function_);
  struct CountInterrupts {
    std::atomic<std::uint64_t>& total;
    const VfioUserSession& session;
    ~CountInterrupts() { total.fetch_add(session.interrupts_signalled()); }
  } count_interrupts{interrupts_signalled_, session};
  std::uint64_t reported_errors = 0;
  auto account_errors = [&] {
    protocol_errors_.fetch_add(session.error_count() - reported_errors);
    reported_errors = session.error_count();
  };
  while (true) {
    IncomingMessage message;
    message.bytes.resize(vfio_user::kHeaderSize);
    if (read_exact(connection, stop_event_.get(), message.bytes.data(), vfio_user::kHeaderSize,
                   message, /*poll_first=*/true) != ReadStatus::kOk) {
      return;
    }
    const vfio_user::Header header = vfio_user::decode_header(message.bytes);
    // Framing: a size the header cannot describe, or larger than any valid request,
    // leaves no way to find the next message, so the connection ends (spec "Header").
    if (header.message_size < vfio_user::kHeaderSize ||
        header.message_size > vfio_user::kMaxMessageSize) {
      protocol_errors_.fetch_add(1);
      return;
    }
    message.bytes.resize(header.message_size);
    if (read_exact(connection, stop_event_.get(), message.bytes.data() + vfio_user::kHeaderSize,
                   header.message_size - vfio_user::kHeaderSize, message,
                   /*poll_first=*/false) != ReadStatus::kOk) {
      return;  // disconnect mid-message: the session's destructor cleans up
    }
    if (trace_) trace_(describe_request(message.bytes, message.fds.size()));
    Stats::Cell* stats_cell = stats_ ? &stats_->cell(header, message.bytes) : nullptr;
    const auto handling_started = stats_cell != nullptr ? std::chrono::steady_clock::now()
                                                        : std::chrono::steady_clock::time_point{};
    const std::uint64_t errors_before = session.error_count();
    DispatchResult result = session.handle(std::move(message));
    account_errors();
    if (trace_) {
      if (result.reply) {
        trace_(describe_reply(*result.reply, session.last_error()));
      } else if (session.error_count() != errors_before) {
        trace_("-> (no reply sent) error: " + session.last_error());
      }
      if (result.close_connection) trace_("closing: " + session.last_error());
    }
    const bool sent = !result.reply || write_all(connection, *result.reply);
    if (stats_cell != nullptr) {
      const auto spent = std::chrono::steady_clock::now() - handling_started;
      stats_cell->messages.fetch_add(1, std::memory_order_relaxed);
      stats_cell->nanoseconds.fetch_add(
          static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(spent).count()),
          std::memory_order_relaxed);
    }
    if (!sent || result.close_connection) return;
  }
}

}  // namespace vpci::server
