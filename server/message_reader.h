// MessageReader: the receiving half of one vfio-user connection (see the class comment).
#pragma once

#include <poll.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

#include <sys/socket.h>

#include "server/protocol.h"
#include "server/unique_fd.h"

namespace vpci::server {

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
  // A whole message is buffered beyond the one last returned: next() returns it
  // without reading the socket (an event loop must drain these before waiting, since
  // the socket will not report them readable again).
  [[nodiscard]] bool has_buffered_message() const {
    const std::size_t begin = begin_ + pending_consume_;
    if (end_ - begin < vfio_user::kHeaderSize) return false;
    const vfio_user::Header header = vfio_user::decode_header(
        std::span<const std::uint8_t>(buffer_.data() + begin, vfio_user::kHeaderSize));
    // A malformed size is "buffered" too: next() reports it at once.
    return header.message_size < vfio_user::kHeaderSize ||
           header.message_size > vfio_user::kMaxMessageSize || end_ - begin >= header.message_size;
  }

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
      ReceivedFds received{stream_offset_ + (end_ - begin_) + (n > 0 ? n - 1 : 0),
                           {},
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

}  // namespace vpci::server
