#include "server/socket_server.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <optional>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "server/connection.h"
#include "server/protocol.h"
#include "server/session.h"
#include "server/trace.h"

namespace vpci::server {
namespace {

// An exclusive flock on the directory of a socket path, for the time it takes to
// probe, replace and bind (or remove) that socket, so vpci processes do not race each
// other over one path. Waits at most ~2 s for another holder; without the lock (a
// directory we cannot open, a holder that never lets go) the probe still protects a
// listening server, only not against that narrow race.
class DirectoryLock {
 public:
  explicit DirectoryLock(const std::string& socket_path) {
    const std::string dir = std::filesystem::path(socket_path).parent_path().string();
    fd_.reset(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd_.valid()) return;
    for (int attempt = 0; attempt < 200; ++attempt) {
      if (::flock(fd_.get(), LOCK_EX | LOCK_NB) == 0) return;
      if (errno != EWOULDBLOCK && errno != EINTR) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    fd_.reset();
  }
  // Closing the descriptor releases the lock.

 private:
  UniqueFd fd_;
};

// An existing socket file is stale (its server is gone) when nothing accepts a
// connection on it; a listening socket belongs to a running server and is left alone.
// The probe connection, if it gets through, is closed at once: the server accepts it
// after its current client (if any) and sees an empty session.
Status check_socket_stale(const sockaddr_un& addr, const std::string& socket_path) {
  UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!probe.valid()) return make_error(ErrorCode::kIoError, "socket: {}", errno_text(errno));
  int rc = -1;
  do {
    rc = ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0 && (errno == ECONNREFUSED || errno == ENOENT)) return {};  // stale or gone
  if (rc == 0 || errno == EAGAIN || errno == EINPROGRESS) {
    // EAGAIN: the listen backlog is full, which only a live listener has.
    return make_error(ErrorCode::kConflict, "socket {} is in use by a running server", socket_path);
  }
  return make_error(ErrorCode::kIoError, "cannot tell whether socket {} is in use: {}", socket_path,
                    errno_text(errno));
}

// Unlinks `socket_path` if it is still the socket this process bound.
void remove_if_ours(const std::string& socket_path, const BoundSocket& bound) {
  struct stat st {};
  if (::lstat(socket_path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode) || st.st_dev != bound.dev ||
      st.st_ino != bound.ino) {
    return;
  }
  ::unlink(socket_path.c_str());
}

}  // namespace

// Counters indexed by [command][region slot][posted]; commands and regions past the
// table share its last slot (REGION_READ/WRITE of an unknown region are errors anyway).
struct VfioUserServer::Stats {
  static constexpr std::size_t kCommands = 18;  // 0 to DEVICE_FEATURE (16), other
  static constexpr std::size_t kRegions =
      11;  // VFIO PCI regions 0-9 (BARs, ROM, config, VGA), other
  struct Cell {
    std::atomic<std::uint64_t> messages{0};
    std::atomic<std::uint64_t> nanoseconds{0};
  };
  std::array<std::array<std::array<Cell, 2>, kRegions>, kCommands> cells;

  Cell& cell(std::span<const std::uint8_t> message) {
    const vfio_user::Header header =
        vfio_user::decode_header(message.subspan(0, vfio_user::kHeaderSize));
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
          what +=
              region + 1 == Stats::kRegions ? " region other" : " region " + std::to_string(region);
        }
        if (posted != 0) what += " posted";
        rows.push_back(
            StatsRow{std::move(what), messages, cell.nanoseconds.load(std::memory_order_relaxed)});
      }
    }
  }
  return rows;
}

Result<std::unique_ptr<VfioUserServer>> VfioUserServer::create(
    std::string socket_path, pci::Function& function, std::shared_ptr<virtio::GuestMemory> memory) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof(addr.sun_path)) {
    return make_error(ErrorCode::kInvalidArgument,
                      "socket path \"{}\" is empty or longer than {} bytes", socket_path,
                      sizeof(addr.sun_path) - 1);
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  // Probe, replace, bind and listen as one step against other vpci processes doing the
  // same in this directory: otherwise two servers starting together could both find
  // a stale socket, and the second would unlink the one the first just bound.
  const DirectoryLock directory_lock(socket_path);
  struct stat st {};
  if (::lstat(socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return make_error(ErrorCode::kAlreadyExists, "{} exists and is not a socket", socket_path);
    }
    VPCI_TRY(check_socket_stale(addr, socket_path));
    ::unlink(socket_path.c_str());  // stale socket of an earlier run
  }
  UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener.valid()) return make_error(ErrorCode::kIoError, "socket: {}", errno_text(errno));
  if (::bind(listener.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return make_error(ErrorCode::kIoError, "bind {}: {}", socket_path, errno_text(errno));
  }
  // From here on the file is ours: remember which inode it is, so that the destructor
  // removes this socket and never one that replaced it.
  struct stat bound {};
  if (::lstat(socket_path.c_str(), &bound) != 0) {
    return make_error(ErrorCode::kIoError, "stat {}: {}", socket_path, errno_text(errno));
  }
  const BoundSocket identity{bound.st_dev, bound.st_ino};
  if (::listen(listener.get(), 4) != 0) {
    const int saved = errno;
    remove_if_ours(socket_path, identity);
    return make_error(ErrorCode::kIoError, "listen {}: {}", socket_path, errno_text(saved));
  }
  auto loop = EventLoop::create();
  if (!loop) {
    remove_if_ours(socket_path, identity);
    return tl::unexpected(loop.error());
  }
  function.set_event_loop(loop->get());
  return std::unique_ptr<VfioUserServer>(new VfioUserServer(std::move(socket_path), function,
                                                            std::move(memory), std::move(listener),
                                                            std::move(*loop), identity));
}

// One connected client: its socket, the channel and session over it, and the buffers
// the serve step reuses.
struct VfioUserServer::Client {
  UniqueFd fd;
  std::unique_ptr<Connection> channel;
  std::unique_ptr<VfioUserSession> session;
  EventLoop::SourceId source = 0;
  std::uint64_t reported_errors = 0;
  std::vector<UniqueFd> fds;
  std::vector<std::uint8_t> reply;
  Connection::Queued current;
};

VfioUserServer::VfioUserServer(std::string socket_path, pci::Function& function,
                               std::shared_ptr<virtio::GuestMemory> memory, UniqueFd listener,
                               std::unique_ptr<EventLoop> loop, BoundSocket bound)
    : socket_path_(std::move(socket_path)),
      function_(function),
      memory_(std::move(memory)),
      listener_(std::move(listener)),
      loop_(std::move(loop)),
      bound_(bound) {}

VfioUserServer::~VfioUserServer() {
  stop();
  function_.set_event_loop(nullptr);
  const DirectoryLock directory_lock(socket_path_);
  remove_if_ours(socket_path_, bound_);
}

void VfioUserServer::start() {
  if (thread_.joinable()) return;
  listen_for_client();
  thread_ = std::thread([this] { loop_->run(); });
}

void VfioUserServer::stop() {
  if (!thread_.joinable()) return;
  {
    // The connection is read with blocking recvmsg (no poll per message); shutting it
    // down makes that recvmsg (or a send blocked on a client that stopped reading)
    // return at once. The lock keeps the fd from being closed and reused meanwhile.
    const std::lock_guard lock(connection_mutex_);
    stopping_ = true;
    if (connection_ >= 0) ::shutdown(connection_, SHUT_RDWR);
  }
  loop_->post([this] {
    if (client_) end_client();
    loop_->stop();
  });
  thread_.join();
}

void VfioUserServer::listen_for_client() {
  // One client at a time (QEMU attaches one proxy per device): later ones wait in the
  // listen backlog until the current one is gone.
  auto source = loop_->add_fd(listener_.get(), EPOLLIN, [this](std::uint32_t) { accept_client(); });
  listener_source_ = source ? *source : 0;
}

void VfioUserServer::accept_client() {
  UniqueFd connection(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!connection.valid()) return;  // the client gave up before we accepted
  {
    const std::lock_guard lock(connection_mutex_);
    if (stopping_) return;
    connection_ = connection.get();
  }
  loop_->remove_fd(listener_source_);
  if (trace_) trace_("connected");
  client_ = std::make_unique<Client>();
  Client& client = *client_;
  client.fd = std::move(connection);
  // The channel outlives the session (the session stops using it in its destructor).
  client.channel = std::make_unique<Connection>(client.fd.get(), dma_timeout_, trace_);
  client.session = std::make_unique<VfioUserSession>(function_, memory_, socket_path_);
  client.session->set_client_channel(client.channel.get());
  client.channel->set_nested_handler(
      [this](std::span<const std::uint8_t> message, std::vector<UniqueFd>& fds, bool truncated) {
        // Its own reply buffer: the commands it is nested in are still building theirs.
        std::vector<std::uint8_t> reply;
        return handle_one(message, fds, truncated, reply);
      });
  client.channel->set_exchange_done_hook([this] {
    loop_->defer([this] {
      if (client_) serve(/*socket_ready=*/false);
    });
  });
  auto source = loop_->add_fd(client.fd.get(), EPOLLIN, [this](std::uint32_t) { serve(true); });
  if (!source) {
    end_client();
    return;
  }
  client.source = *source;
}

void VfioUserServer::end_client() {
  Client& client = *client_;
  loop_->remove_fd(client.source);
  interrupts_signalled_.fetch_add(client.session->interrupts_signalled());
  dma_requests_sent_.fetch_add(client.session->dma_requests_sent());
  // Resets the function, releases every DMA map and eventfd (session.h).
  client.session.reset();
  client.channel.reset();
  bool stopping = false;
  {
    const std::lock_guard lock(connection_mutex_);
    connection_ = -1;
    client.fd.reset();
    stopping = stopping_;
  }
  client_.reset();
  if (trace_) trace_("disconnected");
  connections_closed_.fetch_add(1);
  if (!stopping) listen_for_client();
}

bool VfioUserServer::handle_one(std::span<const std::uint8_t> message, std::vector<UniqueFd>& fds,
                                bool fds_truncated, std::vector<std::uint8_t>& reply) {
  VfioUserSession& session = *client_->session;
  if (trace_) trace_(describe_request(message, fds.size()));
  Stats::Cell* stats_cell = stats_ ? &stats_->cell(message) : nullptr;
  const auto handling_started = stats_cell != nullptr ? std::chrono::steady_clock::now()
                                                      : std::chrono::steady_clock::time_point{};
  const std::uint64_t errors_before = session.error_count();
  const auto disposition = session.handle(message, fds, fds_truncated, reply);
  if (session.error_count() != client_->reported_errors) {
    protocol_errors_.fetch_add(session.error_count() - client_->reported_errors);
    client_->reported_errors = session.error_count();
  }
  if (trace_) {
    if (disposition == VfioUserSession::Disposition::kReply) {
      trace_(describe_reply(reply, session.last_error()));
    } else if (session.error_count() != errors_before) {
      trace_("-> (no reply sent) error: " + session.last_error());
    }
    if (disposition == VfioUserSession::Disposition::kClose)
      trace_("closing: " + session.last_error());
  }
  const bool sent = disposition != VfioUserSession::Disposition::kReply ||
                    write_all_with_fd(client_->fd.get(), reply, session.reply_fd());
  if (stats_cell != nullptr) {
    const auto spent = std::chrono::steady_clock::now() - handling_started;
    stats_cell->messages.fetch_add(1, std::memory_order_relaxed);
    stats_cell->nanoseconds.fetch_add(
        static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(spent).count()),
        std::memory_order_relaxed);
  }
  return disposition != VfioUserSession::Disposition::kClose && sent;
}

// Serves every whole message there is — the one the socket signalled (`socket_ready`),
// those already buffered with it (the socket will not report them again), commands
// queued during a DMA wait — and returns to the loop. Also run, without reading the
// socket, after a DMA exchange that may have left such messages behind.
void VfioUserServer::serve(bool socket_ready) {
  Client& client = *client_;
  MessageReader& reader = client.channel->reader();
  while (true) {
    reader.release_parked();
    std::span<const std::uint8_t> message;
    bool fds_truncated = false;
    if (!client.channel->queue().empty()) {
      // Commands that arrived while a DMA reply was awaited, in arrival order.
      client.current = std::move(client.channel->queue().front());
      client.channel->queue().pop_front();
      message = client.current.bytes;
      client.fds = std::move(client.current.fds);
      fds_truncated = client.current.fds_truncated;
    } else if (socket_ready || reader.has_buffered_message()) {
      socket_ready = false;
      switch (reader.next(client.fd.get(), message, client.fds, fds_truncated)) {
        case MessageReader::Status::kMessage: break;
        case MessageReader::Status::kTooLarge:
          protocol_errors_.fetch_add(1);
          end_client();
          return;
        case MessageReader::Status::kTimedOut:  // no deadline here
        case MessageReader::Status::kClosed: end_client(); return;
      }
      const vfio_user::Header header = vfio_user::decode_header(message);
      if ((header.flags & vfio_user::kFlagTypeMask) == vfio_user::kTypeReply &&
          client.channel->abandoned(header.msg_id)) {
        // A DMA reply that came after its request timed out (server/message_dma.h).
        if (trace_)
          trace_(fmt::format("dropping a late reply to server request #{}", header.msg_id));
        continue;
      }
    } else {
      return;
    }
    if (!handle_one(message, client.fds, fds_truncated, client.reply)) {
      end_client();
      return;
    }
    // A rare large REGION_READ grew the reply buffer; do not keep that per connection.
    if (client.reply.capacity() > std::size_t{64} * 1024) {
      client.reply.clear();
      client.reply.shrink_to_fit();
    }
  }
}

}  // namespace vpci::server
