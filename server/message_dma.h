// Message-based DMA (spec "VFIO_USER_DMA_READ", "VFIO_USER_DMA_WRITE"): how the device
// reaches guest memory the client mapped without an fd. Every region such a map creates
// in the device's `virtio::GuestMemory` points here (server/dma_maps.h), so ring reads
// and buffer copies take the same bounds-checked path as mapped memory, one round trip
// per piece.
//
//   * Only on the server thread, while it serves a connection: the exchange blocks that
//     thread until the client answers (or the timeout fails the access). Commands the
//     client sends meanwhile are served by the channel — register accesses at once (and
//     they may need DMA of their own: exchanges nest, replies for outer ones are kept),
//     maps, unmaps and resets after the current command (server/connection.h says why) —
//     and the device core defers notifications, so the device is never reentered.
//     Elsewhere an access fails (kUnsupported).
//   * The request and reply buffers are shared by nested exchanges: an outer request is
//     sent before anything nests, and an inner exchange has parsed its reply before the
//     outer one resumes.
//   * msg_ids are our own counter; one request is outstanding at a time; pieces are at
//     most min(client's max_data_xfer_size from VERSION, our 1 MiB).
//   * Layouts (reference §7): the spec and libvfio-user use {u64 address, u64 count,
//     data@16}, QEMU {u64 address, u32 count, data@12}. A DMA_READ reply for N bytes at
//     A is accepted iff it echoes A in its first u64 and either is 16 + N bytes with u64
//     count N, or is 12 + N bytes with u32 count N — the sizes differ by 4, so at most
//     one rule matches. The layout seen is remembered; a DMA_WRITE is sent in it, and
//     before the first DMA_WRITE of a connection whose layout is still unknown we probe
//     with a 1-byte DMA_READ of the target (maps are always readable) because QEMU would
//     take spec-layout data 4 bytes early. A DMA_WRITE reply may be header-only (QEMU),
//     or echo the address with a u32 (12 bytes) or u64 (16 bytes) count.
//   * Failure: an error-flag reply, a malformed reply (size, command, echo, fds) or no
//     reply before the channel's timeout fails the access with kIoError (the device sees
//     an error: its queue goes to NEEDS_RESET) and the connection continues; a late reply
//     to a timed-out request is dropped by the channel. A reply nobody asked for, a
//     broken connection or a flood while waiting marks the channel lost: the session
//     closes the connection after the current command.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "base/error.h"
#include "server/protocol.h"
#include "virtio/guest_memory.h"

namespace vpci::server {

// The connection half message DMA needs for server-to-client requests.
class ClientChannel {
 public:
  enum class Outcome {
    kReply,     // `reply` holds the whole reply message with `msg_id` (size checked)
    kTimedOut,  // no reply in time; the channel drops the reply if it comes later
    kLost,      // the connection is unusable (closed, broken framing, unsolicited
                // reply, too much queued); `detail` says why
  };
  // Sends `request` (one whole command message) and waits for the reply with `msg_id`.
  // Commands arriving meanwhile are queued for after the current one. `reply_fds` is
  // the number of fds that came with the reply (they are closed).
  virtual Outcome exchange(std::span<const std::uint8_t> request, std::uint16_t msg_id,
                           std::vector<std::uint8_t>& reply, std::size_t& reply_fds,
                           std::string& detail) = 0;

 protected:
  ~ClientChannel() = default;
};

class MessageDma final : public virtio::MessageMemory {
 public:
  // Called once, at the first access that actually goes over the socket: memory the
  // device uses is not shared, which costs a round trip per access (a notice for the
  // user, server/session.h).
  using FirstUseHook = std::function<void(std::uint64_t address)>;

  MessageDma() = default;

  // Enables the path through `channel` for accesses on the calling thread; nullptr
  // disables it (the connection is gone; regions may outlive it in snapshots).
  void attach(ClientChannel* channel);
  void set_first_use_hook(FirstUseHook hook) { first_use_ = std::move(hook); }
  // The client's max_data_xfer_size from VERSION.
  void set_client_max_transfer(std::uint64_t bytes) { client_max_transfer_ = bytes; }

  Status read(virtio::GuestAddress address, std::span<std::uint8_t> out) override;
  Status write(virtio::GuestAddress address, std::span<const std::uint8_t> data) override;

  // The connection cannot be used any more; close it after the current command.
  [[nodiscard]] bool lost() const { return lost_; }
  [[nodiscard]] std::uint64_t requests_sent() const { return requests_sent_; }
  // Protocol errors (malformed or missing replies) so far, and the latest one's text.
  [[nodiscard]] std::uint64_t error_count() const { return error_count_; }
  [[nodiscard]] const std::string& last_error() const { return last_error_; }

 private:
  using Payload = std::span<const std::uint8_t>;
  enum class Layout { kUnknown, kSpec, kQemu };

  Status check_usable();
  Status read_transfer(std::uint64_t address, std::span<std::uint8_t> data);
  Status write_transfer(std::uint64_t address, std::span<const std::uint8_t> data);
  // Sends request_ (header filled here) and checks the reply's framing; the result views
  // the reply payload in reply_.
  Result<Payload> exchange(std::uint16_t command);
  Error protocol_error(Error error);
  [[nodiscard]] std::size_t piece_size() const;

  ClientChannel* channel_ = nullptr;
  std::thread::id channel_thread_;
  FirstUseHook first_use_;
  bool used_ = false;
  bool lost_ = false;
  Layout layout_ = Layout::kUnknown;
  std::uint64_t client_max_transfer_ = vfio_user::kMaxDataXferSize;  // spec default 1 MiB
  std::uint16_t next_msg_id_ = 1;
  std::uint64_t requests_sent_ = 0;
  std::uint64_t error_count_ = 0;
  std::string last_error_;
  std::vector<std::uint8_t> request_;
  std::vector<std::uint8_t> reply_;
};

}  // namespace vpci::server
