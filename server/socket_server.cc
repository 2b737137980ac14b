#include "server/socket_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <deque>
#include <functional>
#include <filesystem>
#include <optional>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include <fmt/format.h>

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
  if (!probe.valid()) return make_error(ErrorCode::kIoError, "socket: {}", std::strerror(errno));
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
                    std::strerror(errno));
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

// The receiving half of one connection: reads as much as the socket holds with one
// recvmsg into a reused buffer and cuts whole messages out of it, so a request costs
// one recvmsg (not header + payload) and a burst of posted writes one recvmsg for
// many messages.
//
// File descriptors: SCM_RIGHTS fds belong to the message that contains the last byte
// of the recvmsg that returned them. Linux ends a stream recvmsg right after the
// segment that carried fds (af_unix stream reads stop once fds were collected), and
// that segment starts the sendmsg the fds were sent with; a client sending one
// message per sendmsg (QEMU does) therefore gets its fds attached to that message,
// exactly as when the header and payload were read separately.
//
// Nested reads: while a command is being handled it may need a DMA reply from the
// client (ClientChannel), so the reader must read on while the handler still views that
// command in buffer_. detach_current() moves the whole buffer aside (parked_: the
// vector's heap block, and so the view, stay put) and continues in a fresh buffer with
// the bytes after the command; release_parked() drops it once the command is done.
// Only the DMA path pays for this.
class MessageReader {
 public:
  enum class Status { kMessage, kClosed, kTooLarge, kTimedOut };
  using Clock = std::chrono::steady_clock;

  // Blocks until one whole message is buffered (or `deadline`, if given, passes);
  // `message` then views it (valid until the next call) and `fds` holds the
  // descriptors that belong to it.
  Status next(int fd, std::span<const std::uint8_t>& message, std::vector<UniqueFd>& fds,
              bool& fds_truncated, std::optional<Clock::time_point> deadline = std::nullopt) {
    consume_previous();
    while (true) {
      const std::size_t available = end_ - begin_;
      if (available >= vfio_user::kHeaderSize) {
        const vfio_user::Header header = vfio_user::decode_header(
            std::span<const std::uint8_t>(buffer_.data() + begin_, vfio_user::kHeaderSize));
        // Framing: a size the header cannot describe, or larger than any valid request,
        // leaves no way to find the next message, so the connection ends (spec "Header").
        if (header.message_size < vfio_user::kHeaderSize ||
            header.message_size > vfio_user::kMaxMessageSize) {
          return Status::kTooLarge;
        }
        if (available >= header.message_size) {
          message = std::span<const std::uint8_t>(buffer_.data() + begin_, header.message_size);
          take_fds(stream_offset_ + header.message_size, fds, fds_truncated);
          pending_consume_ = header.message_size;
          return Status::kMessage;
        }
        make_room(header.message_size);
      } else {
        make_room(vfio_user::kHeaderSize);
      }
      if (deadline && !wait_until(fd, *deadline)) return Status::kTimedOut;
      if (!receive(fd)) return Status::kClosed;  // EOF (maybe mid-message) or an error
    }
  }

  // The message last returned stays valid (parked) while reading continues.
  void detach_current() {
    if (pending_consume_ == 0) return;
    if (parked_valid_) {
      // The command being handled is parked already; what is viewed now is a nested
      // message that has been dealt with.
      consume_previous();
      return;
    }
    const std::size_t rest_begin = begin_ + pending_consume_;
    std::vector<std::uint8_t> fresh(std::max(kInitialSize, end_ - rest_begin));
    std::memcpy(fresh.data(), buffer_.data() + rest_begin, end_ - rest_begin);
    stream_offset_ += pending_consume_;
    end_ -= rest_begin;
    begin_ = 0;
    pending_consume_ = 0;
    parked_ = std::move(buffer_);
    buffer_ = std::move(fresh);
    parked_valid_ = true;
  }
  // The command that was being handled is finished.
  void release_parked() {
    if (!parked_valid_) return;
    std::vector<std::uint8_t>().swap(parked_);
    parked_valid_ = false;
  }
  // The nested message last returned has been copied out.
  void consume_current() { consume_previous(); }

 private:
  // Waits for `fd` to become readable; false once `deadline` has passed.
  static bool wait_until(int fd, Clock::time_point deadline) {
    while (true) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd, POLLIN, 0};
      const int n = ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left.count(), 60000)));
      if (n < 0 && errno == EINTR) continue;
      if (n != 0) return true;  // readable, hung up or an error: recvmsg tells which
    }
  }

  static constexpr std::size_t kInitialSize = 4 * 1024;
  static constexpr std::size_t kKeepSize = 64 * 1024;

  struct ReceivedFds {
    std::uint64_t last_byte;  // stream offset of the last byte received with them
    std::vector<UniqueFd> fds;
    bool truncated;
  };

  void consume_previous() {
    begin_ += pending_consume_;
    stream_offset_ += pending_consume_;
    pending_consume_ = 0;
    if (begin_ == end_) {
      begin_ = end_ = 0;
      // A rare large message grew the buffer; give the memory back once it is gone.
      if (buffer_.size() > kKeepSize) {
        buffer_.resize(kInitialSize);
        buffer_.shrink_to_fit();
      }
    }
  }

  // Ensures the buffer can hold `message_size` bytes from begin_.
  void make_room(std::size_t message_size) {
    if (buffer_.size() < kInitialSize) buffer_.resize(kInitialSize);
    if (begin_ + message_size <= buffer_.size() && end_ < buffer_.size()) return;
    if (begin_ > 0) {
      std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    if (buffer_.size() < message_size) buffer_.resize(message_size);
  }

  // Moves the fds of the message ending before stream offset `message_end` to `fds`.
  void take_fds(std::uint64_t message_end, std::vector<UniqueFd>& fds, bool& truncated) {
    fds.clear();
    truncated = false;
    while (!received_fds_.empty() && received_fds_.front().last_byte < message_end) {
      ReceivedFds& front = received_fds_.front();
      for (UniqueFd& received : front.fds) fds.push_back(std::move(received));
      truncated = truncated || front.truncated;
      received_fds_.erase(received_fds_.begin());
    }
  }

  bool receive(int fd) {
    while (true) {
      iovec iov{buffer_.data() + end_, buffer_.size() - end_};
      alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * vfio_user::kMaxMsgFds)> control;
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control.data();
      msg.msg_controllen = control.size();
      const ssize_t n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
      if (n < 0 && errno == EINTR) continue;
      // Take ownership of the fds before anything else so no path leaks them.
      ReceivedFds received{stream_offset_ + (end_ - begin_) + (n > 0 ? n - 1 : 0), {},
                           (msg.msg_flags & MSG_CTRUNC) != 0};
      if (n >= 0) {
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
          if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
          const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
          for (std::size_t i = 0; i < count; ++i) {
            int fd_received = -1;
            std::memcpy(&fd_received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            received.fds.emplace_back(fd_received);
          }
        }
      }
      if (n <= 0) return false;
      if (!received.fds.empty() || received.truncated) received_fds_.push_back(std::move(received));
      end_ += static_cast<std::size_t>(n);
      return true;
    }
  }

  std::vector<std::uint8_t> buffer_;
  std::size_t begin_ = 0;  // first unconsumed byte
  std::size_t end_ = 0;    // one past the last received byte
  std::size_t pending_consume_ = 0;
  std::uint64_t stream_offset_ = 0;  // stream offset of buffer_[begin_]
  std::vector<ReceivedFds> received_fds_;
  std::vector<std::uint8_t> parked_;
  bool parked_valid_ = false;
};

bool write_all(int fd, std::span<const std::uint8_t> bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// One client connection as the session's ClientChannel: sends server-to-client requests
// and, while waiting for the reply, serves the client's commands.
//
// Why serve them at once: QEMU answers DMA_READ/DMA_WRITE in a bottom half under its
// big lock, while a vCPU waiting for the reply to a register read holds that lock — so
// if the device waited for its DMA reply before answering the read, both sides would
// wait for each other until a timeout (seen with a Linux guest on unshared RAM). Register
// accesses, IRQ and info commands therefore run nested, in arrival order; the device
// core defers queue notifications that arrive meanwhile (virtio/device_core.h), so the
// device itself is never reentered. Commands that change the memory or the device under
// the waiting access — DMA_MAP, DMA_UNMAP (which would wait for the very snapshot the
// access holds), DEVICE_RESET, VERSION — are queued for the serve loop to run after the
// current one, in order.
class Connection final : public ClientChannel {
 public:
  struct Queued {
    std::vector<std::uint8_t> bytes;
    std::vector<UniqueFd> fds;
    bool fds_truncated = false;
  };
  // A client flooding commands while we wait is cut off rather than buffered without
  // bound: generous for posted doorbell writes, far below memory trouble.
  static constexpr std::size_t kMaxQueuedMessages = 4096;
  static constexpr std::size_t kMaxQueuedBytes = 8u << 20;
  // msg_ids of requests that timed out, whose late replies are dropped.
  static constexpr std::size_t kAbandonedKept = 64;

  // Runs one command nested inside an exchange; false: close the connection.
  using NestedHandler =
      std::function<bool(std::span<const std::uint8_t> message, std::vector<UniqueFd>& fds,
                         bool fds_truncated)>;

  Connection(int fd, std::chrono::milliseconds timeout, const VfioUserServer::TraceSink& trace)
      : fd_(fd), timeout_(timeout), trace_(trace) {}
  void set_nested_handler(NestedHandler handler) { nested_ = std::move(handler); }

  MessageReader& reader() { return reader_; }
  std::deque<Queued>& queue() { return queue_; }
  [[nodiscard]] bool abandoned(std::uint16_t msg_id) const {
    return std::find(abandoned_.begin(), abandoned_.end(), msg_id) != abandoned_.end();
  }

  Outcome exchange(std::span<const std::uint8_t> request, std::uint16_t msg_id,
                   std::vector<std::uint8_t>& reply, std::size_t& reply_fds,
                   std::string& detail) override {
    if (trace_) trace_("server " + describe_request(request, 0));
    if (!write_all(fd_, request)) {
      detail = "sending the request failed";
      return Outcome::kLost;
    }
    const auto deadline = MessageReader::Clock::now() + timeout_;
    std::vector<UniqueFd> fds;
    while (true) {
      reader_.detach_current();
      std::span<const std::uint8_t> message;
      bool fds_truncated = false;
      switch (reader_.next(fd_, message, fds, fds_truncated, deadline)) {
        case MessageReader::Status::kMessage: break;
        case MessageReader::Status::kTimedOut:
          if (abandoned_.size() == kAbandonedKept) abandoned_.pop_front();
          abandoned_.push_back(msg_id);
          if (trace_) trace_(fmt::format("no reply to server request #{} in time", msg_id));
          return Outcome::kTimedOut;
        case MessageReader::Status::kTooLarge:
          detail = "broken framing while waiting for a reply";
          return Outcome::kLost;
        case MessageReader::Status::kClosed:
          detail = "the client closed the connection while a reply was pending";
          return Outcome::kLost;
      }
      const vfio_user::Header header = vfio_user::decode_header(message);
      if ((header.flags & vfio_user::kFlagTypeMask) == vfio_user::kTypeReply) {
        if (header.msg_id == msg_id) {
          if (trace_) trace_("client " + describe_reply(message, {}));
          reply.assign(message.begin(), message.end());
          reply_fds = fds.size();
          fds.clear();
          reader_.consume_current();
          return Outcome::kReply;
        }
        if (abandoned(header.msg_id)) {
          if (trace_) trace_(fmt::format("dropping a late reply to server request #{}", header.msg_id));
          continue;
        }
        detail = fmt::format("reply with msg_id {} while waiting for {}", header.msg_id, msg_id);
        return Outcome::kLost;
      }
      if (nested_ && !must_wait_for_current(header.command)) {
        if (!nested_(message, fds, fds_truncated)) {
          detail = "the connection ended while a reply was pending";
          return Outcome::kLost;
        }
        fds.clear();
        continue;
      }
      if (queue_.size() >= kMaxQueuedMessages || queued_bytes() + message.size() > kMaxQueuedBytes) {
        detail = fmt::format("more than {} messages or {} bytes sent while a reply was pending",
                             kMaxQueuedMessages, kMaxQueuedBytes);
        return Outcome::kLost;
      }
      queue_.push_back(Queued{std::vector<std::uint8_t>(message.begin(), message.end()),
                              std::move(fds), fds_truncated});
      fds.clear();  // moved-from: make it empty for the next message
    }
  }

 private:
  [[nodiscard]] std::size_t queued_bytes() const {
    std::size_t total = 0;
    for (const Queued& q : queue_) total += q.bytes.size();
    return total;
  }

  // See the class comment.
  static bool must_wait_for_current(std::uint16_t command) {
    return command == vfio_user::kDmaMap || command == vfio_user::kDmaUnmap ||
           command == vfio_user::kDeviceReset || command == vfio_user::kVersion;
  }

  int fd_;
  std::chrono::milliseconds timeout_;
  const VfioUserServer::TraceSink& trace_;
  NestedHandler nested_;
  MessageReader reader_;
  std::deque<Queued> queue_;
  std::deque<std::uint16_t> abandoned_;
};

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

Result<std::unique_ptr<VfioUserServer>> VfioUserServer::create(
    std::string socket_path, pci::Function& function, std::shared_ptr<virtio::GuestMemory> memory) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof(addr.sun_path)) {
    return make_error(ErrorCode::kInvalidArgument, "socket path \"{}\" is empty or longer than {} bytes",
                      socket_path, sizeof(addr.sun_path) - 1);
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
  if (!listener.valid()) return make_error(ErrorCode::kIoError, "socket: {}", std::strerror(errno));
  if (::bind(listener.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return make_error(ErrorCode::kIoError, "bind {}: {}", socket_path, std::strerror(errno));
  }
  // From here on the file is ours: remember which inode it is, so that the destructor
  // removes this socket and never one that replaced it.
  struct stat bound {};
  if (::lstat(socket_path.c_str(), &bound) != 0) {
    return make_error(ErrorCode::kIoError, "stat {}: {}", socket_path, std::strerror(errno));
  }
  const BoundSocket identity{bound.st_dev, bound.st_ino};
  if (::listen(listener.get(), 4) != 0) {
    const int saved = errno;
    remove_if_ours(socket_path, identity);
    return make_error(ErrorCode::kIoError, "listen {}: {}", socket_path, std::strerror(saved));
  }
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC));
  if (!stop.valid()) {
    const int saved = errno;
    remove_if_ours(socket_path, identity);
    return make_error(ErrorCode::kIoError, "eventfd: {}", std::strerror(saved));
  }
  return std::unique_ptr<VfioUserServer>(new VfioUserServer(std::move(socket_path), function,
                                                            std::move(memory), std::move(listener),
                                                            std::move(stop), identity));
}

VfioUserServer::VfioUserServer(std::string socket_path, pci::Function& function,
                               std::shared_ptr<virtio::GuestMemory> memory, UniqueFd listener,
                               UniqueFd stop, BoundSocket bound)
    : socket_path_(std::move(socket_path)),
      function_(function),
      memory_(std::move(memory)),
      listener_(std::move(listener)),
      stop_event_(std::move(stop)),
      bound_(bound) {}

VfioUserServer::~VfioUserServer() {
  stop();
  const DirectoryLock directory_lock(socket_path_);
  remove_if_ours(socket_path_, bound_);
}

void VfioUserServer::start() {
  if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
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
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(stop_event_.get(), &one, sizeof(one));
  thread_.join();
}

void VfioUserServer::run() {
  while (true) {
    if (wait_readable(listener_.get(), stop_event_.get()) != ReadStatus::kOk) return;
    UniqueFd connection(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!connection.valid()) continue;  // the client gave up before we accepted
    {
      const std::lock_guard lock(connection_mutex_);
      if (stopping_) return;
      connection_ = connection.get();
    }
    serve(connection.get());
    {
      const std::lock_guard lock(connection_mutex_);
      connection_ = -1;
      connection.reset();
    }
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
  // The channel outlives the session (the session stops using it in its destructor).
  Connection channel(connection, dma_timeout_, trace_);
  VfioUserSession session(function_, memory_, socket_path_);
  session.set_client_channel(&channel);
  struct CountInterrupts {
    std::atomic<std::uint64_t>& interrupts;
    std::atomic<std::uint64_t>& dma_requests;
    const VfioUserSession& session;
    ~CountInterrupts() {
      interrupts.fetch_add(session.interrupts_signalled());
      dma_requests.fetch_add(session.dma_requests_sent());
    }
  } count_interrupts{interrupts_signalled_, dma_requests_sent_, session};
  std::uint64_t reported_errors = 0;
  // Runs one command and sends its reply; false when the connection must end.
  auto handle_one = [&](std::span<const std::uint8_t> message, std::vector<UniqueFd>& fds,
                        bool fds_truncated, std::vector<std::uint8_t>& reply) {
    if (trace_) trace_(describe_request(message, fds.size()));
    Stats::Cell* stats_cell = stats_ ? &stats_->cell(message) : nullptr;
    const auto handling_started = stats_cell != nullptr ? std::chrono::steady_clock::now()
                                                        : std::chrono::steady_clock::time_point{};
    const std::uint64_t errors_before = session.error_count();
    const auto disposition = session.handle(message, fds, fds_truncated, reply);
    if (session.error_count() != reported_errors) {
      protocol_errors_.fetch_add(session.error_count() - reported_errors);
      reported_errors = session.error_count();
    }
    if (trace_) {
      if (disposition == VfioUserSession::Disposition::kReply) {
        trace_(describe_reply(reply, session.last_error()));
      } else if (session.error_count() != errors_before) {
        trace_("-> (no reply sent) error: " + session.last_error());
      }
      if (disposition == VfioUserSession::Disposition::kClose) trace_("closing: " + session.last_error());
    }
    const bool sent =
        disposition != VfioUserSession::Disposition::kReply || write_all(connection, reply);
    if (stats_cell != nullptr) {
      const auto spent = std::chrono::steady_clock::now() - handling_started;
      stats_cell->messages.fetch_add(1, std::memory_order_relaxed);
      stats_cell->nanoseconds.fetch_add(
          static_cast<std::uint64_t>(
              std::chrono::duration_cast<std::chrono::nanoseconds>(spent).count()),
          std::memory_order_relaxed);
    }
    return disposition != VfioUserSession::Disposition::kClose && sent;
  };
  // Commands served while the device waits for a DMA reply (Connection) reply from
  // their own buffer: the outer command's reply is still being built.
  std::vector<std::uint8_t> nested_reply;
  channel.set_nested_handler([&](std::span<const std::uint8_t> message, std::vector<UniqueFd>& fds,
                                 bool fds_truncated) {
    return handle_one(message, fds, fds_truncated, nested_reply);
  });
  MessageReader& reader = channel.reader();
  std::vector<UniqueFd> fds;
  std::vector<std::uint8_t> reply;
  Connection::Queued current;
  while (true) {
    reader.release_parked();
    std::span<const std::uint8_t> message;
    bool fds_truncated = false;
    if (!channel.queue().empty()) {
      // Commands that arrived while a DMA reply was awaited, in arrival order.
      current = std::move(channel.queue().front());
      channel.queue().pop_front();
      message = current.bytes;
      fds = std::move(current.fds);
      fds_truncated = current.fds_truncated;
    } else {
      switch (reader.next(connection, message, fds, fds_truncated)) {
        case MessageReader::Status::kMessage: break;
        case MessageReader::Status::kTooLarge: protocol_errors_.fetch_add(1); return;
        case MessageReader::Status::kTimedOut:  // no deadline here
        case MessageReader::Status::kClosed: return;  // the session's destructor cleans up
      }
      const vfio_user::Header header = vfio_user::decode_header(message);
      if ((header.flags & vfio_user::kFlagTypeMask) == vfio_user::kTypeReply &&
          channel.abandoned(header.msg_id)) {
        // A DMA reply that came after its request timed out (session.h).
        if (trace_) trace_(fmt::format("dropping a late reply to server request #{}", header.msg_id));
        continue;
      }
    }
    if (!handle_one(message, fds, fds_truncated, reply)) return;
    // A rare large REGION_READ grew the reply buffer; do not keep that per connection.
    if (reply.capacity() > 64 * 1024) {
      reply.clear();
      reply.shrink_to_fit();
    }
  }
}

}  // namespace vpci::server
