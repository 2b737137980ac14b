// The vfio-user message dispatcher for one client connection, independent of sockets:
// whole messages (bytes + received fds) in, reply bytes out. `VfioUserServer`
// (socket_server.h) feeds it from an AF_UNIX socket; tests and the fuzzer feed it
// directly.
//
// Rules it enforces (spec = qemu/qemu docs/interop/vfio-user.rst, v0.9.x):
//   * VERSION comes first; any other command before it gets an EINVAL error reply.
//   * Every length, offset, index and fd count is checked before use; a bad request
//     gets an error reply (header only, positive errno, spec "Header") and the
//     connection continues. A message that cannot be framed (size field disagrees
//     with the bytes, or the peer sends a reply although this server never sends
//     commands) asks the caller to close the connection.
//   * fds are accepted only on DMA_MAP (0 or 1) and SET_IRQS with DATA_EVENTFD; fds
//     anywhere else, or on a request that fails, are closed (they are UniqueFds).
//   * A command with NO_REPLY never gets a reply, not even an error (reference §7).
//   * DMA_READ/DMA_WRITE are server-to-client commands: a client that sends them gets
//     ENOTSUP. REGION_WRITE_MULTI, DEVICE_FEATURE, migration and unknown commands get
//     ENOTSUP too; write_multiple and migration are not advertised.
//
// Message-based DMA (maps without an fd). When the function calls GuestMemory::read/
// write on an fd-less map, the session sends DMA_READ/DMA_WRITE through its
// `ClientChannel` (the socket server's connection) and waits for the reply:
//   * msg_ids are the server's own counter; one request is outstanding at a time;
//     pieces are at most min(client's max_data_xfer_size from VERSION, our 1 MiB).
//   * Layouts (reference §7): the spec and libvfio-user use {u64 address, u64 count,
//     data@16}, QEMU {u64 address, u32 count, data@12}. A DMA_READ reply for N bytes at
//     A is accepted iff it echoes A in its first u64 and either is 16 + N bytes with u64
//     count N, or is 12 + N bytes with u32 count N — the sizes differ by 4, so at most
//     one rule matches. The layout seen is remembered; a DMA_WRITE is sent in it, and
//     before the first DMA_WRITE of a connection whose layout is still unknown the
//     session probes with a 1-byte DMA_READ of the target (maps are always readable)
//     because QEMU would take spec-layout data 4 bytes early. A DMA_WRITE reply may be
//     header-only (QEMU), or echo the address with a u32 (12 bytes) or u64 (16 bytes)
//     count.
//   * Failure: an error-flag reply, a malformed reply (size, command, echo, fds) or no
//     reply before the channel's timeout fails the access with kIoError (the device
//     sees an error) and the connection continues; a late reply to a timed-out request
//     is dropped by the channel. A reply nobody asked for, a broken connection or a
//     flood while waiting ends the connection after the current command.
//   * The channel queues commands that arrive while it waits; they run after the
//     current command, in order (the function is never reentered).
//   * GET_REGION_IO_FDS succeeds with zero fds: no ioeventfds, notifications arrive as
//     (posted) REGION_WRITEs.
// The server never sends fds: no region is mmappable and there is no twin socket.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "base/error.h"
#include "server/guest_memory.h"
#include "server/pci_function.h"
#include "server/protocol.h"
#include "server/unique_fd.h"

namespace vpci::server {

struct IncomingMessage {
  std::vector<std::uint8_t> bytes;  // header + payload; bytes.size() is what was received
  std::vector<UniqueFd> fds;        // SCM_RIGHTS fds that arrived with it, in order
  bool fds_truncated = false;       // the peer sent more fds than the server accepts
};

struct DispatchResult {
  std::optional<std::vector<std::uint8_t>> reply;  // nothing for NO_REPLY
  bool close_connection = false;
};

// Eventfds installed with SET_IRQS, and mask state, for every IRQ index of a function.
class IrqEventfds final : public InterruptTrigger {
 public:
  explicit IrqEventfds(const PciFunction& function);
  bool trigger(unsigned irq_index, unsigned vector) override;

  // Assigns fds[i] to vector start + i; an empty `fds` de-assigns the range.
  void assign(unsigned irq_index, std::uint32_t start, std::vector<UniqueFd> fds);
  void disable(unsigned irq_index);
  void set_masked(unsigned irq_index, std::uint32_t vector, bool masked);
  [[nodiscard]] bool has_eventfd(unsigned irq_index, std::uint32_t vector) const;
  [[nodiscard]] bool masked(unsigned irq_index, std::uint32_t vector) const;
  void clear();
  // Eventfd writes so far (interrupts delivered to the client), for profiling.
  [[nodiscard]] std::uint64_t signalled() const { return signalled_.load(std::memory_order_relaxed); }

 private:
  struct Vector {
    UniqueFd eventfd;
    bool masked = false;
    bool pending = false;
  };
  bool signal_locked(unsigned irq_index, Vector& vector);

  mutable std::mutex mutex_;  // trigger() may come from device worker threads
  std::vector<std::vector<Vector>> vectors_;  // [irq_index][vector]
  std::atomic<std::uint64_t> signalled_{0};
};

// The connection half the session needs for server-to-client requests.
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

class VfioUserSession final : private MessageDma {
 public:
  // Starts serving `function` to a newly connected client: calls `connected()`.
  explicit VfioUserSession(PciFunction& function);
  VfioUserSession(const VfioUserSession&) = delete;
  VfioUserSession& operator=(const VfioUserSession&) = delete;
  // The client is gone: resets the function, tells it about every DMA region going
  // away, unmaps them, closes all eventfds and calls `disconnected()`.
  ~VfioUserSession();

  DispatchResult handle(IncomingMessage message);

  // The same without allocating per message, for the socket server: `bytes` is one
  // whole message, `fds` the descriptors that came with it (taken or closed before
  // returning). The reply, if any, is written to `reply` (its capacity is reused).
  enum class Disposition { kReply, kNoReply, kClose };
  Disposition handle(std::span<const std::uint8_t> bytes, std::vector<UniqueFd>& fds,
                     bool fds_truncated, std::vector<std::uint8_t>& reply);

  // Enables message-based DMA through `channel` (which must outlive the session) for
  // calls made on the calling thread, which must be the one calling handle().
  void set_client_channel(ClientChannel* channel);

  [[nodiscard]] bool negotiated() const { return negotiated_; }
  // DMA_READ/DMA_WRITE requests sent to the client (tests).
  [[nodiscard]] std::uint64_t dma_requests_sent() const { return dma_requests_sent_; }
  [[nodiscard]] const DmaMappings& memory() const { return memory_; }
  [[nodiscard]] IrqEventfds& interrupts() { return irqs_; }
  [[nodiscard]] std::uint64_t interrupts_signalled() const { return irqs_.signalled(); }
  // The reason for the most recent error reply or close, for logs and tests.
  [[nodiscard]] const std::string& last_error() const { return last_error_; }
  [[nodiscard]] std::uint64_t error_count() const { return error_count_; }

 private:
  using Payload = std::span<const std::uint8_t>;
  using Reply = Result<std::vector<std::uint8_t>>;  // reply payload (after the header)

  Status dispatch_into(const vfio_user::Header& header, Payload payload, std::vector<UniqueFd>& fds,
                       std::vector<std::uint8_t>& out);
  Reply dispatch(const vfio_user::Header& header, Payload payload, std::vector<UniqueFd>& fds);
  Reply handle_version(Payload payload);
  Reply handle_dma_map(Payload payload, std::vector<UniqueFd>& fds);
  Reply handle_dma_unmap(Payload payload);
  Reply handle_device_get_info(Payload payload);
  Reply handle_region_info(Payload payload);
  Reply handle_region_io_fds(Payload payload);
  Reply handle_irq_info(Payload payload);
  Reply handle_set_irqs(Payload payload, std::vector<UniqueFd>& fds);
  Status handle_region_read(Payload payload, std::vector<std::uint8_t>& out);
  Status handle_region_write(Payload payload, std::vector<std::uint8_t>& out);
  Reply handle_device_reset(Payload payload);
  Result<RegionInfo> checked_region_access(std::uint32_t region, std::uint64_t offset,
                                           std::uint32_t count, bool write) const;

  // MessageDma (guest_memory.h): one fd-less map piece, split into transfers.
  Status dma_read(std::uint64_t iova, std::span<std::uint8_t> data) override;
  Status dma_write(std::uint64_t iova, std::span<const std::uint8_t> data) override;
  Status check_message_dma() const;
  Status dma_read_transfer(std::uint64_t iova, std::span<std::uint8_t> data);
  Status dma_write_transfer(std::uint64_t iova, std::span<const std::uint8_t> data);
  // Sends dma_request_ (header filled here) and checks the reply's framing; the
  // result views the reply payload in dma_reply_.
  Result<Payload> dma_exchange(std::uint16_t command);
  Error dma_protocol_error(Error error);

  enum class DmaLayout { kUnknown, kSpec, kQemu };

  PciFunction& function_;
  DmaMappings memory_;
  ClientChannel* channel_ = nullptr;
  std::thread::id channel_thread_;
  bool channel_lost_ = false;
  bool in_dma_exchange_ = false;
  DmaLayout dma_layout_ = DmaLayout::kUnknown;
  std::uint64_t client_max_data_xfer_ = vfio_user::kMaxDataXferSize;  // spec default 1 MiB
  std::uint16_t next_dma_msg_id_ = 1;
  std::uint64_t dma_requests_sent_ = 0;
  std::vector<std::uint8_t> dma_request_;
  std::vector<std::uint8_t> dma_reply_;
  IrqEventfds irqs_;
  bool negotiated_ = false;
  std::string last_error_;
  std::uint64_t error_count_ = 0;
};

// The errno an error reply carries for `code` (spec "Header": always positive).
int errno_for(ErrorCode code);

}  // namespace vpci::server
