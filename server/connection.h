// Connection: one vfio-user client connection as the session's ClientChannel
// (server/message_dma.h), with its MessageReader. See the class comment for how commands
// that arrive while a DMA reply is awaited are served.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <sys/socket.h>

#include "server/message_dma.h"
#include "server/message_reader.h"
#include "server/protocol.h"
#include "server/trace.h"
#include "server/unique_fd.h"

namespace vpci::server {

// Writes all of `bytes` to the socket (blocking); false if the peer is gone.
inline bool write_all(int fd, std::span<const std::uint8_t> bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// Writes all of `bytes` like write_all, passing `pass_fd` (>= 0) with the first byte
// (SCM_RIGHTS): the peer receives it with the message that starts there.
inline bool write_all_with_fd(int fd, std::span<const std::uint8_t> bytes, int pass_fd) {
  if (pass_fd < 0 || bytes.empty()) return write_all(fd, bytes);
  iovec iov{const_cast<std::uint8_t*>(bytes.data()), bytes.size()};
  alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int))> control{};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cmsg), &pass_fd, sizeof(int));
  ssize_t n = 0;
  do {
    n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return false;
  return write_all(fd, bytes.subspan(static_cast<std::size_t>(n)));
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
  using TraceLineSink = std::function<void(const std::string& line)>;
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
  // Exchanges in progress at once (each served command may need DMA of its own); beyond
  // this, commands are queued until the innermost finishes.
  static constexpr std::size_t kMaxNesting = 4;

  // Runs one command nested inside an exchange; false: close the connection.
  using NestedHandler = std::function<bool(std::span<const std::uint8_t> message,
                                           std::vector<UniqueFd>& fds, bool fds_truncated)>;

  Connection(int fd, std::chrono::milliseconds timeout, const TraceLineSink& trace)
      : fd_(fd), timeout_(timeout), trace_(trace) {}
  void set_nested_handler(NestedHandler handler) { nested_ = std::move(handler); }
  // Called when an exchange ends: it may have left commands queued or whole messages
  // buffered that the socket will not report readable again, so the owner must serve
  // them (an exchange can run outside the connection's own callback: device work that
  // the loop deferred).
  void set_exchange_done_hook(std::function<void()> hook) { exchange_done_ = std::move(hook); }

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
    // A command served while we wait may need DMA itself: exchanges nest, and a reply
    // for an outer one that arrives meanwhile is kept for it.
    waiting_.push_back(msg_id);
    struct PopWaiting {
      std::vector<std::uint16_t>& waiting;
      const std::function<void()>& done;
      ~PopWaiting() {
        waiting.pop_back();
        if (waiting.empty() && done) done();
      }
    } pop_waiting{waiting_, exchange_done_};
    const auto deadline = MessageReader::Clock::now() + timeout_;
    std::vector<UniqueFd> fds;
    while (true) {
      if (auto kept = stashed_.find(msg_id); kept != stashed_.end()) {
        reply = std::move(kept->second.bytes);
        reply_fds = kept->second.fds;
        stashed_.erase(kept);
        return Outcome::kReply;
      }
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
        if (std::find(waiting_.begin(), waiting_.end(), header.msg_id) != waiting_.end()) {
          if (trace_) trace_("client " + describe_reply(message, {}));
          stashed_[header.msg_id] =
              Stashed{std::vector<std::uint8_t>(message.begin(), message.end()), fds.size()};
          fds.clear();
          reader_.consume_current();
          continue;
        }
        if (abandoned(header.msg_id)) {
          if (trace_)
            trace_(fmt::format("dropping a late reply to server request #{}", header.msg_id));
          continue;
        }
        detail = fmt::format("reply with msg_id {} while waiting for {}", header.msg_id, msg_id);
        return Outcome::kLost;
      }
      if (nested_ && !must_wait_for_current(header.command) && waiting_.size() <= kMaxNesting) {
        // Copied out so that reading on (a nested exchange) cannot move it under the
        // handler.
        std::vector<std::uint8_t> command(message.begin(), message.end());
        reader_.consume_current();
        if (!nested_(command, fds, fds_truncated)) {
          detail = "the connection ended while a reply was pending";
          return Outcome::kLost;
        }
        fds.clear();
        continue;
      }
      if (queue_.size() >= kMaxQueuedMessages ||
          queued_bytes() + message.size() > kMaxQueuedBytes) {
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
  const TraceLineSink& trace_;
  NestedHandler nested_;
  std::function<void()> exchange_done_;
  struct Stashed {
    std::vector<std::uint8_t> bytes;
    std::size_t fds = 0;  // closed on arrival
  };
  std::vector<std::uint16_t> waiting_;        // exchanges in progress, outermost first
  std::map<std::uint16_t, Stashed> stashed_;  // replies that came for an outer one
  MessageReader reader_;
  std::deque<Queued> queue_;
  std::deque<std::uint16_t> abandoned_;
};

}  // namespace vpci::server
