#include "server/socket_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
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
class MessageReader {
 public:
  enum class Status { kMessage, kClosed, kTooLarge };

  // Blocks until one whole message is buffered; `message` then views it (valid until
  // the next call) and `fds` holds the descriptors that belong to it.
  Status next(int fd, std::span<const std::uint8_t>& message, std::vector<UniqueFd>& fds,
              bool& fds_truncated) {
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
      if (!receive(fd)) return Status::kClosed;  // EOF (maybe mid-message) or an error
    }
  }

 private:
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

}  // namespace

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
  VfioUserSession session(function_);
  std::uint64_t reported_errors = 0;
  MessageReader reader;
  std::vector<UniqueFd> fds;
  std::vector<std::uint8_t> reply;
  while (true) {
    std::span<const std::uint8_t> message;
    bool fds_truncated = false;
    switch (reader.next(connection, message, fds, fds_truncated)) {
      case MessageReader::Status::kMessage: break;
      case MessageReader::Status::kTooLarge: protocol_errors_.fetch_add(1); return;
      case MessageReader::Status::kClosed: return;  // the session's destructor cleans up
    }
    if (trace_) trace_(describe_request(message, fds.size()));
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
    if (disposition == VfioUserSession::Disposition::kClose) return;
    if (disposition == VfioUserSession::Disposition::kReply && !write_all(connection, reply)) return;
    // A rare large REGION_READ grew the reply buffer; do not keep that per connection.
    if (reply.capacity() > 64 * 1024) {
      reply.clear();
      reply.shrink_to_fit();
    }
  }
}

}  // namespace vpci::server
